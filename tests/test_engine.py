"""The training engine: configs, recipes end to end on tiny presets, resumable checkpoints, export into the app.

Every run here is real training on CPU with tiny random-init towers and small photo sets written in tmp_path.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.test_train_fixtures import (
    write_class_folder,
    write_jsonl,
    write_karpathy,
    write_sidecar,
    write_tiny_hf,
    write_tokenizer,
)
from training.config import (
    ConfigError,
    TrainConfig,
    apply_overrides,
    dumps,
    load_config,
    split_cli_overrides,
    valid_keys,
)
from training.engine import checkpoints, load_checkpoint, train

RECIPES = Path(__file__).resolve().parents[1] / "training" / "recipes"


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from more threads, and on a busy 2-core machine OpenMP's spinning threads make a
    step 10–100× slower; restore the setting afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("traindata")
    return {
        "tok": write_tokenizer(root / "tok"),
        "jsonl": write_jsonl(root / "jsonl"),
        "sidecar": write_sidecar(root / "sidecar"),
        "karpathy": write_karpathy(root / "karpathy"),
        "classes": write_class_folder(root / "classes"),
        "clip": write_tiny_hf(root / "tiny-clip", "clip"),
        "cache": root / "cache",
    }


def tiny(recipe: str, data: dict[str, Path], out: Path, *overrides: str) -> TrainConfig:
    """A recipe with its model switched to a tiny preset and its data to the local fixture of the same layout."""
    return load_config(RECIPES / recipe, [f"output.dir={out}", f"data.cache_dir={data['cache']}", "data.num_workers=0",
                                          *overrides])


# -- config -----------------------------------------------------------------------------------------------------
def test_config_files_overrides_and_errors(tmp_path):
    (tmp_path / "a.toml").write_text('[optim]\nlr = 1e-3\n[train]\nepochs = 3\nmode = "partial"\n')
    (tmp_path / "a.yaml").write_text("optim:\n  lr: 0.001\ntrain:\n  epochs: 3\n  mode: partial\n")
    a, b = load_config(tmp_path / "a.toml"), load_config(tmp_path / "a.yaml")
    assert a == b and a.optim.lr == 1e-3 and a.train.mode == "partial" and a.data.batch_size == 64
    over = split_cli_overrides(["--set", "optim.lr=1e-4", "data.batch_size=8", "--train.epochs", "5",
                                "--train.grad_checkpointing=yes", "--eval.templates", "a {},the {}",
                                "--model.image_kwargs", "{img_size: 32}"])
    c = apply_overrides(a, over)
    assert (c.optim.lr, c.data.batch_size, c.train.epochs, c.train.grad_checkpointing) == (1e-4, 8, 5, True)
    assert c.eval.templates == ["a {}", "the {}"] and c.model.image_kwargs == {"img_size": 32}
    assert a.optim.lr == 1e-3  # overrides never change the original
    with pytest.raises(ConfigError, match=r"unknown key 'optim.lrr' \(did you mean 'optim.lr'\?\).*optim.lr"):
        apply_overrides(a, ["optim.lrr=1"])
    with pytest.raises(ConfigError, match="data.batch_size must be int"):
        apply_overrides(a, ["data.batch_size=eight"])
    with pytest.raises(ConfigError, match="train.mode must be one of"):
        apply_overrides(a, ["train.mode=quick"])
    (tmp_path / "bad.toml").write_text("[optim]\nlearning_rate = 1\n")
    with pytest.raises(ConfigError, match="valid keys in \\[optim\\]: optim.lr, optim.weight_decay"):
        load_config(tmp_path / "bad.toml")
    (tmp_path / "bad2.toml").write_text("[train]\nepochs = 2.5\n")
    with pytest.raises(ConfigError, match="train.epochs must be int, got 2.5"):
        load_config(tmp_path / "bad2.toml")
    # the resolved config round-trips through both formats with every key
    for fmt, suffix in (("toml", ".toml"), ("yaml", ".yaml")):
        path = tmp_path / f"resolved{suffix}"
        path.write_text(dumps(c, fmt))
        assert load_config(path) == c
    assert "optim.lr" in valid_keys() and "output.dir" in valid_keys()


def test_default_and_tiny_presets_unchanged():
    """The shipped model's architecture is what `default_config` builds (additive presets only)."""
    from training.presets import PRESETS, default_config, tiny_config

    shipped = json.loads((Path(__file__).resolve().parents[1] / "resources/models/default/config.json").read_text())
    mine = default_config().to_dict()
    for key in ("embed_dim", "image", "text", "image_head", "text_head"):
        assert json.loads(json.dumps(mine[key])) == shipped[key], key
    assert tiny_config().image.arch == "test_efficientnet" and tiny_config().embed_dim == 32
    assert {"default", "tiny", "tiny-vit", "tiny-resnet", "vit-b-32-scratch"} <= set(PRESETS)
    scratch = PRESETS["vit-b-32-scratch"]()
    assert scratch.image.arch == "vit_base_patch32_224" and scratch.image.weights is None
    assert scratch.text.hf_config["num_hidden_layers"] == 12 and scratch.text.hf_config["hidden_size"] == 512


