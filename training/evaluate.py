"""Retrieval and zero-shot evaluation on L2-normalised embeddings."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def relevance(image_captions: Sequence[Sequence[str]], queries: Sequence[str]) -> np.ndarray:
    """(Q, N) bool: query q is correct for image n when it equals one of n's captions (case/space-insensitive)."""
    norm = lambda s: " ".join(s.lower().split())  # noqa: E731
    cap_sets = [{norm(c) for c in caps} for caps in image_captions]
    return np.array([[norm(q) in caps for caps in cap_sets] for q in queries], dtype=bool)


def recall_at_k(scores: np.ndarray, relevant: np.ndarray, ks: Sequence[int] = (1, 5, 10)) -> dict[int, float]:
    """scores, relevant: (Q, N). Percentage of queries with a relevant item in the top k."""
    order = np.argsort(-scores, axis=1, kind="stable")
    hits = np.take_along_axis(relevant, order, axis=1)  # (Q, N) relevance in ranked order
    first = np.where(hits.any(1), hits.argmax(1), np.iinfo(np.int64).max)
    return {k: float(100.0 * np.mean(first < k)) for k in ks}


def retrieval_metrics(
    image_emb: np.ndarray, image_captions: Sequence[Sequence[str]], text_encoder, ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """Text→image and image→text Recall@k. Every distinct caption is a query / gallery item; a caption is correct
    for every image that carries it (identical captions all count)."""
    texts = sorted({c for caps in image_captions for c in caps})
    text_emb = text_encoder(texts)  # (T, D)
    rel = relevance(image_captions, texts)  # (T, N)
    sims = text_emb @ image_emb.T  # (T, N)
    out = {}
    for k, v in recall_at_k(sims, rel, ks).items():
        out[f"t2i_R@{k}"] = v
    for k, v in recall_at_k(sims.T, rel.T, ks).items():
        out[f"i2t_R@{k}"] = v
    return out


DEFAULT_TEMPLATES = ("a photo of a {}.", "a picture of a {}.", "an image of a {}.", "a photo of the {}.")


def zero_shot_accuracy(
    image_emb: np.ndarray, labels: np.ndarray, class_names: Sequence[str], text_encoder,
    templates: Sequence[str] = DEFAULT_TEMPLATES,
) -> float:
    """Top-1 accuracy (%) of nearest class prompt, prompt embeddings averaged over templates."""
    protos = []
    for name in class_names:
        e = text_encoder([t.format(name) for t in templates]).mean(0)
        protos.append(e / np.linalg.norm(e))
    pred = (image_emb @ np.stack(protos).T).argmax(1)
    return float(100.0 * np.mean(pred == np.asarray(labels)))
