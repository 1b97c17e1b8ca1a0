"""Fashion-MNIST (Debian ``dataset-fashion-mnist``): 28x28 greyscale clothing images, white-on-black, 10 classes."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import numpy as np
from PIL import Image

from training.data.fetch import fetch_debian_package

logger = logging.getLogger(__name__)

FASHION_MNIST_PACKAGE = "dataset-fashion-mnist"
FASHION_MNIST_SUBDIR = Path("usr/share/datasets/fashion-mnist")
# Official label order, worded for the prompt "a photo of a {label}".
FASHION_MNIST_CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                         "ankle boot"]
_SPLIT_PREFIX = {"train": "train", "test": "t10k"}
_IDX_UBYTE = 0x08


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Parse an (optionally gzipped) IDX file of unsigned bytes with ``ndim`` dimensions."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    expected_magic = (_IDX_UBYTE << 8) | ndim
    magic = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    if magic != expected_magic:
        raise ValueError(f"{path}: bad IDX magic number {magic!r}, expected {expected_magic:#010x} (ubyte, {ndim}-D)")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if len(data) - header != int(np.prod(shape)):
        raise ValueError(f"{path}: IDX payload is {len(data) - header} bytes, header shape {shape} needs "
                         f"{int(np.prod(shape))}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def load_fashion_mnist(split: str = "test", root: Path | None = None,
                       limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 28, 28)`` uint8 and labels ``(N,)`` int64 of ``split`` ("train" or "test").

    ``root`` is the folder holding the ``*-ubyte.gz`` files (or the extracted package root); None fetches the package.
    ``limit`` keeps a class-balanced subset: the first ``limit // 10`` images of each class, in file order.
    """
    if split not in _SPLIT_PREFIX:
        raise ValueError(f"split must be one of {sorted(_SPLIT_PREFIX)}, got {split!r}")
    if root is None:
        root = fetch_debian_package(FASHION_MNIST_PACKAGE)
    if (root / FASHION_MNIST_SUBDIR).is_dir():
        root = root / FASHION_MNIST_SUBDIR
    prefix = _SPLIT_PREFIX[split]
    images = read_idx(root / f"{prefix}-images-idx3-ubyte.gz", ndim=3)
    labels = read_idx(root / f"{prefix}-labels-idx1-ubyte.gz", ndim=1).astype(np.int64)
    if len(images) != len(labels):
        raise ValueError(f"{root}: {len(images)} images but {len(labels)} labels in split {split!r}")
    if labels.size and labels.max() >= len(FASHION_MNIST_CLASSES):
        raise ValueError(f"{root}: label {labels.max()} out of range")
    if limit is not None:
        per_class = limit // len(FASHION_MNIST_CLASSES)
        if per_class < 1:
            raise ValueError(f"limit must be at least {len(FASHION_MNIST_CLASSES)} (one per class), got {limit}")
        keep = np.sort(np.concatenate([np.flatnonzero(labels == c)[:per_class]
                                       for c in range(len(FASHION_MNIST_CLASSES))]))
        images, labels = images[keep], labels[keep]
    logger.info("loaded %d Fashion-MNIST %s images from %s", len(labels), split, root)
    return images, labels


def to_pil(img28: np.ndarray, invert: bool = False) -> Image.Image:
    """A 2-D uint8 image as an RGB PIL image (white-on-black as stored unless ``invert``)."""
    arr = np.asarray(img28)
    if arr.ndim != 2 or arr.dtype != np.uint8:
        raise ValueError(f"expected a 2-D uint8 array, got shape {arr.shape} dtype {arr.dtype}")
    if invert:
        arr = 255 - arr
    return Image.fromarray(np.ascontiguousarray(arr)).convert("RGB")
