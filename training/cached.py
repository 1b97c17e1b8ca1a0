"""Image transforms, seeded datasets and the memory-mapped feature cache of heads-only training.

Heads mode runs the frozen towers once: every training photo as one clean view plus ``views`` augmented views,
every caption, and the evaluation photos. The outputs go to ``.npy`` files under a folder keyed by a hash of the
model's tower identity, the files (path, size, mtime) and the augmentation settings; later runs memory-map them,
so an epoch only runs the heads and takes seconds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from photosearch.model.config import PreprocessConfig
from photosearch.model.preprocess import open_image, resize_crop, to_array

log = logging.getLogger(__name__)


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (numpy's SeedSequence: well mixed, platform independent)."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(2, np.uint32).view(
        np.uint64)[0] >> 1)


def image_transform(pre: PreprocessConfig, augment: bool, crop_scale: float = 0.5) -> Callable[[Any], torch.Tensor]:
    """PIL image → normalised (3, S, S) tensor. With ``augment``: random resized crop (area ≥ ``crop_scale``) and a
    horizontal flip, drawing from torch's global RNG (wrap the dataset in :class:`SeededDataset` for determinism);
    without: the checkpoint's own resize + centre crop, exactly as the app preprocesses photos."""
    if not augment:
        return lambda im: torch.from_numpy(to_array(resize_crop(im, pre), pre))
    from torchvision import transforms as T

    mode = {"bicubic": T.InterpolationMode.BICUBIC, "bilinear": T.InterpolationMode.BILINEAR,
            "nearest": T.InterpolationMode.NEAREST}[pre.interpolation]
    tf = T.Compose([T.RandomResizedCrop(pre.size, scale=(crop_scale, 1.0), interpolation=mode),
                    T.RandomHorizontalFlip()])
    return lambda im: torch.from_numpy(to_array(tf(im), pre))


class SeededDataset(Dataset):
    """Makes item ``i`` of epoch ``e`` a pure function of (seed, e, i): torch's RNG is seeded from them for the
    duration of ``__getitem__`` (and restored after), so augmentations do not depend on worker count, rank, or
    where a resumed run restarted."""

    def __init__(self, inner: Dataset, seed: int):
        self.inner = inner
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self.inner, "set_epoch"):
            self.inner.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.inner)  # type: ignore[arg-type]

    def __getitem__(self, i: int):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(mix_seed(self.seed, self.epoch, i))
            return self.inner[i]


class ImageViews(Dataset):
    """Photos as tensors: view 0 is the clean (app) preprocessing, views ≥ 1 are seeded augmentations."""

    def __init__(self, paths: Sequence[Path], pre: PreprocessConfig, view: int = 0, seed: int = 0,
                 crop_scale: float = 0.5):
        self.paths = list(paths)
        self.pre = pre
        self.view = view
        self.seed = seed
        self.tf = image_transform(pre, augment=view > 0, crop_scale=crop_scale)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        im = open_image(self.paths[i], min_side=self.pre.resize or self.pre.size, background=tuple(self.pre.background))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(mix_seed(self.seed, self.view, i))
            return self.tf(im)


