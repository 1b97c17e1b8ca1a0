"""Inference core: load a checkpoint and turn photos and texts into L2-normalised vectors in one space.

    model = load_model("default")            # or a checkpoint folder, or a Hugging Face CLIP/SigLIP folder
    text = model.encode_texts(["a cat"])     # (1, D) float32
    photos = model.encode_images(["a.jpg"])  # (1, D) float32
    scores = photos @ text.T                 # cosine similarities
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# photosearch works offline: never let transformers reach for a model hub (a user can still set this to 0)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from typing import TYPE_CHECKING

from photosearch.model.errors import (
    BackboneUnavailableError,
    CheckpointCorruptError,
    CheckpointNotFoundError,
    ImageDecodeError,
    ModelError,
    UnsupportedCheckpointError,
    WeightsHashMismatchError,
)
from photosearch.model.vectors import l2_normalize

if TYPE_CHECKING:
    import torch

    from photosearch.model.encoder import EmbeddingModel

_LAZY = {"EmbeddingModel", "ModelInfo", "pick_device"}


from photosearch.model.composed_config import checkpoint_kind


def __getattr__(name: str):
    """torch-backed names load on first use, so importing photosearch (and opening the window) stays fast."""
    if name in _LAZY:
        from photosearch.model import encoder

        return getattr(encoder, name)
    raise AttributeError(name)

__all__ = [
    "BackboneUnavailableError",
    "CheckpointCorruptError",
    "CheckpointNotFoundError",
    "EmbeddingModel",
    "ImageDecodeError",
    "ModelError",
    "ModelInfo",
    "UnsupportedCheckpointError",
    "WeightsHashMismatchError",
    "default_model_dir",
    "installed_models",
    "l2_normalize",
    "load_model",
    "pick_device",
    "resolve_model_path",
    "torch_available",
    "user_models_dir",
]


def resources_dir() -> Path:
    """The app's shipped resources: $PHOTOSEARCH_RESOURCES, the PyInstaller bundle, or the source tree."""
    if os.environ.get("PHOTOSEARCH_RESOURCES"):
        return Path(os.environ["PHOTOSEARCH_RESOURCES"])
    if getattr(sys, "frozen", False) and hasattr(sys, "_MEIPASS"):
        return Path(sys._MEIPASS) / "resources"  # type: ignore[attr-defined]
    return Path(__file__).resolve().parents[2] / "resources"


def default_model_dir() -> Path:
    return resources_dir() / "models" / "default"


def user_models_dir() -> Path:
    """Where ``python -m training export`` puts models by default; the app lists them in its settings.

    $PHOTOSEARCH_MODELS overrides it (tests, portable installs).
    """
    if os.environ.get("PHOTOSEARCH_MODELS"):
        return Path(os.environ["PHOTOSEARCH_MODELS"])
    from platformdirs import user_data_dir

    return Path(user_data_dir("photosearch", appauthor=False)) / "models"


def installed_models() -> list[tuple[str, Path]]:
    """(name, folder) of every model folder under :func:`user_models_dir` and the shipped ``resources/models``.

    A folder counts when it has a ``config.json``; the shipped default comes first, then the others by name.
    """
    found: dict[str, Path] = {}
    for root in (resources_dir() / "models", user_models_dir()):
        if root.is_dir():
            for d in sorted(root.iterdir()):
                if d.is_dir() and (d / "config.json").is_file():
                    found.setdefault(d.name, d)
    return sorted(found.items(), key=lambda kv: (kv[0] != "default", kv[0].lower()))


def resolve_model_path(name_or_dir: str | Path | None) -> Path:
    """'default' (or None) → the shipped model; a name of a folder under resources/models or
    :func:`user_models_dir`; else a folder path."""
    if name_or_dir in (None, "", "default"):
        return default_model_dir()
    p = Path(name_or_dir).expanduser()
    if p.is_dir():
        return p
    shipped = resources_dir() / "models" / str(name_or_dir)
    if shipped.is_dir():
        return shipped
    exported = user_models_dir() / str(name_or_dir)
    if exported.is_dir():
        return exported
    if any(sep in str(name_or_dir) for sep in ("/", "\\")) or str(name_or_dir).startswith((".", "~")):
        raise CheckpointNotFoundError(f"The model folder {p} does not exist")
    raise CheckpointNotFoundError(
        f"No model called {str(name_or_dir)!r}: give 'default' or a folder containing a photosearch checkpoint or a "
        "Hugging Face CLIP/SigLIP save_pretrained() folder"
    )


def load_model(
    name_or_dir: str | Path | None = "default",
    device: str | torch.device | None = "auto",
    image_backend: str = "auto",
) -> EmbeddingModel:
    """Load a model by name or folder. ``image_backend``: "torch", "onnx" (ONNX Runtime, CPU) or "auto"
    (ONNX Runtime on CPU when it is installed and proven equal to torch, else torch)."""
    path = resolve_model_path(name_or_dir)
    if not path.is_dir():
        raise CheckpointNotFoundError(
            f"The model folder {path} does not exist. For the shipped model, run `make model` from the source tree."
        )
    if image_backend in ("auto", "onnx") and str(device) in ("auto", "cpu", "None") and not _cuda_present(device):
        from photosearch.model.onnx_model import try_load_onnx_only

        fast = try_load_onnx_only(path)  # verified ONNX exports of this checkpoint: no torch needed at all
        if fast is not None:
            return fast
    if not torch_available():
        raise ModelError(
            f"The model in {path} needs PyTorch, which this build of photosearch does not include: it runs only "
            "models shipped with ONNX exports (the default model). Choose the default model in Settings, or use "
            "the GPU build or a source install (pip install photosearch) for other models."
        )
    kind = checkpoint_kind(path)
    if kind == "dual_encoder":
        from photosearch.model.composed import load_dual_encoder

        model = load_dual_encoder(path, device)
    elif kind in ("hf_clip", "hf_siglip"):
        from photosearch.model.hf import load_hf_model

        model = load_hf_model(path, device)
    else:
        raise UnsupportedCheckpointError(
            f"{path} holds a {kind.split(':', 1)[-1]!r} model; photosearch loads its own checkpoints and Hugging Face "
            "CLIP or SigLIP folders (save_pretrained)"
        )
    if image_backend != "torch" and model.device.type == "cpu":
        from photosearch.model.fastpath import enable_onnx, enable_onnx_text

        if enable_onnx(model, required=image_backend == "onnx"):
            enable_onnx_text(model)  # prepares the torch-free start for next time
    return model


def torch_available() -> bool:
    """Whether torch can be imported (the CPU installer bundle leaves it out), without importing it."""
    import importlib.util

    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


def _cuda_present(device) -> bool:
    """Whether "auto" would pick a GPU, without importing torch (a GPU machine takes the torch path)."""
    if str(device) == "cpu":
        return False
    return os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidiactl")
