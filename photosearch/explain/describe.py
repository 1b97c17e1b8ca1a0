"""Describe this photo: rank a vocabulary of phrases (shipped with the app, editable by the user) against it.

The shipped vocabulary (``resources/vocabulary/default.txt``: everyday scenes, events, documents, kinds of
photo, and the 1000 ImageNet classes) is used until the user makes their own copy
(:func:`user_vocabulary_path`, created by "Edit vocabulary" in the app). Phrase vectors are computed once per
model and vocabulary and cached on disk, so describing a photo costs one matrix product.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from photosearch import config_dir
from photosearch.model.base import EncoderBase

log = logging.getLogger(__name__)

TEMPLATE = "a photo of {}"
SOFTMAX_SCALE = 100.0  # CLIP's logit scale: turns cosine gaps into the "how sure" shares shown next to phrases


def shipped_vocabulary_path() -> Path:
    from photosearch.model import resources_dir

    return resources_dir() / "vocabulary" / "default.txt"


def user_vocabulary_path() -> Path:
    return config_dir() / "vocabulary.txt"


def vocabulary_path() -> Path:
    """The user's own vocabulary when they made one, else the shipped one."""
    user = user_vocabulary_path()
    return user if user.is_file() else shipped_vocabulary_path()


def ensure_user_vocabulary() -> Path:
    """The user's vocabulary file, created as a copy of the shipped one on first use (for editing)."""
    user = user_vocabulary_path()
    if not user.is_file():
        user.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shipped_vocabulary_path(), user)
    return user


def read_phrases(path: Path) -> list[str]:
    """Phrases of a vocabulary file: one a line, '#' comments and blank lines skipped, duplicates dropped."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as e:
        raise FileNotFoundError(f"cannot read the vocabulary {path}: {e.strerror or e}") from e
    seen: set[str] = set()
    out = []
    for line in text.splitlines():
        p = line.split("#", 1)[0].strip()
        if p and p.lower() not in seen:
            seen.add(p.lower())
            out.append(p)
    if not out:
        raise ValueError(f"the vocabulary {path} has no phrases (one phrase per line; '#' starts a comment)")
    return out


def _vector_cache_dir() -> Path:
    from photosearch.model.onnx_model import cache_dir

    return cache_dir() / "vocabulary"


@dataclass
class Vocabulary:
    phrases: list[str]
    vectors: np.ndarray  # (N, D) L2-normalised text vectors of TEMPLATE.format(phrase)
    path: Path | None = None

    @classmethod
    def for_model(cls, model: EncoderBase, phrases: Sequence[str] | None = None, path: Path | None = None,
                  cache: bool = True) -> Vocabulary:
        """The vocabulary's vectors for ``model``: from the on-disk cache, else encoded (and cached)."""
        if phrases is None:
            path = path or vocabulary_path()
            phrases = read_phrases(path)
        phrases = list(phrases)
        key = hashlib.sha256("\n".join([TEMPLATE, *phrases]).encode()).hexdigest()[:16]
        file = _vector_cache_dir() / f"{model.model_id}-{key}.npy"
        if cache and file.is_file():
            try:
                vecs = np.load(file)
                if vecs.shape == (len(phrases), model.embed_dim):
                    return cls(phrases, vecs, path)
            except (OSError, ValueError) as e:
                log.warning("vocabulary cache %s unreadable (%s); encoding again", file, e)
        t = time.perf_counter()
        vecs = model.encode_texts([TEMPLATE.format(p) for p in phrases], batch_size=128).astype(np.float32)
        log.info("encoded %d vocabulary phrases in %.1fs", len(phrases), time.perf_counter() - t)
        if cache:
            try:
                file.parent.mkdir(parents=True, exist_ok=True)
                tmp = file.with_name(file.name + ".tmp.npy")
                np.save(tmp, vecs)
                os.replace(tmp, file)
            except OSError as e:  # a read-only cache only costs time
                log.warning("cannot cache vocabulary vectors in %s: %s", file.parent, e)
        return cls(phrases, vecs, path)

    def describe(self, image_vec: np.ndarray, top: int = 8) -> list[tuple[str, float, float]]:
        """(phrase, cosine, share) of the ``top`` phrases for one photo vector; share = softmax over the whole
        vocabulary at CLIP's scale (how much of the model's belief the phrase takes)."""
        s = self.vectors @ np.asarray(image_vec, np.float32).reshape(-1)
        e = np.exp(SOFTMAX_SCALE * (s - s.max()))
        p = e / e.sum()
        order = np.argsort(-s, kind="stable")[:top]
        return [(self.phrases[i], float(s[i]), float(p[i])) for i in order]

    def background(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean (D,) and covariance (D, D) of the phrase vectors: a photo's similarity to "anything" has mean
        ``v·μ`` and variance ``vᵀCv``, which :mod:`photosearch.explain.tags` calibrates tag scores against."""
        mu = self.vectors.mean(0)
        c = self.vectors - mu
        return mu, (c.T @ c) / len(self.vectors)
