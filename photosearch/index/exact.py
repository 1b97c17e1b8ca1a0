"""Exact (brute-force) top-k by inner product: small-subset search and the recall reference for HNSW."""

from __future__ import annotations

import numpy as np

_BLOCK = 1 << 24  # score-matrix elements computed at once (64 MiB of float32)


def exact_search(matrix: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k rows of `matrix` (N, D) by inner product with `queries` (D,) or (Q, D).

    Returns ids (Q, k') int64 and scores (Q, k') float32, best first, with k' = min(k, N)."""
    matrix = np.asarray(matrix, dtype=np.float32)
    ids = np.asarray(ids, dtype=np.int64)
    queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    if matrix.ndim != 2 or len(ids) != len(matrix) or queries.shape[1:] != matrix.shape[1:]:
        raise ValueError(f"shapes do not match: matrix {matrix.shape}, ids {ids.shape}, queries {queries.shape}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    n, kk = len(matrix), min(k, len(matrix))
    out_ids = np.empty((len(queries), kk), np.int64)
    out_scores = np.empty((len(queries), kk), np.float32)
    step = max(1, _BLOCK // max(n, 1))
    for start in range(0, len(queries), step):
        scores = queries[start : start + step] @ matrix.T  # (q, N)
        top = np.argpartition(-scores, kk - 1, axis=1)[:, :kk] if kk < n else np.tile(np.arange(n), (len(scores), 1))
        top_scores = np.take_along_axis(scores, top, axis=1)  # (q, k')
        order = np.argsort(-top_scores, axis=1, kind="stable")
        out_ids[start : start + step] = ids[np.take_along_axis(top, order, axis=1)]
        out_scores[start : start + step] = np.take_along_axis(top_scores, order, axis=1)
    return out_ids, out_scores


def recall_at_k(approx_ids: np.ndarray, exact_ids: np.ndarray) -> float:
    """Mean share of each row of `exact_ids` (Q, k) found in the same row of `approx_ids` (Q, k')."""
    approx, exact = np.atleast_2d(approx_ids), np.atleast_2d(exact_ids)
    if len(approx) != len(exact):
        raise ValueError(f"row counts differ: {approx.shape} vs {exact.shape}")
    if exact.size == 0:
        return 1.0
    hits = (exact[:, :, None] == approx[:, None, :]).any(axis=2)  # (Q, k)
    return float(hits.mean())
