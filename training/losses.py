"""Contrastive losses as modules consuming the model's features (the model never computes its own loss).

Both losses work on one process and across data-parallel processes. Distributed, every rank's features are
all-gathered *with gradients* (:func:`gather_features`) and each rank computes the "local loss" of open_clip: its
own B rows against all W·B gathered columns. Why that is exact under DDP (gradient averaging over W ranks):

- ClipLoss: rank r's loss is the mean over its B rows (image→text) and over its B text rows (text→image), each
  row a cross-entropy over all W·B candidates. The mean of the W rank losses is the mean over all W·B rows, which
  is the single-process loss L on the full batch. The gather's backward sums, onto each rank's own features, the
  gradients that every rank's loss sends them, so rank q holds d(Σ_r loss_r)/dθ through its features; DDP's
  average (1/W)·Σ_q of that is dL/dθ. The logit scale is replicated, each rank holds d loss_r/d scale, and the
  average is again dL/dscale. So no extra scaling is needed. With ``groups`` (pairs sharing a caption are all
  positives) the groups are gathered too and each row's positives are normalised over all W·B columns, so the
  same argument holds row by row.
- SigLipLoss: the full-batch loss is (1/N)·Σ over all N×N pairs. Rank r sums its B image rows against all N
  gathered texts and divides by its local B; the mean over ranks is (1/(W·B))·Σ over all pairs = L, each pair
  counted once. Only the texts need gathering.

Every rank must pass the same batch size (the gather concatenates equal-sized pieces; DDP samplers drop or pad
the last batch). ``tests/test_losses.py`` runs 2 gloo processes under DDP and checks loss and gradients against a
single process on the full batch.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

MAX_LOGIT_SCALE = math.log(100.0)  # CLIP clamps the learned temperature at 1/100

CLIP_INIT_LOGIT_SCALE = math.log(1 / 0.07)  # CLIP: temperature 0.07
SIGLIP_INIT_LOGIT_SCALE = math.log(10.0)  # SigLIP paper: t' = log 10
SIGLIP_INIT_LOGIT_BIAS = -10.0  # SigLIP paper: b = -10


def is_distributed() -> bool:
    """True when a default process group is initialised with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _GatherWithGrad(torch.autograd.Function):
    """all_gather along dim 0; backward sums every rank's gradient for this rank's slice (a reduce-scatter)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        world, rank = dist.get_world_size(), dist.get_rank()
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x)
        ctx.rank, ctx.world, ctx.n = rank, world, x.shape[0]
        return torch.cat(parts)  # (W*B, ...)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous()
        if dist.get_backend() == dist.Backend.NCCL:
            out = torch.empty_like(grad[: ctx.n])
            dist.reduce_scatter_tensor(out, grad, op=dist.ReduceOp.SUM)
            return out
        # gloo has no reduce-scatter: all-reduce the whole gradient and keep this rank's slice
        total = grad.clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n]


@torch.compiler.disable  # collectives run eagerly: a compiled loss or step breaks its graph here
def gather_features(x: torch.Tensor) -> torch.Tensor:
    """All-gather ``x`` (B, ...) → (W·B, ...) across the default process group, keeping gradients.

    Rank r's rows sit at ``r*B:(r+1)*B``. Gradients flowing into the result are summed over ranks and handed to
    each rank's own ``x``. Returns ``x`` itself when not distributed.
    """
    if not is_distributed():
        return x
    return _GatherWithGrad.apply(x)


@torch.compiler.disable
def _gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    if not is_distributed():
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def _offset(batch: int) -> int:
    """Where this rank's rows sit among the gathered ones."""
    return dist.get_rank() * batch if is_distributed() else 0


def init_logit_params(kind: str) -> tuple[nn.Parameter, nn.Parameter | None]:
    """Initial (log) logit scale and bias: ``clip`` → (log(1/0.07), None); ``siglip`` → (log 10, -10)."""
    if kind == "clip":
        return nn.Parameter(torch.tensor(CLIP_INIT_LOGIT_SCALE)), None
    if kind == "siglip":
        return nn.Parameter(torch.tensor(SIGLIP_INIT_LOGIT_SCALE)), nn.Parameter(torch.tensor(SIGLIP_INIT_LOGIT_BIAS))
    raise ValueError(f"unknown loss kind {kind!r}; known: 'clip', 'siglip'")


