"""Contrastive losses as modules consuming the model's features (the model never computes its own loss)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

MAX_LOGIT_SCALE = math.log(100.0)  # CLIP clamps the learned temperature at 1/100


class ClipLoss(nn.Module):
    """Symmetric InfoNCE over an (B, B) similarity matrix with a learnable, clamped temperature.

    ``groups`` (B,) marks pairs that share a caption: those off-diagonal pairs also count as positives, so two
    photos with the identical caption are not pushed apart.
    """

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
        logits = scale * image @ text.t()  # (B, B)
        if groups is None:
            target = torch.arange(len(image), device=image.device)
            return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
        pos = (groups[:, None] == groups[None, :]).to(logits.dtype)  # (B, B)
        pos = pos / pos.sum(-1, keepdim=True)
        i2t = -(pos * logits.log_softmax(-1)).sum(-1).mean()
        t2i = -(pos * logits.t().log_softmax(-1)).sum(-1).mean()
        return (i2t + t2i) / 2


class SigLipLoss(nn.Module):
    """Pairwise sigmoid loss (SigLIP) with learnable temperature and bias."""

    def forward(
        self, image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor, logit_bias: torch.Tensor
    ) -> torch.Tensor:
        image = F.normalize(image, dim=-1)
        text = F.normalize(text, dim=-1)
        logits = logit_scale.exp() * image @ text.t() + logit_bias  # (B, B)
        labels = 2 * torch.eye(len(image), device=image.device) - 1  # +1 on the diagonal, -1 elsewhere
        return -F.logsigmoid(labels * logits).sum() / len(image)