# -- recipes end to end -------------------------------------------------------------------------------------------
def _check_run(summary: dict, out: Path, metrics: tuple[str, ...] = ("t2i_R@1", "i2t_R@10")) -> None:
    assert summary["finished"]
    losses = summary["epoch_losses"]
    assert len(losses) >= 2 and losses[-1] < losses[0], losses
    for k in metrics:
        assert 0.0 <= summary["metrics"][k] <= 100.0
    assert (out / "config.toml").is_file() and (out / "metrics.jsonl").is_file()
    assert (out / "report" / "README.md").is_file() and (out / "report" / "training.png").stat().st_size > 1000
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/temperature", "train/train_loss"} <= tags
    assert {f"eval/{m}" for m in metrics} <= tags
    assert checkpoints(out)
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert {r["type"] for r in records} == {"train", "epoch"}
    assert all({"loss", "lr", "temperature"} <= set(r) for r in records if r["type"] == "train")


@pytest.mark.slow
def test_recipe_heads_cached(tmp_path, data):
    """Heads on cached features: the towers run once; a second run reuses the memory-mapped cache."""
    out = tmp_path / "run"
    cfg = tiny("heads-cached.toml", data, out, "model.preset=tiny-vit", f"model.tokenizer={data['tok']}",
               "model.init_from=", f"data.annotations={data['sidecar']}", "data.batch_size=12", "data.views=2",
               "train.epochs=5", "optim.lr=1e-2", f"eval.zero_shot={data['classes']}")
    assert cfg.train.mode == "heads" and cfg.data.format == "sidecar"
    summary = train(cfg)
    _check_run(summary, out, ("t2i_R@5", "zero_shot"))
    cached = sorted(p.name.split("-")[0] + "-" + p.name.split("-")[1] for p in data["cache"].iterdir())
    assert "train-images" in cached and "train-captions" in cached and "eval-images" in cached
    feats = next(data["cache"].glob("train-images-*"))
    arr = np.load(feats / "pooled.npy", mmap_mode="r")
    assert arr.shape[:2] == (3, 43) and arr.dtype == np.float16  # 1 clean + 2 views of the 43 training photos
    stamp = (feats / "pooled.npy").stat().st_mtime_ns
    again = train(dataclasses.replace(cfg, output=dataclasses.replace(cfg.output, dir=str(tmp_path / "again"))))
    assert (feats / "pooled.npy").stat().st_mtime_ns == stamp  # reused, not recomputed
    assert again["metrics"] == summary["metrics"]  # same seed, same result


@pytest.mark.slow
def test_recipe_vit_b_32_scratch(tmp_path, data):
    """From scratch (every weight random and trained), gradient accumulation and checkpointing, a DataLoader
    worker, zero-shot accuracy on a class folder."""
    out = tmp_path / "run"
    cfg = tiny("vit-b-32-scratch.toml", data, out, "model.preset=tiny-vit", f"model.tokenizer={data['tok']}",
               f"data.annotations={data['jsonl']}", f"data.images={data['jsonl'].parent / 'images'}",
               "data.eval_fraction=0.25", "data.batch_size=6", "data.num_workers=1", "train.epochs=3",
               "optim.warmup_steps=1", "optim.lr=2e-3", f"eval.zero_shot={data['classes']}", "train.save_every_steps=0")
    assert (cfg.train.mode, cfg.train.grad_accum, cfg.train.grad_checkpointing) == ("scratch", 2, True)
    summary = train(cfg)
    _check_run(summary, out, ("t2i_R@1", "zero_shot"))
    assert summary["global_batch"] == 12 and summary["steps"] == 9  # 36 photos / 6 per batch / 2 accumulated


