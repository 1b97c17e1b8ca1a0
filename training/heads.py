"""Heads-only training on cached backbone features: epochs take seconds on a CPU.

The towers are frozen, so every photo's backbone output (one clean view plus augmented views) and every
caption's pooled text features are computed once. Each step samples one view per photo and one caption per
photo, runs only the projection heads and optimises the contrastive loss. Heads are kept near their
initialisation with an L2-SP penalty, which preserves what the initial heads knew (the ConSE bridge and the
identity text map) while they learn from a few hundred pairs.
"""

from __future__ import annotations

import copy
import functools
import logging
import math
import time
import warnings
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
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
    epoch_seconds: list[float] = field(default_factory=list)  # the training steps of each epoch (no evaluation)
    setup_seconds: float = 0.0  # before the first step: optimiser, feature arrays


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


def _rows(a: np.ndarray) -> torch.Tensor:
    """A tensor over ``a`` reshaped to rows (..., F) → (R, F), without copying float16/float32 arrays.

    Memory-mapped cache files stay on disk (rows are read and widened to float32 per batch, which gives the same
    values as converting everything up front: float16 → float32 is exact); other dtypes become float32 once.
    """
    if a.dtype not in (np.float16, np.float32):
        a = np.asarray(a, dtype=np.float32)
    a = a.reshape(-1, a.shape[-1]) if a.ndim != 2 else a
    with warnings.catch_warnings():  # read-only memory maps: the tensor is only ever read
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(a)


