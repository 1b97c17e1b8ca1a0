"""The installer bundle (packaging/): the frozen app's resource lookup, ONNX exports shipped with a checkpoint,
the message for a model that needs torch in a torch-free build, and (slow) a real PyInstaller build whose
executable passes ``--self-test`` from a copy outside the source tree."""

from __future__ import annotations

import configparser
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from photosearch.model import ModelError, default_model_dir, load_model, resources_dir
from photosearch.model.onnx_model import OnnxModel, export_paths, shipped_export_paths, try_load_onnx_only
from tests.conftest import write_photo

REPO = Path(__file__).resolve().parents[1]


def test_resources_found_in_a_frozen_app(monkeypatch, tmp_path):
    monkeypatch.delenv("PHOTOSEARCH_RESOURCES", raising=False)
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path), raising=False)
    assert resources_dir() == tmp_path / "resources"
    assert default_model_dir() == tmp_path / "resources" / "models" / "default"


@pytest.fixture(scope="module")
def checkpoint_with_exports(tiny_checkpoint, tmp_path_factory) -> tuple[Path, Path]:
    """A copy of the tiny checkpoint, its ONNX exports made and verified by a torch load (in a private cache)."""
    tmp = tmp_path_factory.mktemp("shipped")
    ck = tmp / "model"
    shutil.copytree(tiny_checkpoint, ck)
    old = os.environ.get("PHOTOSEARCH_CACHE")
    os.environ["PHOTOSEARCH_CACHE"] = str(tmp / "build-cache")
    try:
        ref = load_model(ck, device="cpu", image_backend="onnx")  # torch load: exports and verifies both towers
        cached = export_paths(ref.model_id, ref.preprocess_config.size)
    finally:
        if old is None:
            os.environ.pop("PHOTOSEARCH_CACHE")
        else:
            os.environ["PHOTOSEARCH_CACHE"] = old
    assert all(p.is_file() and p.with_suffix(".verified").is_file() for p in cached)
    return ck, tmp / "build-cache" / "onnx"


def _ship(ck: Path, cache: Path, dest: Path) -> Path:
    shutil.copytree(ck, dest)
    (dest / "onnx").mkdir()
    for f in cache.iterdir():
        shutil.copy2(f, dest / "onnx" / f.name)
    return dest


def test_exports_shipped_with_a_checkpoint_load_without_torch_or_cache(checkpoint_with_exports, tmp_path,
                                                                       monkeypatch):
    ck, cache = checkpoint_with_exports
    shipped = _ship(ck, cache, tmp_path / "shipped")
    monkeypatch.setenv("PHOTOSEARCH_CACHE", str(tmp_path / "empty-cache"))
    model = load_model(shipped, device="cpu")
    assert isinstance(model, OnnxModel)
    image_onnx, text_onnx = shipped_export_paths(shipped, model.model_id, model.preprocess_config.size)
    assert image_onnx.is_file() and text_onnx.is_file()
    assert not (tmp_path / "empty-cache" / "onnx").exists()  # nothing exported: the shipped files served

    ref = load_model(ck, device="cpu", image_backend="torch")
    texts = ["a cat", "red car on the beach"]
    assert (ref.encode_texts(texts) * model.encode_texts(texts)).sum(1).min() >= 0.9999
    pixels = np.random.default_rng(0).standard_normal((2, 3, ref.preprocess_config.size,
                                                       ref.preprocess_config.size)).astype(np.float32)
    for a, b in zip(ref.encode_pixels(pixels), model.encode_pixels(pixels)):  # embedding, then visual features
        a, b = a / np.linalg.norm(a, axis=1, keepdims=True), b / np.linalg.norm(b, axis=1, keepdims=True)
        assert (a * b).sum(1).min() >= 0.9999


def test_unverified_or_stale_shipped_exports_are_not_used(checkpoint_with_exports, tmp_path, monkeypatch):
    ck, cache = checkpoint_with_exports
    monkeypatch.setenv("PHOTOSEARCH_CACHE", str(tmp_path / "empty-cache"))
    unverified = _ship(ck, cache, tmp_path / "unverified")
    for f in (unverified / "onnx").glob("*.verified"):
        f.unlink()
    assert try_load_onnx_only(unverified) is None
    stale = _ship(ck, cache, tmp_path / "stale")  # exports named for another model id (an older model)
    for f in (stale / "onnx").iterdir():
        f.rename(f.with_name("0123456789abcdef" + f.name[16:]))
    assert try_load_onnx_only(stale) is None


