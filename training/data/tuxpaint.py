"""Tux Paint stamps (Debian ``tuxpaint-stamps-default``): clip-art PNGs with one-line English captions.

Each stamp is ``X.png`` (and/or ``X.svg``) next to ``X.txt``, whose first line is the English caption and whose
other lines are ``lang.utf8=...`` translations. Only captioned PNGs are used: SVG-only stamps and PNG variants
without their own ``.txt`` (e.g. ``X_mirror.png``) are skipped.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image

from training.data.fetch import fetch_debian_package

logger = logging.getLogger(__name__)

TUXPAINT_PACKAGE = "tuxpaint-stamps-default"
STAMPS_SUBDIR = Path("usr/share/tuxpaint/stamps")
_TRANSLATION_LINE = re.compile(r"^[A-Za-z]{2,3}(_[A-Za-z]{2})?(@\w+)?\.utf8=")


@dataclass(frozen=True)
class CaptionedImage:
    """An image file with one or more captions; ``group`` is its folder relative to the dataset root."""

    path: Path
    captions: tuple[str, ...]
    group: str


T = TypeVar("T", bound=CaptionedImage)


def read_caption(txt: Path) -> str:
    """English caption of a stamp: first line of ``txt``, BOM removed, whitespace collapsed ("" if none)."""
    text = txt.read_bytes().decode("utf-8-sig", errors="replace")
    first = " ".join(text.split("\n", 1)[0].split())
    return "" if _TRANSLATION_LINE.match(first) else first


def load_tuxpaint(root: Path | None = None) -> list[CaptionedImage]:
    """Captioned PNG stamps sorted by relative path; ``root`` is the stamps dir (or the extracted package root)."""
    if root is None:
        root = fetch_debian_package(TUXPAINT_PACKAGE)
    if (root / STAMPS_SUBDIR).is_dir():
        root = root / STAMPS_SUBDIR
    if not root.is_dir():
        raise FileNotFoundError(f"Tux Paint stamps folder not found: {root}")
    items, skipped = [], 0
    for png in sorted(p for p in root.rglob("*") if p.suffix.lower() == ".png" and p.is_file()):
        txt = png.with_suffix(".txt")
        caption = read_caption(txt) if txt.is_file() else ""
        if not caption:
            skipped += 1
            continue
        rel_dir = png.parent.relative_to(root).as_posix()
        items.append(CaptionedImage(path=png, captions=(caption,), group="" if rel_dir == "." else rel_dir))
    logger.info("loaded %d captioned Tux Paint stamps from %s (%d PNGs without caption skipped)", len(items), root,
                skipped)
    return items


def split_by_image(items: Sequence[T], test_fraction: float = 0.3, seed: int = 0) -> tuple[list[T], list[T]]:
    """Deterministic (train, test) split: permute the path-sorted items; test = first round(test_fraction * N)."""
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError(f"test_fraction must be in [0, 1], got {test_fraction}")
    ordered = sorted(items, key=lambda it: it.path.as_posix())
    perm = np.random.default_rng(seed).permutation(len(ordered))
    n_test = round(test_fraction * len(ordered))
    test = [ordered[i] for i in perm[:n_test]]
    train = [ordered[i] for i in perm[n_test:]]
    return train, test


def load_rgb(path: Path, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Open an image as RGB, compositing any transparency (RGBA, LA, P/RGB/L with tRNS) over ``background``."""
    with Image.open(path) as im:
        has_alpha = im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info
        if not has_alpha:
            return im.convert("RGB")
        rgba = im.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, (*background, 255))
    return Image.alpha_composite(canvas, rgba).convert("RGB")