def _take(rows: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    out = rows.index_select(0, index)
    return out if out.dtype == torch.float32 else out.float()


@torch.no_grad()
def _add_l2sp_grad(params: list[tuple[str, nn.Parameter]], init: dict[str, torch.Tensor], strength: float) -> torch.Tensor:
    """L2-SP: add the gradient of ``strength · Σ ‖p − p₀‖²`` to each ``p.grad`` and return the penalty's value.

    Bit for bit what autograd gives for ``loss + strength * sum(((p - p0) ** 2).sum() ...)``: its gradient is
    ``fl(s) · (2 · (p − p₀))`` (PowBackward with the upstream scalar ``1 · strength`` in the parameter's dtype),
    added once to the loss's gradient (one rounding, commutative), and the value is summed in the same order. Done
    by hand it skips autograd's multiply by a broadcast scalar, which cost more than the rest of the step's L2-SP.
    """
    total = 0
    for name, p in params:
        d = p - init[name]
        total = total + (d**2).sum()
        g = (torch.ones((), dtype=d.dtype) * strength) * (2.0 * d)
        if p.grad is None:
            p.grad = g
        else:
            p.grad.add_(g)
    return strength * total


DROPOUT_AHEAD = True  # draw the next step's dropout masks in a background thread (bit-identical; see _DropoutAhead)


@functools.cache
def _dropout_is_bernoulli_noise() -> bool:
    """Whether this torch's CPU dropout is ``x * empty_like(x).bernoulli_(1 - p).div_(1 - p)``, values and
    gradients, drawing from the global generator (checked once, on a forked generator state)."""
    with torch.random.fork_rng(devices=[]):
        x = torch.linspace(-1, 1, 300).reshape(10, 30).requires_grad_()
        g = torch.linspace(0.5, 2, 300).reshape(10, 30)
        torch.manual_seed(12345)
        a = F.dropout(x, 0.3, True)
        a.backward(g)
        grad_a, x.grad = x.grad, None
        torch.manual_seed(12345)
        b = x * torch.empty_like(x).bernoulli_(1 - 0.3).div_(1 - 0.3)
        b.backward(g)
        return torch.equal(a, b) and torch.equal(grad_a, x.grad)


class _DropoutAhead:
    """Draws every training step's dropout masks one step ahead, in a background thread.

    CPU dropout's Bernoulli draws run serially and cost about a quarter of a heads step (the bridge head drops half
    of 256×1280 inputs). Here each dropout module's forward takes the mask drawn for it: the draws use the same
    global generator, the same calls, in the same order — a step's own masks are drawn before the next step's are
    started and nothing else in a step draws random numbers — so the masks, and the trained heads, are bit-identical
    to plain dropout. The first step runs plain dropout and records the calls (module, shape); a module tree with
    anything but the known heads and plain layers, or a torch whose dropout is not the expected noise, is left alone.
    Nothing is drawn ahead across an epoch's end: the evaluation callback runs in between.
    """

    def __init__(self, drops: list[nn.Dropout]):
        self.drops = drops
        self.plan: list[tuple[int, tuple[int, ...], torch.dtype, float]] | None = None  # one step's calls
        self.recording: list[tuple[int, tuple[int, ...], torch.dtype, float]] | None = None
        self.current: deque | None = None  # this step's masks, in call order
        self.pending: Future | None = None  # the next step's masks
        self.sizes: deque[int] = deque()  # batch sizes of the steps still to run in this epoch
        self.disabled = False
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="dropout-ahead")
        for i, m in enumerate(drops):
            m.forward = functools.partial(self._forward, i, m)  # instance attribute: restored by close()

    @classmethod
    def attach(cls, heads: nn.Module) -> _DropoutAhead | None:
        from photosearch.model.towers import BridgeHead, IdentityHead, LinearHead, MLPHead

        known = (Heads, BridgeHead, IdentityHead, LinearHead, MLPHead, nn.Linear, nn.LayerNorm, nn.Dropout,
                 nn.Identity, nn.GELU, nn.ReLU)
        if not DROPOUT_AHEAD or any(type(m) not in known for m in heads.modules()):
            return None
        drops = [m for m in heads.modules() if type(m) is nn.Dropout and m.p > 0 and not m.inplace]
        if not drops or not _dropout_is_bernoulli_noise():
            return None
        return cls(drops)

    def _forward(self, i: int, m: nn.Dropout, x: torch.Tensor) -> torch.Tensor:
        if not m.training or self.current is None:
            if self.recording is not None and m.training:
                self.recording.append((i, tuple(x.shape), x.dtype, m.p))
            return F.dropout(x, m.p, m.training, m.inplace)
        j, noise = self.current.popleft()
        if j != i or noise.shape != x.shape or noise.dtype != x.dtype:
            raise RuntimeError("dropout calls differ from the first training step's; masks drawn ahead do not fit")
        return x * noise.div_(1 - m.p)

    def _draw(self, batch: int) -> deque:
        return deque((i, torch.empty((batch, *rest), dtype=dtype).bernoulli_(1 - p)) for i, rest, dtype, p in self.plan)

    def start_epoch(self, sizes: list[int]) -> None:
        self.sizes = deque(sizes)

    def before_step(self) -> None:
        batch = self.sizes.popleft()
        if self.disabled:
            return
        if self.plan is None:
            self.recording = []
            return
        self.current = self.pending.result() if self.pending is not None else self._draw(batch)
        self.pending = self.pool.submit(self._draw, self.sizes[0]) if self.sizes else None

    def after_forward(self, batch: int) -> None:
        if self.recording is not None:  # the first step ran plain dropout: learn its calls
            rec, self.recording = self.recording, None
            if not rec or any(shape[0] != batch for _, shape, _, _ in rec):
                self.disabled = True
                return
            self.plan = [(i, shape[1:], dtype, p) for i, shape, dtype, p in rec]
            self.pending = self.pool.submit(self._draw, self.sizes[0]) if self.sizes else None
        elif self.current is not None:
            if self.current:
                raise RuntimeError("fewer dropout calls than in the first training step; masks drawn ahead are unused")
            self.current = None

    def close(self) -> None:
        if self.pending is not None:
            self.pending.result()
        self.pool.shutdown()
        for m in self.drops:
            del m.forward


