"""The engine under torchrun (2 gloo processes on CPU) and after a real SIGKILL (slow: each starts Python processes).

- DDP: 2 processes × batch B finish, write one checkpoint, and end with the weights of 1 process × batch 2B.
- Kill: a run killed with SIGKILL mid-training resumes (`--resume`) to bit-identical weights.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.test_train_fixtures import write_jsonl, write_tokenizer
from training.config import dumps, load_config
from training.engine import checkpoints, load_checkpoint, train

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # the same as the subprocesses (OMP_NUM_THREADS=1): identical float reductions
    yield
    torch.set_num_threads(n)


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PHOTOSEARCH_CACHE=str(tmp_path / "cache"), HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _config(tmp_path: Path, out: Path, *overrides: str):
    jsonl = tmp_path / "data" / "captions.jsonl"
    if not jsonl.is_file():
        write_jsonl(jsonl.parent)
        write_tokenizer(tmp_path / "tok")
    return load_config(None, ["model.preset=tiny-vit", f"model.tokenizer={tmp_path / 'tok'}",
                              f"data.annotations={jsonl}", f"data.images={jsonl.parent / 'images'}",
                              "data.eval_fraction=0.25", f"data.cache_dir={tmp_path / 'cache'}", "optim.lr=1e-2",
                              "output.report=false", f"output.dir={out}", *overrides])


def _same_weights(a: Path, b: Path, exact: bool) -> None:
    sa, sb = load_checkpoint(checkpoints(a)[-1])["model"], load_checkpoint(checkpoints(b)[-1])["model"]
    assert sa.keys() == sb.keys()
    for k in sa:
        if exact:
            assert torch.equal(sa[k], sb[k]), k
        else:
            torch.testing.assert_close(sa[k], sb[k], atol=1e-5, rtol=1e-4, msg=k)


def test_torchrun_two_processes_equal_one_process_with_twice_the_batch(tmp_path):
    out = tmp_path / "ddp"
    cfg = _config(tmp_path, out, "train.mode=heads", "data.batch_size=6", "train.epochs=2", "data.views=2",
                  "train.keep_checkpoints=1")
    (tmp_path / "ddp.toml").write_text(dumps(cfg, "toml"))
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc_per_node", "2",
         "-m", "training", "train", "--config", str(tmp_path / "ddp.toml")],
        cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=400, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["global_batch"] == 12 and summary["finished"]
    assert summary["steps"] == 6  # 36 training photos: 18 per process, 3 batches of 6 per epoch
    (ck,) = checkpoints(out)  # one checkpoint kept (train.keep_checkpoints = 1)
    state = load_checkpoint(ck)
    assert state["world_size"] == 2 and len(state["rng"]) == 2 and state["step"] == 6
    print(f"\ntorchrun 2 processes: {time.perf_counter() - t0:.1f}s")
    # one process, batch 12: the same sample order, losses over the same 12 pairs, hence the same weights
    single = _config(tmp_path, tmp_path / "single", "train.mode=heads", "data.batch_size=12", "train.epochs=2",
                     "data.views=2", "output.tensorboard=false")
    assert train(single)["steps"] == 6
    _same_weights(out, tmp_path / "single", exact=False)


def test_sigkilled_run_resumes_to_the_same_weights(tmp_path):
    common = ("train.mode=partial", "train.unfreeze_image_blocks=1", "train.unfreeze_text_blocks=1",
              "data.batch_size=6", "train.epochs=3", "train.save_every_steps=1", "train.keep_checkpoints=100",
              "eval.every=0", "optim.lr=1e-3", "output.tensorboard=false")
    whole = _config(tmp_path, tmp_path / "whole", *common)
    killed = _config(tmp_path, tmp_path / "killed", *common)
    (tmp_path / "killed.toml").write_text(dumps(killed, "toml"))
    train(whole)  # 6 steps per epoch × 3
    proc = subprocess.Popen([sys.executable, "-m", "training", "train", "--config", str(tmp_path / "killed.toml")],
                            cwd=tmp_path, env=_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    try:
        while len(checkpoints(tmp_path / "killed")) < 4:
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    done = load_checkpoint(checkpoints(tmp_path / "killed")[-1])["step"]
    assert done < 18 and not (tmp_path / "killed" / "summary.json").exists()  # killed mid-training
    summary = train(killed, resume=True)
    assert summary["finished"] and summary["steps"] == 18
    _same_weights(tmp_path / "whole", tmp_path / "killed", exact=True)
