"""Heads-only training on cached backbone features: epochs take seconds on a CPU.

The towers are frozen, so every photo's backbone output (one clean view plus augmented views) and every
caption's pooled text features are computed once. Each step samples one view per photo and one caption per
photo, runs only the projection heads and optimises the contrastive loss. Heads are kept near their
initialisation with an L2-SP penalty, which preserves what the initial heads knew (the ConSE bridge and the
identity text map) while they learn from a few hundred pairs.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from training.losses import ClipLoss

log = logging.getLogger(__name__)


@dataclass
class CachedPairs:
    """Frozen-tower outputs for a set of captioned photos."""

    pooled: np.ndarray  # (V, N, F) image pooled features, view 0 is the clean (un-augmented) view
    logits: np.ndarray  # (V, N, C) classifier logits (C may be 0)
    text: np.ndarray  # (T, Ft) pooled text features of every caption
    captions_of: list[list[int]]  # per photo, indices into ``text``
    groups: np.ndarray  # (N,) photos with an identical caption share a group id


@dataclass
class HeadTrainConfig:
    epochs: int = 60
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    l2sp: float = 0.1  # strength of the pull towards the initial head weights
    warmup_epochs: int = 3
    seed: int = 0
    train_temperature: bool = True
    clean_fraction: float | None = None  # share of steps on a photo's clean view (None: all views equally likely)


@dataclass
class History:
    loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    temperature: list[float] = field(default_factory=list)
    metrics: list[dict[str, float]] = field(default_factory=list)


class Heads(nn.Module):
    """The trainable part of a dual encoder: image head, text head, logit scale."""

    def __init__(self, image_head: nn.Module, text_head: nn.Module, logit_scale: nn.Parameter):
        super().__init__()
        self.image_head = image_head
        self.text_head = text_head
        self.logit_scale = logit_scale

    def image(self, pooled: torch.Tensor, logits: torch.Tensor | None) -> torch.Tensor:
        return self.image_head(pooled, logits if logits is not None and logits.shape[-1] else None)

    def text(self, feats: torch.Tensor) -> torch.Tensor:
        return self.text_head(feats)


def _lr_at(step: int, total: int, warmup: int, base: float) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1 + math.cos(math.pi * progress))


def train_heads(
    heads: Heads,
    data: CachedPairs,
    cfg: HeadTrainConfig,
    evaluate: Callable[[Heads], dict[str, float]] | None = None,
) -> History:
    """Train ``heads`` in place on cached features; ``evaluate`` is called after every epoch."""
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    loss_fn = ClipLoss()
    init = {n: p.detach().clone() for n, p in heads.named_parameters()}
    if not cfg.train_temperature:
        heads.logit_scale.requires_grad_(False)
    decay = [p for n, p in heads.named_parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for n, p in heads.named_parameters() if p.requires_grad and p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr
    )
    pooled = torch.from_numpy(np.asarray(data.pooled, dtype=np.float32))  # (V, N, F)
    logits = torch.from_numpy(np.asarray(data.logits, dtype=np.float32))  # (V, N, C)
    text = torch.from_numpy(np.asarray(data.text, dtype=np.float32))  # (T, Ft)
    groups = torch.from_numpy(np.asarray(data.groups))
    n_views, n = pooled.shape[:2]
    steps_per_epoch = max(1, math.ceil(n / cfg.batch_size))
    total = cfg.epochs * steps_per_epoch
    hist = History()
    step = 0
    for epoch in range(cfg.epochs):
        heads.train()
        order = rng.permutation(n)
        losses = []
        for b in range(steps_per_epoch):
            idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            if len(idx) < 2:
                continue
            if cfg.clean_fraction is None or n_views == 1:
                views = torch.from_numpy(rng.integers(0, n_views, len(idx)))
            else:
                augmented = rng.integers(1, n_views, len(idx))
                views = torch.from_numpy(np.where(rng.random(len(idx)) < cfg.clean_fraction, 0, augmented))
            caps = torch.tensor([data.captions_of[i][rng.integers(len(data.captions_of[i]))] for i in idx])
            idx_t = torch.from_numpy(idx)
            img = heads.image(pooled[views, idx_t], logits[views, idx_t])  # (B, D)
            txt = heads.text(text[caps])  # (B, D)
            loss = loss_fn(img, txt, heads.logit_scale, groups[idx_t])
            if cfg.l2sp:
                loss = loss + cfg.l2sp * sum(((p - init[name]) ** 2).sum() for name, p in heads.named_parameters()
                                             if p.requires_grad and name != "logit_scale")
            lr = _lr_at(step, total, cfg.warmup_epochs * steps_per_epoch, cfg.lr)
            for g in opt.param_groups:
                g["lr"] = lr
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            step += 1
        hist.loss.append(float(np.mean(losses)) if losses else float("nan"))
        hist.lr.append(lr)
        hist.temperature.append(float(1.0 / heads.logit_scale.detach().exp()))
        if evaluate is not None:
            heads.eval()
            hist.metrics.append(evaluate(heads))
        log.info("epoch %d loss %.4f %s", epoch + 1, hist.loss[-1], hist.metrics[-1] if hist.metrics else "")
    heads.eval()
    return hist


def snapshot(heads: Heads) -> Heads:
    return copy.deepcopy(heads)