def _group_targets(groups_rows: torch.Tensor, groups_cols: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    pos = (groups_rows[:, None] == groups_cols[None, :]).to(dtype)  # (B, N)
    return pos / pos.sum(-1, keepdim=True)


class ClipLoss(nn.Module):
    """Symmetric InfoNCE over an (B, B) similarity matrix with a learnable, clamped temperature.

    ``groups`` (B,) marks pairs that share a caption: those off-diagonal pairs also count as positives, so two
    photos with the identical caption are not pushed apart. ``logit_scale`` is the log of the inverse
    temperature, clamped at ``MAX_LOGIT_SCALE``.

    ``distributed`` None: on when a process group with more than one rank is initialised (decided per call).
    ``local_loss`` (distributed only): each rank's own rows against all gathered columns, as open_clip does; off,
    every rank computes the full (W·B, W·B) loss (same value and, after DDP averaging, same gradients; W× the work).
    """

    def __init__(self, local_loss: bool = True, distributed: bool | None = None):
        super().__init__()
        self.local_loss = local_loss
        self.distributed = distributed

    def forward(
        self,
        image: torch.Tensor,
        text: torch.Tensor,
        logit_scale: torch.Tensor,
        groups: torch.Tensor | None = None,
    ) -> torch.Tensor:
        image = F.normalize(image, dim=-1)  # (B, D)
        text = F.normalize(text, dim=-1)  # (B, D)
        scale = logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()
        distributed = is_distributed() if self.distributed is None else self.distributed
        if distributed:
            return self._distributed(image, text, scale, groups)
        logits = scale * image @ text.t()  # (B, B)
        if groups is None:
            target = torch.arange(len(image), device=image.device)
            return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
        pos = (groups[:, None] == groups[None, :]).to(logits.dtype)  # (B, B)
        pos = pos / pos.sum(-1, keepdim=True)
        i2t = -(pos * logits.log_softmax(-1)).sum(-1).mean()
        t2i = -(pos * logits.t().log_softmax(-1)).sum(-1).mean()
        return (i2t + t2i) / 2

    def _distributed(
        self, image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor, groups: torch.Tensor | None
    ) -> torch.Tensor:
        all_image, all_text = gather_features(image), gather_features(text)  # (N, D), N = W*B
        all_groups = _gather_no_grad(groups) if groups is not None else None
        if self.local_loss:
            b, offset = len(image), _offset(len(image))
            per_image = scale * image @ all_text.t()  # (B, N): local images vs all texts
            per_text = scale * text @ all_image.t()  # (B, N): local texts vs all images
            if groups is None:
                target = torch.arange(offset, offset + b, device=image.device)
                return (F.cross_entropy(per_image, target) + F.cross_entropy(per_text, target)) / 2
            pos = _group_targets(groups, all_groups, per_image.dtype)  # (B, N), symmetric relation
            i2t = -(pos * per_image.log_softmax(-1)).sum(-1).mean()
            t2i = -(pos * per_text.log_softmax(-1)).sum(-1).mean()
            return (i2t + t2i) / 2
        # full loss on every rank: no distributed-only code below, the single-process formula on gathered features
        logits = scale * all_image @ all_text.t()  # (N, N)
        if all_groups is None:
            target = torch.arange(len(all_image), device=image.device)
            return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
        pos = _group_targets(all_groups, all_groups, logits.dtype)
        i2t = -(pos * logits.log_softmax(-1)).sum(-1).mean()
        t2i = -(pos * logits.t().log_softmax(-1)).sum(-1).mean()
        return (i2t + t2i) / 2


class SigLipLoss(nn.Module):
    """Pairwise sigmoid loss (SigLIP) with learnable temperature and bias: -Σ_ij log σ(y_ij (s·x_i·t_j + b)) / B.

    ``logit_scale`` is the log of the scale (clamped at ``MAX_LOGIT_SCALE``), ``logit_bias`` the bias;
    ``init_logit_params("siglip")`` gives the paper's start (log 10, -10). Distributed: local images against all
    gathered texts, divided by the local batch size (see the module docstring).
    """

    def __init__(self, distributed: bool | None = None):
        super().__init__()
        self.distributed = distributed

    def forward(
        self, image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor, logit_bias: torch.Tensor
    ) -> torch.Tensor:
        image = F.normalize(image, dim=-1)
        text = F.normalize(text, dim=-1)
        scale = logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()
        distributed = is_distributed() if self.distributed is None else self.distributed
        b = len(image)
        if distributed:
            all_text = gather_features(text)  # (N, D)
            offset = _offset(b)
            logits = scale * image @ all_text.t() + logit_bias  # (B, N)
            labels = -torch.ones_like(logits)
            labels[:, offset : offset + b] += 2 * torch.eye(b, device=image.device, dtype=logits.dtype)
        else:
            logits = scale * image @ text.t() + logit_bias  # (B, B)
            labels = 2 * torch.eye(b, device=image.device) - 1  # +1 on the diagonal, -1 elsewhere
        return -F.logsigmoid(labels * logits).sum() / b
