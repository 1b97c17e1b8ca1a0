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


def caption_recall(
    image_emb: np.ndarray, text_emb: np.ndarray, caption_to_image: np.ndarray, ks: Sequence[int] = (1, 5, 10),
    chunk: int = 2048,
) -> dict[str, float]:
    """Recall@k with several captions per image, every caption counting (the Karpathy-split protocol).

    ``text_emb[c]`` is caption c, whose image is ``caption_to_image[c]`` (as from
    :func:`training.data.captions.eval_lists`). text→image: a caption is a hit when its own image is in the top k;
    image→text: an image is a hit when any of its captions is in the top k. Unlike :func:`retrieval_metrics`,
    identical texts of different images are separate queries, each correct only for its own image. Ties rank as in
    :func:`recall_at_k` (stable: lower index first). Same keys as :func:`retrieval_metrics`; memory O(chunk × N).
    """
    c2i = np.asarray(caption_to_image, dtype=np.int64)
    n_img, n_cap = len(image_emb), len(text_emb)
    if c2i.shape != (n_cap,):
        raise ValueError(f"caption_to_image has shape {c2i.shape}, expected ({n_cap},)")
    if n_cap and (c2i.min() < 0 or c2i.max() >= n_img):
        raise ValueError(f"caption_to_image refers to images outside 0..{n_img - 1}")
    # text→image: rank of the caption's own image among all images
    t2i_rank = np.empty(n_cap, dtype=np.int64)
    cols = np.arange(n_img)
    for s in range(0, n_cap, chunk):
        sims = text_emb[s : s + chunk] @ image_emb.T  # (c, N)
        own = c2i[s : s + chunk]
        target = sims[np.arange(len(own)), own][:, None]
        t2i_rank[s : s + chunk] = ((sims > target) | ((sims == target) & (cols < own[:, None]))).sum(1)
    # image→text: rank of the best-ranked own caption among all captions
    i2t_rank = np.full(n_img, np.iinfo(np.int64).max, dtype=np.int64)
    caps_of = np.arange(n_cap)
    for s in range(0, n_img, chunk):
        sims = image_emb[s : s + chunk] @ text_emb.T  # (b, C)
        mine = c2i[None, :] == np.arange(s, s + len(sims))[:, None]  # (b, C) caption belongs to the image
        has = mine.any(1)
        masked = np.where(mine, sims, -np.inf)
        best = masked.argmax(1)  # first (lowest-index) caption with the highest score among the image's own
        target = sims[np.arange(len(sims)), best][:, None]
        rank = ((sims > target) | ((sims == target) & (caps_of < best[:, None]))).sum(1)
        i2t_rank[s : s + chunk] = np.where(has, rank, np.iinfo(np.int64).max)
    out = {}
    for k in ks:
        out[f"t2i_R@{k}"] = float(100.0 * np.mean(t2i_rank < k)) if n_cap else 0.0
    for k in ks:
        out[f"i2t_R@{k}"] = float(100.0 * np.mean(i2t_rank < k)) if n_img else 0.0
    return out
