"""Backbone feature extraction and caching: run the frozen towers once, train heads on the stored features."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from photosearch.model.config import PreprocessConfig
from photosearch.model.preprocess import resize_crop, to_array
from photosearch.model.towers import DualEncoder

log = logging.getLogger(__name__)


def make_augment(cfg: PreprocessConfig, seed: int) -> Callable[[Image.Image], Image.Image]:
    """Random resized crop + horizontal flip + mild colour jitter, deterministic for a given seed."""
    from torchvision import transforms as T

    gen = torch.Generator().manual_seed(seed)
    tf = T.Compose(
        [
            T.RandomResizedCrop(cfg.size, scale=(0.5, 1.0), interpolation=T.InterpolationMode.BICUBIC),
            T.RandomHorizontalFlip(),
            T.ColorJitter(0.2, 0.2, 0.2),
        ]
    )

    def augment(im: Image.Image) -> Image.Image:
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        return tf(im)

    return augment


@torch.inference_mode()
def image_features(
    model: DualEncoder,
    images: Sequence[Image.Image],
    cfg: PreprocessConfig,
    augment: Callable[[Image.Image], Image.Image] | None = None,
    batch_size: int = 32,
) -> tuple[np.ndarray, np.ndarray]:
    """Frozen image tower outputs: pooled (N, F) float32 and classifier logits (N, C) float32."""
    tower = model.image_tower.eval().to(memory_format=torch.channels_last)
    pooled, logits = [], []
    for i in range(0, len(images), batch_size):
        batch = []
        for im in images[i : i + batch_size]:
            im = augment(im) if augment else im
            batch.append(to_array(resize_crop(im, cfg), cfg))
        x = torch.from_numpy(np.stack(batch)).to(memory_format=torch.channels_last)
        p, lg = tower(x)
        pooled.append(p.float().numpy())
        logits.append(lg.float().numpy() if lg is not None else np.zeros((len(batch), 0), np.float32))
    return np.concatenate(pooled), np.concatenate(logits)


@torch.inference_mode()
def text_features(model: DualEncoder, tokenize: Callable, texts: Sequence[str], batch_size: int = 128) -> np.ndarray:
    """Frozen text tower outputs (N, F) float32 (pooled, before the head)."""
    tower = model.text_tower.eval()
    out = []
    for i in range(0, len(texts), batch_size):
        out.append(tower(**tokenize(list(texts[i : i + batch_size]))).float().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.cfg.text.feature_dim), np.float32)


class FeatureCache:
    """Arrays stored as .npy files under a folder, keyed by a hash of everything that determines them."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def key(**parts: object) -> str:
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]

    def get_or_compute(self, name: str, key: str, compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        folder = self.root / f"{name}-{key}"
        done = folder / "done"
        if done.is_file():
            return {p.stem: np.load(p, mmap_mode="r") for p in folder.glob("*.npy")}
        arrays = compute()
        folder.mkdir(parents=True, exist_ok=True)
        for k, v in arrays.items():
            np.save(folder / f"{k}.npy", np.asarray(v))
        done.write_text("ok\n")
        log.info("cached %s features in %s", name, folder)
        return {k: np.asarray(v) for k, v in arrays.items()}
