"""Reading and checking a composed checkpoint's config without torch: model id, weights hash."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from photosearch.model.config import CONFIG_FILE, WEIGHTS_FILE, DualEncoderConfig, read_json
from photosearch.model.errors import CheckpointCorruptError, CheckpointNotFoundError, WeightsHashMismatchError
from photosearch.model.weights import sha256_file


def compute_model_id(cfg: DualEncoderConfig) -> str:
    """Stable id: SHA-256 over the behaviour-defining config (which records every weights hash), 16 hex digits."""
    blob = json.dumps(cfg.identity_dict(), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def read_config(path: str | Path) -> DualEncoderConfig:
    path = Path(path)
    if not path.is_dir():
        raise CheckpointNotFoundError(f"{path} is not a folder; a model checkpoint is a folder with config.json")
    return DualEncoderConfig.from_dict(read_json(path / CONFIG_FILE))


def verified_config(path: str | Path) -> DualEncoderConfig:
    """The config, after checking the weights file against its recorded hash and the model id against both."""
    path = Path(path)
    cfg = read_config(path)
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointNotFoundError(f"{weights} is missing; the checkpoint is incomplete — re-export it")
    if cfg.weights_sha256 and sha256_file(weights) != cfg.weights_sha256:
        raise WeightsHashMismatchError(
            f"{weights} does not match the hash in config.json (file was changed or truncated); re-export or "
            "re-download the model"
        )
    if cfg.model_id and compute_model_id(cfg) != cfg.model_id:
        raise CheckpointCorruptError(
            f"{path / CONFIG_FILE} was edited after export (its model id no longer matches); re-export the model"
        )
    if not cfg.model_id:
        cfg.model_id = compute_model_id(cfg)
    return cfg


def checkpoint_kind(path: Path) -> str:
    """Tell what kind of checkpoint a directory holds from its config.json, without loading weights."""
    cfg = read_json(path / "config.json")
    if cfg.get("format") == "photosearch-checkpoint":
        return "dual_encoder"
    mt = cfg.get("model_type")
    if mt == "clip":
        return "hf_clip"
    if mt in ("siglip", "siglip2"):
        return "hf_siglip"
    return f"unknown:{mt}"
