"""The composed dual encoder: a timm image tower, a transformers text tower and projection heads.

Heads are picked by the config's ``type`` field through a registry (no string sniffing). The module returns
features; normalisation and losses live elsewhere (the encoder and ``training.losses``).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from photosearch.model.config import DualEncoderConfig, HeadConfig, ImageTowerConfig, TextTowerConfig
from photosearch.model.errors import CheckpointCorruptError
from photosearch.model.weights import load_state_dict_file, map_state_dict, resolve_source, verified_file

log = logging.getLogger(__name__)


class ImageTower(nn.Module):
    """timm backbone → pooled features (B, F) and, when ``num_classes`` > 0, classifier logits (B, C)."""

    def __init__(self, cfg: ImageTowerConfig, checkpoint_dir: Path | None = None, load_pretrained: bool = True):
        super().__init__()
        import timm

        self.cfg = cfg
        self.backbone = timm.create_model(cfg.arch, pretrained=False, num_classes=cfg.num_classes, **cfg.timm_kwargs)
        if cfg.weights is not None and load_pretrained:
            path = verified_file(cfg.weights, checkpoint_dir)
            sd = load_state_dict_file(path)
            target = self.backbone.state_dict()
            if cfg.weights.key_mapping == "position" and cfg.num_classes == 0:
                # the source includes a classifier the tower dropped: keep the first len(target) tensors
                sd = dict(list(sd.items())[: len(target)])
            sd = map_state_dict(sd, target, cfg.weights.key_mapping)
            missing, unexpected = self.backbone.load_state_dict(sd, strict=False)
            if missing:
                raise CheckpointCorruptError(f"image backbone weights {path} lack {len(missing)} tensors: {missing[:3]}")
            log.debug("image tower %s loaded from %s (%d unexpected keys)", cfg.arch, path, len(unexpected))
        if self.backbone.num_features != cfg.feature_dim:
            raise CheckpointCorruptError(
                f"{cfg.arch} pools {self.backbone.num_features} features, config says {cfg.feature_dim}"
            )

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = self.backbone.forward_features(pixels)  # (B, F, h, w) or (B, T, F)
        pooled = self.backbone.forward_head(x, pre_logits=True)  # (B, F)
        logits = self.backbone.get_classifier()(pooled) if self.cfg.num_classes else None  # (B, C)
        return pooled, logits


class TextTower(nn.Module):
    """transformers encoder with mean or CLS pooling → (B, F)."""

    def __init__(self, cfg: TextTowerConfig, checkpoint_dir: Path | None = None, load_pretrained: bool = True):
        super().__init__()
        from transformers import AutoConfig, AutoModel
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self.cfg = cfg
        if cfg.weights is not None:
            model_dir = resolve_source(cfg.weights, checkpoint_dir)
            if load_pretrained:
                verified_file(cfg.weights, checkpoint_dir)
                self.encoder = AutoModel.from_pretrained(str(model_dir), local_files_only=True)
            else:
                self.encoder = AutoModel.from_config(AutoConfig.from_pretrained(str(model_dir), local_files_only=True))
        elif cfg.hf_config is not None:
            hf = dict(cfg.hf_config)
            self.encoder = AutoModel.from_config(AutoConfig.for_model(hf.pop("model_type"), **hf))
        else:
            raise CheckpointCorruptError("text tower needs either 'weights' or 'hf_config'")
        hidden = self.encoder.config.hidden_size
        if hidden != cfg.feature_dim:
            raise CheckpointCorruptError(f"text encoder width {hidden} != config feature_dim {cfg.feature_dim}")

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, F)
        if self.cfg.pooling == "cls":
            return out[:, 0]
        mask = attention_mask.unsqueeze(-1).to(out.dtype)  # (B, T, 1)
        return (out * mask).sum(1) / mask.sum(1).clamp_min(1e-9)  # (B, F)


class IdentityHead(nn.Module):
    def __init__(self, cfg: HeadConfig):
        super().__init__()
        if cfg.in_dim != cfg.out_dim:
            raise CheckpointCorruptError(f"identity head needs in_dim == out_dim, got {cfg.in_dim} -> {cfg.out_dim}")

    def forward(self, x: torch.Tensor, logits: torch.Tensor | None = None) -> torch.Tensor:
        return x


class LinearHead(nn.Module):
    def __init__(self, cfg: HeadConfig):
        super().__init__()
        self.proj = nn.Linear(cfg.in_dim, cfg.out_dim)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, logits: torch.Tensor | None = None) -> torch.Tensor:
        return self.proj(self.drop(x))


class MLPHead(nn.Module):
    """The seeds' projection head: linear → GELU → linear, with a residual and LayerNorm."""

    def __init__(self, cfg: HeadConfig):
        super().__init__()
        hidden = cfg.hidden_dim or cfg.out_dim
        self.proj = nn.Linear(cfg.in_dim, cfg.out_dim)
        self.fc1 = nn.Linear(cfg.out_dim, hidden)
        self.fc2 = nn.Linear(hidden, cfg.out_dim)
        self.drop = nn.Dropout(cfg.dropout)
        self.norm = nn.LayerNorm(cfg.out_dim)

    def forward(self, x: torch.Tensor, logits: torch.Tensor | None = None) -> torch.Tensor:
        p = self.proj(x)
        return self.norm(p + self.drop(self.fc2(F.gelu(self.fc1(p)))))


