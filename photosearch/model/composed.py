"""Saving and loading composed dual-encoder checkpoints (config.json + model.safetensors, never pickle)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch

from photosearch.model.composed_config import compute_model_id, read_config, verified_config  # noqa: F401
from photosearch.model.config import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    DualEncoderConfig,
    TextTowerConfig,
    WeightsSource,
)
from photosearch.model.encoder import EmbeddingModel, ModelInfo, Tokenizer, pick_device
from photosearch.model.errors import CheckpointCorruptError
from photosearch.model.towers import DualEncoder, ImageTower, build_head
from photosearch.model.weights import load_state_dict_file, resolve_source, sha256_file

log = logging.getLogger(__name__)
TOKENIZER_DIR = "tokenizer"


def make_tokenizer(cfg: TextTowerConfig, checkpoint_dir: Path | None = None) -> Tokenizer:
    """A callable turning a list of strings into input_ids / attention_mask tensors."""
    from transformers import AutoTokenizer

    src = cfg.tokenizer or cfg.weights
    if src is None:
        raise CheckpointCorruptError("the text tower names no tokenizer (text.tokenizer or text.weights)")
    tok = AutoTokenizer.from_pretrained(str(resolve_source(src, checkpoint_dir)), local_files_only=True)

    def tokenize(texts: list[str]) -> dict[str, torch.Tensor]:
        enc = tok(texts, padding=True, truncation=True, max_length=cfg.max_length, return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    tokenize.tokenizer = tok  # type: ignore[attr-defined]
    return tokenize


def _atomic_replace_dir(tmp: Path, out_dir: Path) -> None:
    if out_dir.exists():
        old = out_dir.with_name(out_dir.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)


def save_checkpoint(
    model: DualEncoder,
    out_dir: str | Path,
    *,
    include_towers: bool = False,
    tokenizer: Tokenizer | None = None,
    training: dict | None = None,
) -> DualEncoderConfig:
    """Write ``model`` as a checkpoint directory, atomically. Returns the saved config (with model_id).

    With ``include_towers`` the towers' weights go into model.safetensors (a fine-tuned model); otherwise only
    the heads do and the towers keep referring to their pretrained, hash-verified sources.
    """
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    cfg = dataclasses.replace(model.cfg)
    tmp = Path(tempfile.mkdtemp(prefix=out_dir.name + ".", dir=out_dir.parent))
    try:
        if include_towers:
            text = model.text_tower.encoder.config.to_dict()
            keep = {k: v for k, v in text.items() if isinstance(v, (int, float, str, bool, type(None)))}
            keep["model_type"] = text["model_type"]
            for k in ("_name_or_path", "transformers_version", "architectures", "torch_dtype", "dtype"):
                keep.pop(k, None)
            if tokenizer is None or not hasattr(tokenizer, "tokenizer"):
                raise ValueError("include_towers=True needs the model's tokenizer to save beside the weights")
            tokenizer.tokenizer.save_pretrained(str(tmp / TOKENIZER_DIR))  # type: ignore[attr-defined]
            cfg.image = dataclasses.replace(cfg.image, weights=None)
            cfg.text = dataclasses.replace(
                cfg.text, weights=None, hf_config=keep, tokenizer=WeightsSource(kind="checkpoint", location=TOKENIZER_DIR)
            )
            tensors = model.state_dict()
        else:
            tensors = model.head_state_dict()
            tok_src = cfg.text.tokenizer
            if tok_src is not None and tok_src.kind == "checkpoint":
                if tokenizer is None or not hasattr(tokenizer, "tokenizer"):
                    raise ValueError("this model keeps its tokenizer in the checkpoint: pass tokenizer=")
                tokenizer.tokenizer.save_pretrained(str(tmp / tok_src.location))  # type: ignore[attr-defined]
        tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        cfg.weights_sha256 = sha256_file(tmp / WEIGHTS_FILE)
        if training is not None:
            cfg.training = training
        cfg.model_id = compute_model_id(cfg)
        (tmp / CONFIG_FILE).write_text(json.dumps(cfg.to_dict(), indent=2) + "\n", encoding="utf-8")
        _atomic_replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("saved %s (model id %s) to %s", cfg.name, cfg.model_id, out_dir)
    return cfg


def _load_weights(module: torch.nn.Module, path: Path, cfg: DualEncoderConfig, keep: tuple[str, ...] = ()) -> None:
    """Fill ``module`` from the checkpoint's weights file (only the tensors under ``keep`` prefixes, when given).
    Towers with a pretrained source were loaded from it already; every other tensor must be in the file."""
    weights = path / WEIGHTS_FILE
    sd = load_state_dict_file(weights)
    if keep:
        sd = {k: v for k, v in sd.items() if k.startswith(keep)}
    sourced = tuple(p for p, src in (("image_tower.", cfg.image.weights), ("text_tower.", cfg.text.weights)) if src)
    missing = sorted(k for k in module.state_dict() if not k.startswith(sourced) and k not in sd)
    if missing:
        raise CheckpointCorruptError(f"{weights} lacks {len(missing)} tensors (e.g. {missing[:3]}); re-export it")
    try:
        module.load_state_dict(sd, strict=False)
    except RuntimeError as e:
        raise CheckpointCorruptError(f"{weights} does not fit the architecture in config.json: {e}") from e


def load_dual_encoder_module(path: str | Path) -> tuple[DualEncoder, DualEncoderConfig]:
    """Build the torch module of a composed checkpoint, verifying every hash on the way."""
    path = Path(path)
    cfg = verified_config(path)
    module = DualEncoder(cfg, checkpoint_dir=path)
    _load_weights(module, path, cfg)
    return module.eval(), cfg


class ImageSide(torch.nn.Module):
    """The image half of a composed model (tower + head), without the text tower: what heatmaps need."""

    def __init__(self, cfg: DualEncoderConfig, checkpoint_dir: Path):
        super().__init__()
        self.cfg = cfg
        self.image_tower = ImageTower(cfg.image, checkpoint_dir)
        self.image_head = build_head(cfg.image_head, cfg.image.num_classes)

    def encode_image(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled, logits = self.image_tower(pixels)
        return self.image_head(pooled, logits), pooled


def load_image_side(path: str | Path) -> ImageSide:
    """Only the image tower and head of a composed checkpoint (hashes verified): about half the load time of
    the whole model, since the text tower is never built."""
    path = Path(path)
    cfg = verified_config(path)
    module = ImageSide(cfg, path)
    _load_weights(module, path, cfg, keep=("image_tower.", "image_head."))
    return module.eval()


def load_dual_encoder(path: str | Path, device: str | torch.device | None = "auto") -> EmbeddingModel:
    path = Path(path)
    module, cfg = load_dual_encoder_module(path)
    info = ModelInfo(
        model_id=cfg.model_id or compute_model_id(cfg),
        name=cfg.name,
        kind="dual_encoder",
        embed_dim=cfg.embed_dim,
        visual_dim=cfg.image.feature_dim,
        path=str(path),
    )
    return EmbeddingModel(module, make_tokenizer(cfg.text, path), cfg.preprocess, info, pick_device(device))
