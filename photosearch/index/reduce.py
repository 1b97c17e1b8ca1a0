"""Narrower graph vectors for large libraries: an orthonormal projection fitted on the library's own vectors.

hnswlib keeps every vector as float32 next to its links, so a 1M-photo library of 384-d vectors needs 1.7 GB
for the index alone. Image embeddings of a contrastive model use far fewer directions than they have
(the default model: 97% of the energy in 128 of 384), so the graph can hold ``v @ P`` for the top principal
directions ``P`` (D, d) of the vectors' uncentred second moment: inner products are kept up to the small
energy outside the subspace, ``q·v = (Pᵀq)·(Pᵀv) + q⊥·v⊥``. The graph then proposes a pool of candidates and
int8 codes of their full vectors re-rank it, so scores stay cosines (to ~1e-3).
"""

from __future__ import annotations

import numpy as np

ENERGY = 0.96  # share of the vectors' energy the kept directions must hold (default model: 128 of 384)
STEP = 32  # kept dimensions come in multiples of this
MIN_DIM = 64
MAX_FRACTION = 0.5  # keeping more than this share of the dimensions saves too little to be worth a re-rank


def fit_projection(sample: np.ndarray, energy: float = ENERGY, step: int = STEP, min_dim: int = MIN_DIM,
                   max_fraction: float = MAX_FRACTION) -> np.ndarray | None:
    """(D, d) float32 with orthonormal columns, or None when reducing would not pay (d > max_fraction · D, or
    too few samples to estimate D directions).

    ``sample``: (N, D) unit vectors, a random sample of the library (a few thousand to tens of thousands)."""
    x = np.asarray(sample, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"sample must be (N, D), got shape {x.shape}")
    n, dim = x.shape
    if n < 2 * dim or not np.isfinite(x).all():
        return None
    second = x.T @ x / n  # (D, D), uncentred: inner products are what the graph ranks by
    values, vectors = np.linalg.eigh(second)  # ascending
    values, vectors = values[::-1].clip(min=0), vectors[:, ::-1]
    kept = np.cumsum(values) / max(values.sum(), 1e-12)
    d = min_dim
    while d < dim and kept[d - 1] < energy:
        d += step
    if d > max_fraction * dim:
        return None
    return np.ascontiguousarray(vectors[:, :d], dtype=np.float32)


def kept_energy(projection: np.ndarray, vectors: np.ndarray) -> float:
    """Mean share of each vector's squared norm inside the projection's subspace."""
    v = np.asarray(vectors, np.float32)
    inside = np.square(v @ projection).sum(1)
    return float(np.mean(inside / np.maximum(np.square(v).sum(1), 1e-12)))