@pytest.mark.slow
def test_recipe_clip_finetune_coco(tmp_path, data):
    """A Hugging Face CLIP checkpoint fine-tuned on a Karpathy-layout set (train+restval; test evaluated)."""
    out = tmp_path / "run"
    cfg = tiny("clip-finetune-coco.toml", data, out, f"model.preset=hf-clip:{data['clip']}",
               f"data.annotations={data['karpathy']}", f"data.images={data['karpathy'].parent / 'images'}",
               "data.batch_size=8", "train.epochs=3", "optim.lr=1e-3", "train.save_every_steps=1")
    assert (cfg.train.mode, cfg.data.split, cfg.data.eval_split) == ("full", "train+restval", "test")
    summary = train(cfg)
    _check_run(summary, out)
    assert summary["train_photos"] == 33 and summary["eval_photos"] == 11
    ck = load_checkpoint(checkpoints(out)[-1])
    assert ck["mode"] == "full" and "model.logit_scale" in ck["model"]


def test_recipe_default_resolves_to_the_shipped_pipeline():
    """default.toml is `python -m training default` (whose full run has its own slow test): same options, same
    output folders, so it reproduces resources/models/default byte for byte."""
    from training.default_model import REPO, Options
    from training.train import default_pipeline_args

    cfg = load_config(RECIPES / "default.toml")
    assert cfg.kind == "default"
    opts, out, report = default_pipeline_args(cfg.default)
    assert opts == Options()
    assert out == REPO / "resources" / "models" / "default" and report == REPO / "training" / "reports" / "default"
    with pytest.raises(ConfigError, match="kind = 'default'"):
        train(cfg)


def test_every_recipe_is_valid_and_documented():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for path in sorted(RECIPES.glob("*.toml")):
        cfg = load_config(path)  # every key known, every value of the right type
        assert path.read_text().startswith("#") and f"training/recipes/{path.name}" in readme, path.name
        assert cfg.description


# -- resumable, deterministic -------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["heads", "partial"])
def test_interrupted_run_resumes_to_the_same_weights(tmp_path, data, mode):
    """Stopped mid-epoch after a checkpoint (as a kill would leave it), resumed: bit-identical final weights."""
    common = [f"model.tokenizer={data['tok']}", f"data.annotations={data['jsonl']}",
              f"data.images={data['jsonl'].parent / 'images'}", "data.batch_size=8", "train.epochs=2",
              f"train.mode={mode}", "train.unfreeze_image_blocks=1", "train.unfreeze_text_blocks=1", "data.views=2",
              "optim.lr=1e-3", "train.save_every_steps=3", "train.keep_checkpoints=10", "output.report=false",
              "output.tensorboard=false"]
    cfg = load_config(RECIPES / "vit-b-32-scratch.toml", ["model.preset=tiny-vit", "data.num_workers=0",
                                                           "train.grad_accum=1", "data.eval_fraction=0.25",
                                                           f"data.cache_dir={data['cache']}", *common,
                                                           f"output.dir={tmp_path / 'whole'}"])
    whole = train(cfg)
    split = dataclasses.replace(cfg, output=dataclasses.replace(cfg.output, dir=str(tmp_path / "split")))
    first = train(split, stop_after_steps=5)  # 4 steps per epoch: stops in epoch 2, checkpoint at step 5
    assert not first["finished"] and first["steps"] == 5
    with pytest.raises(ConfigError, match="--resume"):
        train(split)
    second = train(split, resume=True)
    assert second["finished"] and second["steps"] == whole["steps"] == 8
    a, b = load_checkpoint(checkpoints(tmp_path / "whole")[-1]), load_checkpoint(checkpoints(tmp_path / "split")[-1])
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert second["metrics"] == whole["metrics"]
    steps = [json.loads(x)["step"] for x in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps)  # the records of the resumed part replace, not duplicate, the lost ones