class BridgeHead(nn.Module):
    """Classifier-probability bridge plus a learned residual from pooled features.

    out = scale · (top-k renormalised softmax(logits / T)) @ class_text  +  W · pooled
    ``class_text`` (C, D) holds text embeddings of the classifier's class names, so an untrained head is the
    training-free "ConSE" bridge and training only has to learn a correction.
    """

    def __init__(self, cfg: HeadConfig, num_classes: int):
        super().__init__()
        if num_classes <= 0:
            raise CheckpointCorruptError("a bridge head needs the image tower to keep its classifier (num_classes > 0)")
        self.top_k = min(cfg.top_k, num_classes)
        self.register_buffer("class_text", torch.zeros(num_classes, cfg.out_dim))  # (C, D)
        self.log_temperature = nn.Parameter(torch.tensor(math.log(cfg.temperature)))
        self.bridge_scale = nn.Parameter(torch.tensor(1.0))
        self.residual = nn.Linear(cfg.in_dim, cfg.out_dim)
        self.drop = nn.Dropout(cfg.dropout)
        nn.init.zeros_(self.residual.weight)
        nn.init.zeros_(self.residual.bias)

    def bridge(self, logits: torch.Tensor) -> torch.Tensor:
        probs = (logits / self.log_temperature.exp()).softmax(-1)  # (B, C)
        top, idx = probs.topk(self.top_k, dim=-1)  # (B, k)
        top = top / top.sum(-1, keepdim=True)
        return torch.einsum("bk,bkd->bd", top, F.embedding(idx, self.class_text))  # (B, D); a gather, faster than indexing

    def forward(self, x: torch.Tensor, logits: torch.Tensor | None = None) -> torch.Tensor:
        if logits is None:
            raise CheckpointCorruptError("bridge head called without classifier logits")
        return self.bridge_scale * self.bridge(logits) + self.residual(self.drop(x))


HEADS: dict[str, Callable[..., nn.Module]] = {
    "identity": lambda cfg, nc: IdentityHead(cfg),
    "linear": lambda cfg, nc: LinearHead(cfg),
    "mlp": lambda cfg, nc: MLPHead(cfg),
    "bridge": lambda cfg, nc: BridgeHead(cfg, nc),
}


def build_head(cfg: HeadConfig, num_classes: int = 0) -> nn.Module:
    if cfg.type not in HEADS:
        raise CheckpointCorruptError(f"unknown head type {cfg.type!r}; known: {sorted(HEADS)}")
    return HEADS[cfg.type](cfg, num_classes)


class DualEncoder(nn.Module):
    """Image tower + text tower + heads + learnable logit scale. Returns unnormalised embeddings."""

    def __init__(self, cfg: DualEncoderConfig, checkpoint_dir: Path | None = None, load_pretrained: bool = True):
        super().__init__()
        self.cfg = cfg
        self.image_tower = ImageTower(cfg.image, checkpoint_dir, load_pretrained)
        self.text_tower = TextTower(cfg.text, checkpoint_dir, load_pretrained)
        self.image_head = build_head(cfg.image_head, cfg.image.num_classes)
        self.text_head = build_head(cfg.text_head)
        self.logit_scale = nn.Parameter(torch.tensor(float(cfg.logit_scale)))

    def encode_image(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) → (embedding (B, D), visual (B, F)): the shared-space vector and the pooled backbone
        features (used for photo-to-photo similarity)."""
        pooled, logits = self.image_tower(pixels)
        return self.image_head(pooled, logits), pooled

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.text_head(self.text_tower(input_ids, attention_mask))  # (B, D)

    def head_state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors that are not provided by pretrained backbone sources (what a small checkpoint stores)."""
        sd = self.state_dict()
        skip = []
        if self.cfg.image.weights is not None:
            skip.append("image_tower.")
        if self.cfg.text.weights is not None:
            skip.append("text_tower.")
        return {k: v for k, v in sd.items() if not any(k.startswith(s) for s in skip)}
