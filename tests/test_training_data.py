"""Tests for training.data: tiny fixtures built in tmp_path, no network and no Debian packages needed."""

from __future__ import annotations

import gzip
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.data import fetch
from training.data.easy_vqa import _infer_attributes, load_easy_vqa_captions
from training.data.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist, to_pil
from training.data.fetch import RESERVED_PACKAGES, DataFetchError, data_cache_dir, fetch_debian_package
from training.data.tuxpaint import CaptionedImage, load_rgb, load_tuxpaint, split_by_image

# --- fetch ------------------------------------------------------------------------------------------------------


def _forbid_subprocess(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"subprocess.run must not be called: {args}")

    monkeypatch.setattr(subprocess, "run", fail)


@pytest.mark.parametrize("name", sorted(RESERVED_PACKAGES))
def test_fetch_refuses_reserved_packages(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _forbid_subprocess(monkeypatch)
    with pytest.raises(DataFetchError, match="reserved"):
        fetch_debian_package(name, cache=tmp_path)
    assert not (tmp_path / "debian" / name).exists()


def test_reserved_set_is_the_evaluation_packages() -> None:
    assert set(RESERVED_PACKAGES) == {"gcompris-qt-data", "jigzo-data", "mate-backgrounds"}


def test_fetch_allow_reserved_with_marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _forbid_subprocess(monkeypatch)
    dest = tmp_path / "debian" / "jigzo-data"
    dest.mkdir(parents=True)
    (dest / fetch.MARKER_NAME).touch()
    assert fetch_debian_package("jigzo-data", cache=tmp_path, allow_reserved=True) == dest


def test_second_fetch_with_marker_does_not_run_apt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dest = tmp_path / "debian" / "tuxpaint-stamps-default"
    (dest / "usr").mkdir(parents=True)
    (dest / fetch.MARKER_NAME).write_text("tuxpaint-stamps-default_1_all.deb\n")
    _forbid_subprocess(monkeypatch)
    monkeypatch.setattr(fetch.shutil, "which", lambda tool: None)  # would raise if tools were looked up
    assert fetch_debian_package("tuxpaint-stamps-default", cache=tmp_path) == dest
    assert fetch_debian_package("tuxpaint-stamps-default", cache=tmp_path) == dest


def test_fetch_downloads_extracts_and_marks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    def fake_run(cmd: list[str], cwd: Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
        calls.append(cmd)
        if cmd[:2] == ["apt-get", "download"]:
            (Path(cwd) / f"{cmd[2]}_1.0_all.deb").write_bytes(b"deb")
        elif cmd[0] == "dpkg-deb":
            (Path(cmd[3]) / "usr/share").mkdir(parents=True)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(fetch.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    monkeypatch.setattr(subprocess, "run", fake_run)
    root = fetch_debian_package("some-data", cache=tmp_path)
    assert root == tmp_path / "debian" / "some-data"
    assert (root / "usr/share").is_dir() and (root / fetch.MARKER_NAME).is_file()
    assert [c[:2] for c in calls] == [["apt-get", "download"], ["dpkg-deb", "-x"]]
    assert [p.name for p in (tmp_path / "debian").iterdir()] == ["some-data"]  # temp dir cleaned up
    _forbid_subprocess(monkeypatch)
    assert fetch_debian_package("some-data", cache=tmp_path) == root


def test_fetch_failure_is_actionable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_run(cmd: list[str], cwd: Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(cmd, 100, "", "E: Failed to fetch")

    monkeypatch.setattr(fetch.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setattr(fetch, "_apt_lists_empty", lambda: False)
    with pytest.raises(DataFetchError) as exc_info:
        fetch_debian_package("some-data", cache=tmp_path)
    message = str(exc_info.value)
    assert "apt-get download some-data" in message and "PHOTOSEARCH_DATA_CACHE" in message
    assert not (tmp_path / "debian" / "some-data").exists()


def test_fetch_missing_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch.shutil, "which", lambda tool: None)
    with pytest.raises(DataFetchError, match="apt-get` not found"):
        fetch_debian_package("some-data", cache=tmp_path)


def test_data_cache_dir_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHOTOSEARCH_DATA_CACHE", str(tmp_path / "cache"))
    assert data_cache_dir() == tmp_path / "cache" and (tmp_path / "cache").is_dir()


# --- Tux Paint ----------------------------------------------------------------------------------------------------


def _stamp(folder: Path, name: str, caption_file: bytes | None, size: int = 20, png: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if png:
        im = Image.new("RGBA", (size, size // 2), (0, 0, 0, 0))
        im.paste((200, 0, 0, 255), (0, 0, size // 2, size // 2))  # left half opaque red, right half transparent
        im.save(folder / f"{name}.png")
    else:
        (folder / f"{name}.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    if caption_file is not None:
        (folder / f"{name}.txt").write_bytes(caption_file)


@pytest.fixture()
def stamps(tmp_path: Path) -> Path:
    root = tmp_path / "usr/share/tuxpaint/stamps"
    _stamp(root / "animals/birds", "robin", "\ufeffA  robin\t red-breasted.\nde.utf8=Ein Rotkehlchen.\n".encode())
    _stamp(root / "animals/birds", "robin_mirror", None)  # variant without its own caption
    _stamp(root / "food", "apple", b"An apple.\r\nfr.utf8=Une pomme.\r\n", size=64)
    _stamp(root / "food", "pear", b"A pear.\n", png=False)  # SVG-only stamp
    _stamp(root / "food", "blank", b"\n\nfr.utf8=Rien.\n")  # empty English caption
    _stamp(root / "food", "translated", b"de.utf8=Nur Deutsch.\n")  # first line is a translation
    for i in range(8):
        _stamp(root / "symbols", f"s{i}", f"Symbol {i}.".encode())
    return root


def test_load_tuxpaint(stamps: Path) -> None:
    items = load_tuxpaint(stamps)
    rel = [it.path.relative_to(stamps).as_posix() for it in items]
    assert rel == ["animals/birds/robin.png", "food/apple.png"] + [f"symbols/s{i}.png" for i in range(8)]
    assert items[0] == CaptionedImage(stamps / "animals/birds/robin.png", ("A robin red-breasted.",), "animals/birds")
    assert items[1].captions == ("An apple.",) and items[1].group == "food"


def test_load_tuxpaint_accepts_package_root(stamps: Path) -> None:
    package_root = stamps.parents[3]
    assert load_tuxpaint(package_root) == load_tuxpaint(stamps)


def test_split_by_image_deterministic_disjoint(stamps: Path) -> None:
    items = load_tuxpaint(stamps)
    train, test = split_by_image(items, test_fraction=0.3, seed=0)
    assert len(test) == round(0.3 * len(items)) == 3 and len(train) == 7
    assert {it.path for it in train}.isdisjoint({it.path for it in test})
    assert {it.path for it in train} | {it.path for it in test} == {it.path for it in items}
    assert split_by_image(list(reversed(items)), 0.3, 0) == (train, test)  # input order does not matter
    other = [split_by_image(items, 0.3, seed) for seed in range(1, 6)]
    assert any(t != test for _, t in other)  # the seed does matter


def test_load_rgb_composites_over_background(stamps: Path) -> None:
    im = load_rgb(stamps / "food/apple.png")
    assert im.mode == "RGB" and im.size == (64, 32)
    assert im.getpixel((0, 0)) == (200, 0, 0) and im.getpixel((63, 0)) == (255, 255, 255)
    assert load_rgb(stamps / "food/apple.png", background=(0, 0, 0)).getpixel((63, 0)) == (0, 0, 0)


@pytest.mark.parametrize("mode", ["LA", "P", "L", "RGB"])
def test_load_rgb_modes(tmp_path: Path, mode: str) -> None:
    rgba = Image.new("RGBA", (4, 2), (0, 0, 0, 0))
    rgba.paste((0, 0, 0, 255), (0, 0, 2, 2))  # left half opaque black, right half transparent
    path = tmp_path / f"{mode}.png"
    if mode == "P":
        pal = Image.new("P", (4, 2), 1)
        pal.putpalette([0, 0, 0, 9, 9, 9])
        pal.paste(0, (0, 0, 2, 2))
        pal.save(path, transparency=1)
    else:
        rgba.convert(mode).save(path)
    im = load_rgb(path)
    assert im.mode == "RGB" and im.getpixel((0, 0)) == (0, 0, 0)
    expected_right = (0, 0, 0) if mode in ("L", "RGB") else (255, 255, 255)  # no alpha channel -> stays black
    assert im.getpixel((3, 0)) == expected_right


# --- Fashion-MNIST ------------------------------------------------------------------------------------------------


def _write_idx(path: Path, array: np.ndarray, magic: int | None = None) -> None:
    magic = (0x08 << 8 | array.ndim) if magic is None else magic
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture()
def fmnist(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    root = tmp_path / "usr/share/datasets/fashion-mnist"
    root.mkdir(parents=True)
    labels = np.array([i % 10 for i in range(30)] + [3, 3], dtype=np.uint8)
    images = np.arange(len(labels) * 28 * 28, dtype=np.int64).reshape(-1, 28, 28) % 256
    _write_idx(root / "t10k-images-idx3-ubyte.gz", images)
    _write_idx(root / "t10k-labels-idx1-ubyte.gz", labels)
    return root, images.astype(np.uint8), labels


def test_load_fashion_mnist(fmnist: tuple[Path, np.ndarray, np.ndarray]) -> None:
    root, images, labels = fmnist
    x, y = load_fashion_mnist("test", root=root)
    assert x.dtype == np.uint8 and x.shape == (32, 28, 28) and y.dtype == np.int64 and y.shape == (32,)
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, labels)
    x2, _ = load_fashion_mnist("test", root=root.parents[3])  # the extracted package root works too
    np.testing.assert_array_equal(x2, images)


def test_load_fashion_mnist_limit_is_class_balanced(fmnist: tuple[Path, np.ndarray, np.ndarray]) -> None:
    root, images, _ = fmnist
    x, y = load_fashion_mnist("test", root=root, limit=25)
    assert np.bincount(y, minlength=10).tolist() == [2] * 10
    expected = [i for i in range(32) if i < 20]  # first two of each class are the first 20 in file order
    np.testing.assert_array_equal(x, images[expected])
    with pytest.raises(ValueError, match="limit"):
        load_fashion_mnist("test", root=root, limit=5)


def test_load_fashion_mnist_bad_magic(fmnist: tuple[Path, np.ndarray, np.ndarray]) -> None:
    root, images, _ = fmnist
    _write_idx(root / "t10k-images-idx3-ubyte.gz", images, magic=0x0801)  # a labels magic on an images file
    with pytest.raises(ValueError, match="bad IDX magic"):
        load_fashion_mnist("test", root=root)


def test_load_fashion_mnist_truncated(fmnist: tuple[Path, np.ndarray, np.ndarray]) -> None:
    root, images, _ = fmnist
    _write_idx(root / "t10k-labels-idx1-ubyte.gz", np.zeros(31))
    with pytest.raises(ValueError, match="31 labels"):
        load_fashion_mnist("test", root=root)
    with pytest.raises(ValueError, match="split"):
        load_fashion_mnist("validation", root=root)


def test_fashion_mnist_classes_and_to_pil() -> None:
    assert len(FASHION_MNIST_CLASSES) == 10 and FASHION_MNIST_CLASSES[0] == "t-shirt"
    assert FASHION_MNIST_CLASSES[9] == "ankle boot"
    img = np.zeros((28, 28), dtype=np.uint8)
    img[10, 12] = 255
    pil = to_pil(img)
    assert pil.mode == "RGB" and pil.size == (28, 28)
    assert pil.getpixel((12, 10)) == (255, 255, 255) and pil.getpixel((0, 0)) == (0, 0, 0)
    assert to_pil(img, invert=True).getpixel((0, 0)) == (255, 255, 255)


# --- easy-VQA -----------------------------------------------------------------------------------------------------

COLOURS = frozenset({"red", "blue", "green", "yellow", "teal", "brown", "black", "gray"})


def test_infer_attributes_from_questions() -> None:
    assert _infer_attributes([("what color is the triangle?", "blue")], COLOURS) == ("blue", "triangle")
    assert _infer_attributes([("what is the red shape?", "circle")], COLOURS) == ("red", "circle")
    assert _infer_attributes([("is there not a teal shape?", "no")], COLOURS) == ("teal", None)
    assert _infer_attributes([("is there a teal shape?", "no")], COLOURS) == (None, None)
    eliminated = [("is no circle present?", "yes"), ("does the image contain a triangle?", "no")]
    assert _infer_attributes(eliminated, COLOURS) == (None, "rectangle")


def test_load_easy_vqa_captions() -> None:
    items = load_easy_vqa_captions("test", limit=50)
    assert len(items) == 50
    assert [it.path.name for it in items] == sorted((it.path.name for it in items), key=lambda n: int(n[:-4]))
    assert all(it.path.is_file() and it.group == "test" and len(it.captions) == 1 for it in items)
    for it in items:
        words = it.captions[0].split()
        assert words[0] == "a" and 2 <= len(words) <= 3
        assert words[-1] in {"circle", "rectangle", "triangle", "shape"}
    assert sum(len(it.captions[0].split()) == 3 and not it.captions[0].endswith("shape") for it in items) >= 40
    assert load_easy_vqa_captions("test", limit=50) == items


def test_easy_vqa_colours_match_pixels() -> None:
    palette = {"red": (255, 0, 0), "blue": (0, 0, 255), "green": (0, 255, 0), "yellow": (255, 255, 0),
               "teal": (0, 128, 128), "brown": (165, 42, 42), "black": (0, 0, 0), "gray": (128, 128, 128)}
    checked = 0
    for it in load_easy_vqa_captions("test", limit=30):
        colour = it.captions[0].split()[1]
        if colour in palette:
            pixels = np.asarray(Image.open(it.path).convert("RGB")).reshape(-1, 3).astype(int)
            assert (np.abs(pixels - palette[colour]).max(axis=1) <= 12).sum() >= 20, it
            checked += 1
    assert checked >= 20