def file_fingerprint(paths: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        st = os.stat(p)
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


class FeatureStore:
    """``root/<name>-<key>/*.npy`` written through ``np.lib.format.open_memmap`` and read memory-mapped; a ``done``
    file marks a complete entry (the layout of :class:`training.features.FeatureCache`)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    @staticmethod
    def key(**parts: Any) -> str:
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]

    def folder(self, name: str, key: str) -> Path:
        return self.root / f"{name}-{key}"

    def load(self, name: str, key: str) -> dict[str, np.ndarray] | None:
        folder = self.folder(name, key)
        if not (folder / "done").is_file():
            return None
        return {p.stem: np.load(p, mmap_mode="r") for p in folder.glob("*.npy")}

    def create(self, name: str, key: str, shapes: dict[str, tuple[tuple[int, ...], Any]]) -> tuple[Path, dict]:
        folder = self.folder(name, key)
        tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        arrays = {k: np.lib.format.open_memmap(tmp / f"{k}.npy", mode="w+", dtype=dt, shape=shape)
                  for k, (shape, dt) in shapes.items()}
        return tmp, arrays

    def commit(self, name: str, key: str, tmp: Path, arrays: dict) -> dict[str, np.ndarray]:
        for a in arrays.values():
            a.flush()
        del arrays
        (tmp / "done").write_text("ok\n")
        folder = self.folder(name, key)
        if (folder / "done").is_file():  # another process (another node on a shared disk) finished first
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(tmp, folder)
            log.info("cached %s features in %s", name, folder)
        loaded = self.load(name, key)
        assert loaded is not None
        return loaded


@torch.no_grad()
def extract_image_features(
    module, paths: Sequence[Path], pre: PreprocessConfig, views: int, seed: int, crop_scale: float,
    device: torch.device, autocast: Callable[[], Any], store: FeatureStore, name: str, identity: dict,
    batch_size: int = 64, num_workers: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Frozen image tower outputs for ``paths``: pooled (V+1, N, F) and classifier logits (V+1, N, C) as float16
    memory maps (view 0 clean). Computed once per (tower, files, views, seed, crop) and reused."""
    key = FeatureStore.key(model=identity, files=file_fingerprint(paths), n=len(paths), views=views, seed=seed,
                           crop_scale=crop_scale, pre=pre.__dict__)
    cached = store.load(name, key)
    if cached is not None:
        log.info("%s: reusing cached image features (%s)", name, store.folder(name, key))
        return cached["pooled"], cached["logits"]
    module.eval()
    tmp = arrays = None
    t0 = time.perf_counter()
    for v in range(views + 1):
        loader = DataLoader(ImageViews(paths, pre, v, seed, crop_scale), batch_size=batch_size,
                            num_workers=num_workers)
        row = 0
        for x in loader:
            with autocast():
                pooled, logits = module.image_features(x.to(device))
            pooled = pooled.float().cpu().numpy()
            logits = logits.float().cpu().numpy() if logits is not None else np.zeros((len(x), 0), np.float32)
            if arrays is None:
                tmp, arrays = store.create(name, key, {
                    "pooled": ((views + 1, len(paths), pooled.shape[1]), np.float16),
                    "logits": ((views + 1, len(paths), logits.shape[1]), np.float16)})
            arrays["pooled"][v, row : row + len(x)] = pooled
            arrays["logits"][v, row : row + len(x)] = logits
            row += len(x)
        log.info("%s: view %d/%d of %d photos (%.1fs)", name, v, views, len(paths), time.perf_counter() - t0)
    out = store.commit(name, key, tmp, arrays)
    return out["pooled"], out["logits"]


@torch.no_grad()
def extract_text_features(module, tokenize, texts: Sequence[str], device: torch.device, autocast,
                          store: FeatureStore, name: str, identity: dict, batch_size: int = 256) -> np.ndarray:
    """Frozen text tower outputs (T, F) float16 for ``texts``, cached like the image features."""
    key = FeatureStore.key(model=identity, texts=hashlib.sha256("\n".join(texts).encode()).hexdigest(), n=len(texts))
    cached = store.load(name, key)
    if cached is not None:
        return cached["text"]
    module.eval()
    tmp = arrays = None
    for i in range(0, len(texts), batch_size):
        tokens = {k: v.to(device) for k, v in tokenize(list(texts[i : i + batch_size])).items()}
        with autocast():
            feats = module.text_features(tokens).float().cpu().numpy()
        if arrays is None:
            tmp, arrays = store.create(name, key, {"text": ((len(texts), feats.shape[1]), np.float16)})
        arrays["text"][i : i + len(feats)] = feats
    if arrays is None:
        raise ValueError(f"{name}: no texts to encode")
    return store.commit(name, key, tmp, arrays)["text"]


class HeadsPairs(Dataset):
    """Training pairs on cached features. Item ``i`` of epoch ``e``: one view of photo ``i`` (clean or augmented,
    drawn from (seed, e, i)), the caption :class:`training.data.captions.TrainPairs` would give it, and that
    caption's id (pairs with the identical caption are all positives in the loss)."""

    def __init__(self, pooled: np.ndarray, logits: np.ndarray, text: np.ndarray, captions_of: list[list[int]],
                 caption_index: Callable[[int, int], int], seed: int):
        self.pooled, self.logits, self.text = pooled, logits, text
        self.captions_of = captions_of
        self.caption_index = caption_index
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.captions_of)

    def __getitem__(self, i: int):
        view = int(np.random.default_rng([self.seed & 0xFFFFFFFF, self.epoch, i, 7]).integers(len(self.pooled)))
        cap = self.captions_of[i][self.caption_index(i, self.epoch)]
        return (torch.from_numpy(np.asarray(self.pooled[view, i], np.float32)),
                torch.from_numpy(np.asarray(self.logits[view, i], np.float32)),
                torch.from_numpy(np.asarray(self.text[cap], np.float32)),
                cap)