def test_a_model_that_needs_torch_says_so_when_torch_is_missing(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("PHOTOSEARCH_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setitem(sys.modules, "torch", None)  # as in the CPU bundle: `import torch` fails
    with pytest.raises(ModelError, match="needs PyTorch, which this build of photosearch does not include"):
        load_model(tiny_checkpoint, device="cpu")


def test_desktop_entry_and_icons():
    entry = configparser.ConfigParser(interpolation=None)
    entry.optionxform = str
    entry.read(REPO / "packaging" / "linux" / "photosearch.desktop")
    d = entry["Desktop Entry"]
    assert d["Type"] == "Application" and d["Exec"].split()[0] == "photosearch" and d["Icon"] == "photosearch"
    from PIL import Image

    icons = REPO / "resources" / "icons"
    for n in (16, 32, 48, 64, 128, 256, 512):
        with Image.open(icons / f"photosearch-{n}.png") as im:
            assert im.size == (n, n) and im.mode == "RGBA"
    with Image.open(icons / "photosearch.ico") as im:
        assert {(16, 16), (32, 32), (48, 48), (256, 256)} <= set(im.info["sizes"])


def _clean_env(home: Path) -> dict[str, str]:
    """A user's environment on a machine without Python: no PYTHONPATH, no venv, nothing of photosearch's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "PHOTOSEARCH", "XDG_"))}
    env.update(HOME=str(home), QT_QPA_PLATFORM="offscreen", XDG_CACHE_HOME=str(home / ".cache"),
               XDG_CONFIG_HOME=str(home / ".config"), XDG_DATA_HOME=str(home / ".local" / "share"),
               PATH="/usr/bin:/bin")
    return env


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the test drives the Linux bundle")
def test_bundle_builds_and_passes_self_test_outside_the_source_tree(tmp_path, tiny_checkpoint):
    pytest.importorskip("PyInstaller", reason='PyInstaller not installed: pip install -e ".[package]"')
    dist, work = tmp_path / "dist", tmp_path / "work"
    build = subprocess.run([sys.executable, str(REPO / "packaging" / "build.py"), "--dist", str(dist),
                            "--work", str(work)], cwd=REPO, capture_output=True, text=True, timeout=1800, check=False)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-5000:]
    built = dist / "photosearch"

    # what the CPU bundle holds: the app, the model with its verified ONNX exports, Qt's platform plugins;
    # no torch, no CUDA, no training code, no tests
    internal = built / "_internal"
    model_dir = internal / "resources" / "models" / "default"
    assert (model_dir / "config.json").is_file() and len(list((model_dir / "onnx").glob("*.verified"))) == 2
    assert (internal / "PySide6" / "Qt" / "plugins" / "platforms" / "libqxcb.so").is_file()
    assert (internal / "PySide6" / "Qt" / "plugins" / "platforms" / "libqoffscreen.so").is_file()
    names = {p.name.lower() for p in internal.rglob("*")}
    assert not {n for n in names if n.startswith(("torch", "libtorch", "libc10", "libcudnn", "libcublas",
                                                  "libnccl", "transformers", "timm", "training"))}
    assert not (internal / "tests").exists()
    assert [p.parent for p in internal.rglob("*.safetensors")] == [model_dir]  # the heads; no backbone weights
    size = sum(f.stat().st_size for f in built.rglob("*") if f.is_file() and not f.is_symlink())
    assert size <= 1.2e9, f"CPU bundle is {size / 1e9:.2f} GB"
    assert (built / "photosearch.desktop").is_file() and (built / "install.sh").is_file()

    # run it as a user would: a copy somewhere else, fresh HOME, no Python environment, cwd outside the tree
    elsewhere = tmp_path / "user" / "apps"
    app = shutil.copytree(built, elsewhere / "photosearch", symlinks=True)
    shutil.rmtree(dist)  # the build output is gone too: only the copy is left
    home = tmp_path / "user" / "home"
    home.mkdir(parents=True)
    env = _clean_env(home)
    r = subprocess.run([str(app / "photosearch"), "--self-test"], cwd=home, env=env, capture_output=True, text=True,
                       timeout=600, check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    verdict = r.stdout.strip().splitlines()[-1]
    assert verdict.startswith("photosearch self-test: PASS") and "onnx images" in verdict, verdict
    assert not (home / ".cache" / "photosearch" / "onnx").exists()  # the shipped exports served, none re-made

    # why-this-match without torch: describe (shipped vocabulary), auto-tags, and the occlusion heatmap
    assert (app / "_internal" / "resources" / "vocabulary" / "default.txt").is_file()
    photos = home / "Pictures"
    for i in range(3):
        write_photo(photos / f"p{i}.jpg", i, size=(160, 120))
    lib = ["--library", str(home / "lib2")]

    def bundled(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(app / "photosearch"), *args, *lib], cwd=home, env=env, capture_output=True,
                              text=True, timeout=600, check=False)

    assert bundled("index", str(photos), "-q").returncode == 0
    vocab = home / "v.txt"
    vocab.write_text("a red car\na dog\nthe sea\n")
    r = bundled("describe", str(photos / "p0.jpg"), "--vocabulary", str(vocab), "--json")
    assert r.returncode == 0 and len(json.loads(r.stdout)["phrases"]) == 3, r.stderr[-3000:]
    r = bundled("explain", str(photos / "p1.jpg"), "the sea", "--out", str(home / "h.png"), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["method"] == "occlusion", r.stderr[-3000:]
    assert (home / "h.png").is_file()
    r = bundled("tags", "add", "sky", "--threshold", "-100", "--json")
    assert r.returncode == 0 and json.loads(r.stdout.splitlines()[-1])[0]["photos"] == 3, r.stderr[-3000:]

    # a model that needs torch gets a clear message instead of a traceback
    r = subprocess.run([str(app / "photosearch"), "search", "--library", str(home / "lib"), "--model",
                        str(tiny_checkpoint), "a cat"], cwd=home, env=env, capture_output=True, text=True, timeout=300,
                       check=False)
    assert r.returncode == 1 and "needs PyTorch" in r.stderr and "Traceback" not in r.stderr, r.stderr[-3000:]
