"""Vector helpers without heavy imports (numpy only)."""

from __future__ import annotations

import numpy as np


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, as float32 (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), np.float32(1e-12))


def visual_space(vectors: np.ndarray, kind: str) -> np.ndarray:
    """The vectors photo-to-photo similarity is measured with, L2-normalised.

    Composed models (``kind == "dual_encoder"``): the image tower's pooled features under power normalisation
    (signed square root, then L2 — a Hellinger-style kernel, standard for pooled CNN descriptors in instance
    retrieval), so a few strong activations do not outweigh the many that tell one photo from a similar one.
    Chosen on the Tux Paint gallery (training data) of bench/bench_photo_queries.py: edited copies found at
    rank 1 96.2% → 97.4%. Hugging Face CLIP/SigLIP: their projected embeddings as they are, so a photo query's
    score stays exactly the cosine of transformers' features."""
    x = np.asarray(vectors, dtype=np.float32)
    if kind == "dual_encoder":
        x = np.sign(x) * np.sqrt(np.abs(x))
    return l2_normalize(x)