# -- export into the app ------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_trained_model_is_exported_listed_and_searched(tmp_path, data, monkeypatch, capsys):
    """train (tiny) → `python -m training export` → the app lists it, loads it by name, indexes photos, searches."""
    from photosearch.cli import main as cli
    from photosearch.model import installed_models, load_model
    from training.export import main as export_main

    monkeypatch.setenv("PHOTOSEARCH_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("PHOTOSEARCH_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    cfg = tiny("heads-cached.toml", data, run, "model.preset=tiny-vit", f"model.tokenizer={data['tok']}",
               "model.init_from=", f"data.annotations={data['sidecar']}", "data.batch_size=12", "data.views=2",
               "train.epochs=30", "optim.lr=1e-2", "data.eval_fraction=0", "output.report=false")
    summary = train(cfg)
    assert summary["finished"]
    assert export_main([str(run), "--name", "my-tiny"]) == 0
    assert "exported" in capsys.readouterr().out
    folder = tmp_path / "models" / "my-tiny"
    assert ("my-tiny", folder) in installed_models()
    saved = json.loads((folder / "config.json").read_text())
    assert saved["name"] == "my-tiny" and saved["training"]["mode"] == "heads"
    assert saved["text"]["tokenizer"] == {"kind": "checkpoint", "location": "tokenizer", "path": "", "file": "",
                                          "sha256": "", "key_mapping": "name"}  # the export stands alone
    model = load_model("my-tiny", device="cpu", image_backend="torch")
    # the exported model computes what the trained one did
    from training.models import build_model

    built = build_model(cfg.model, "heads")
    from training.engine import load_tower_states

    ck = load_checkpoint(checkpoints(run)[-1])
    built.module.heads().load_state_dict(ck["model"])
    load_tower_states(built.module, ck)
    built.module.eval()
    with torch.no_grad():
        ref = torch.nn.functional.normalize(built.module.encode_text(built.tokenize(["a red cat"])), dim=-1)
    np.testing.assert_allclose(model.encode_texts(["a red cat"]), ref.numpy(), atol=1e-5)
    # the app indexes and searches with it, by name, ranking exactly by the exported model's cosines
    photos = data["sidecar"]
    base = ["--library", str(tmp_path / "lib"), "--model", "my-tiny", "--device", "cpu"]
    assert cli(["index", str(photos), *base, "-q"]) == 0
    assert "indexed 48" in capsys.readouterr().out
    assert cli(["search", "a red cat", "the photo of a sea", "--json", "--limit", "6", *base]) == 0
    results = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["query"] for r in results] == ["a red cat", "the photo of a sea"]
    paths = sorted(photos.glob("*.jpg"))
    image_emb = model.encode_images(paths)
    for r in results:
        assert len(r["results"]) == 6 and all(x["path"].startswith(str(photos)) for x in r["results"])
        scores = image_emb @ model.encode_texts([r["query"]])[0]
        expected = {str(paths[i]) for i in np.argsort(-scores)[:6]}
        assert {x["path"] for x in r["results"]} == expected
    # and it learned: text→image recall on its training photos is far above chance (R@10 by chance ≈ 21%)
    from training.data.captions import eval_lists, load_caption_data
    from training.evaluate import caption_recall

    images, captions, c2i = eval_lists(load_caption_data("sidecar", photos))
    recall = caption_recall(model.encode_images(images), model.encode_texts(captions), c2i)
    assert recall["t2i_R@10"] >= 40 and recall["i2t_R@10"] >= 50, recall


def test_command_line(tmp_path, data, monkeypatch, capsys):
    """python -m training: usage, train --print-config with overrides, clear errors, data check."""
    import sys

    from training.__main__ import main

    def run(*argv: str) -> int:
        monkeypatch.setattr(sys, "argv", ["python -m training", *argv])
        return main()

    assert run() == 2 and "train --config FILE" in capsys.readouterr().err
    recipe = str(RECIPES / "heads-cached.toml")
    assert run("train", "--config", recipe, "--print-config", "--set", "optim.lr=0.5", "--train.epochs", "7") == 0
    printed = tomllib_loads(capsys.readouterr().out)
    assert printed["optim"]["lr"] == 0.5 and printed["train"]["epochs"] == 7 and printed["train"]["mode"] == "heads"
    assert run("train", "--config", recipe, "--optim.lrr", "1") == 2
    assert "unknown key 'optim.lrr'" in capsys.readouterr().err
    assert run("train", "--config", recipe, f"--output.dir={tmp_path / 'r'}", "--model.preset=tiny-vit",
               f"--model.tokenizer={data['tok']}", "--model.init_from=", f"--data.annotations={tmp_path / 'none'}") == 2
    assert "none: sidecar format needs a folder" in capsys.readouterr().err  # the dataset error, no traceback
    assert run("export", str(tmp_path / "r")) == 2 and "no training checkpoint" in capsys.readouterr().err
    assert run("data", "check", "sidecar", str(data["sidecar"])) == 0
    assert "48 images, 96 captions" in capsys.readouterr().out


def tomllib_loads(text: str) -> dict:
    from training.config import _toml_module

    return _toml_module().loads(text)
