"""Shared fixtures: tiny random-weight models and real image files written in tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

WORDS = "a an the photo of cat dog red blue green car beach sunset tree house sea sky person bird".split()


def write_tiny_tokenizer(folder: Path) -> Path:
    """A BERT WordPiece tokenizer over a tiny vocabulary, saved offline."""
    from transformers import BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS + [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab += ["##" + chr(c) for c in range(ord("a"), ord("z") + 1)]
    # transformers 5: BertTokenizerFast(vocab_file=...) silently ignores the file (5 tokens, every word [UNK]);
    # the vocabulary passed as a dict is honoured
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    tok.save_pretrained(str(folder))
    return folder


def build_tiny_checkpoint(out: Path, seed: int = 0) -> Path:
    """Save a random-weight composed dual encoder (timm test_efficientnet + 2-layer BERT) to ``out``."""
    import torch

    from photosearch.model.composed import make_tokenizer, save_checkpoint
    from photosearch.model.towers import DualEncoder
    from training.presets import tiny_config

    torch.manual_seed(seed)
    work = out.parent / (out.name + ".src")
    write_tiny_tokenizer(work / "tokenizer")
    cfg = tiny_config()
    model = DualEncoder(cfg)
    with torch.no_grad():
        model.image_head.class_text.normal_()
        model.image_head.residual.weight.normal_(std=0.05)
    save_checkpoint(model, out, tokenizer=make_tokenizer(cfg.text, work))
    return out


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("models") / "tiny")


def write_photo(path: Path, seed: int = 0, size: tuple[int, int] = (96, 64), fmt: str | None = None) -> Path:
    """A real image file with smooth random colour structure (different seeds → clearly different photos)."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
    img = np.zeros((h, w, 3))
    for c in range(3):
        a, b, p = rng.uniform(-6, 6, 3)
        img[..., c] = 127 + 120 * np.sin(a * xx + b * yy + p)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "HEIF":
        import pillow_heif  # noqa: F401 - registers the HEIF writer

        pillow_heif.register_heif_opener()
    Image.fromarray(img.astype(np.uint8)).save(path, format=fmt)
    return path
