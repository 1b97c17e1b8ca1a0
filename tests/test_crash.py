"""Kill the indexer with SIGKILL at random points; the library must lose no completed work and stay consistent."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from photosearch.library import Library
from photosearch.model import load_model
from tests.conftest import write_photo

N_PHOTOS = 240


def vector_count(db: Path) -> int:
    if not db.exists():
        return 0
    con = sqlite3.connect(str(db), timeout=30)
    try:
        return con.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
    except sqlite3.OperationalError:  # schema not created yet
        return 0
    finally:
        con.close()


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume(tmp_path, tiny_checkpoint):
    photos = tmp_path / "photos"
    for i in range(N_PHOTOS):
        write_photo(photos / f"{i // 50}" / f"p{i:03d}.png", i, size=(48, 40))
    lib_dir = tmp_path / "lib"
    db = lib_dir / "library.sqlite3"
    cmd = [sys.executable, "-m", "photosearch", "index", str(photos), "--library", str(lib_dir),
           "--model", str(tiny_checkpoint), "--device", "cpu", "--batch-size", "4", "-q"]
    env = dict(os.environ, PHOTOSEARCH_CACHE=str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    previous = 0
    kills = 0
    for target in sorted(rng.uniform(0.1, 0.9, 3) * N_PHOTOS):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 120
        while proc.poll() is None and vector_count(db) < target and time.time() < deadline:
            time.sleep(0.01)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        done = vector_count(db)
        assert done >= previous, "completed work was lost"
        previous = done
        # reopening reconciles the index with the store: same ids, no orphans, no duplicates
        model = load_model(tiny_checkpoint, device="cpu", image_backend="torch")
        with Library(lib_dir, model) as lib:
            ids = lib.index_for().index.ids()
            assert np.array_equal(ids, lib.store.vector_ids(model.model_id))
            assert len(set(ids.tolist())) == len(ids) == done
            paths = [p.path for p in lib.store.iter_photos()]
            assert len(paths) == len(set(paths))
            assert lib.store.query("SELECT COUNT(*) FROM photos WHERE error IS NULL AND id NOT IN "
                                   "(SELECT photo_id FROM vectors)")[0][0] == 0
    assert kills >= 2
    out = subprocess.run(cmd[:-1] + ["--json"], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    import json

    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["indexed"] == N_PHOTOS - previous  # resumed where it stopped, nothing redone
    assert vector_count(db) == N_PHOTOS