def train_heads(
    heads: Heads,
    data: CachedPairs,
    cfg: HeadTrainConfig,
    evaluate: Callable[[Heads], dict[str, float]] | None = None,
) -> History:
    """Train ``heads`` in place on cached features; ``evaluate`` is called after every epoch."""
    t_start = time.perf_counter()
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    loss_fn = ClipLoss()
    init = {n: p.detach().clone() for n, p in heads.named_parameters()}
    anchored = [(n, p) for n, p in heads.named_parameters() if p.requires_grad and n != "logit_scale"]  # L2-SP
    if not cfg.train_temperature:
        heads.logit_scale.requires_grad_(False)
    decay = [p for n, p in heads.named_parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for n, p in heads.named_parameters() if p.requires_grad and p.ndim < 2]
    # foreach: the same kernels in the same order as the default per-tensor loop (bit-identical), with far less
    # per-call overhead on a CPU (3 ms instead of 8 ms a step for the default heads)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr,
        foreach=True,
    )
    n_views, n = data.pooled.shape[:2]
    pooled = _rows(data.pooled)  # (V*N, F): row v*N + i is view v of photo i
    logits = _rows(data.logits) if data.logits.shape[-1] else None  # (V*N, C)
    text = _rows(data.text)  # (T, Ft)
    groups = torch.from_numpy(np.asarray(data.groups))
    n_captions = np.array([len(c) for c in data.captions_of])
    first_caption = np.array([c[0] for c in data.captions_of])
    steps_per_epoch = max(1, math.ceil(n / cfg.batch_size))
    total = cfg.epochs * steps_per_epoch
    hist = History()
    step = 0
    ahead = _DropoutAhead.attach(heads)
    try:
        for epoch in range(cfg.epochs):
            heads.train()
            t_epoch = time.perf_counter()
            if epoch == 0:
                hist.setup_seconds = t_epoch - t_start
            order = rng.permutation(n)
            losses = []
            if ahead is not None:
                sizes = [len(order[b * cfg.batch_size : (b + 1) * cfg.batch_size]) for b in range(steps_per_epoch)]
                ahead.start_epoch([k for k in sizes if k >= 2])
            for b in range(steps_per_epoch):
                idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
                if len(idx) < 2:
                    continue
                if cfg.clean_fraction is None or n_views == 1:
                    views = rng.integers(0, n_views, len(idx))
                else:
                    augmented = rng.integers(1, n_views, len(idx))
                    views = np.where(rng.random(len(idx)) < cfg.clean_fraction, 0, augmented)
                # one caption per photo: the same draws as rng.integers(len(captions)) photo by photo (a range of
                # one draws nothing), vectorised
                pick = rng.integers(0, n_captions[idx])
                caps = first_caption[idx]
                multi = n_captions[idx] > 1
                if multi.any():
                    caps = caps.copy()
                    caps[multi] = [data.captions_of[i][k] for i, k in zip(idx[multi], pick[multi])]
                idx_t = torch.from_numpy(idx)
                rows = torch.from_numpy(views * n + idx)
                if ahead is not None:
                    ahead.before_step()
                img = heads.image(_take(pooled, rows), _take(logits, rows) if logits is not None else None)  # (B, D)
                txt = heads.text(_take(text, torch.from_numpy(caps)))  # (B, D)
                if ahead is not None:
                    ahead.after_forward(len(idx))
                loss = loss_fn(img, txt, heads.logit_scale, groups.index_select(0, idx_t))
                lr = _lr_at(step, total, cfg.warmup_epochs * steps_per_epoch, cfg.lr)
                for g in opt.param_groups:
                    g["lr"] = lr
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.l2sp:
                    loss = loss.detach() + _add_l2sp_grad(anchored, init, cfg.l2sp)
                opt.step()
                losses.append(float(loss.detach()))
                step += 1
            end_epoch(heads, hist, epoch, t_epoch, losses, lr, evaluate)
    finally:
        if ahead is not None:
            ahead.close()
    heads.eval()
    return hist


def end_epoch(heads: Heads, hist: History, epoch: int, t_epoch: float, losses: list[float], lr: float,
              evaluate=None) -> None:
    """An epoch's bookkeeping: time, mean loss, learning rate, temperature, the evaluation (if any), a log line."""
    hist.epoch_seconds.append(time.perf_counter() - t_epoch)
    hist.loss.append(float(np.mean(losses)) if losses else float("nan"))
    hist.lr.append(lr)
    hist.temperature.append(float(1.0 / heads.logit_scale.detach().exp()))
    if evaluate is not None:
        heads.eval()
        hist.metrics.append(evaluate(heads))
    log.info("epoch %d loss %.4f %s", epoch + 1, hist.loss[-1], hist.metrics[-1] if hist.metrics else "")


def snapshot(heads: Heads) -> Heads:
    return copy.deepcopy(heads)
