"""Checkpoint configuration: the architecture is data, serialised into every checkpoint's config.json.

A photosearch checkpoint is a directory holding ``config.json`` (this module's :class:`DualEncoderConfig`)
and ``model.safetensors`` (every tensor that does not come from a pretrained backbone source).
Pretrained backbones are referenced by :class:`WeightsSource` and verified by SHA-256 at load time,
so a small checkpoint can stand on large weights installed from a Python package.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from photosearch.model.errors import CheckpointCorruptError, CheckpointNotFoundError, UnsupportedCheckpointError

FORMAT_NAME = "photosearch-checkpoint"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


@dataclass
class PreprocessConfig:
    """How a decoded RGB image becomes the tower's input tensor."""

    size: int = 224  # side of the square tensor the image tower sees
    resize_mode: str = "shortest"  # "shortest": shortest side -> resize, then centre crop; "squash": resize to size x size
    resize: int | None = None  # shortest side before the centre crop (None: same as size)
    interpolation: str = "bicubic"  # "bicubic" | "bilinear" | "nearest"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    rescale: float = 1.0 / 255.0  # applied to uint8 pixels before mean/std
    background: tuple[int, int, int] = (255, 255, 255)  # transparent pixels are composited onto this colour
    crop_rounding: str = "round"  # centre-crop offset: "round" (torchvision) | "floor" (Hugging Face processors)


@dataclass
class WeightsSource:
    """Where pretrained weights come from; verified by ``sha256`` of ``file`` when set."""

    kind: str  # "package": inside an installed Python package; "checkpoint": inside the checkpoint dir; "path": absolute
    location: str  # package import name, or a directory/file path
    path: str = ""  # for "package": path inside the package directory
    file: str = ""  # the weights file (relative to the resolved location when it is a directory) that sha256 covers
    sha256: str = ""  # expected SHA-256 of ``file`` ("" = not verified)
    key_mapping: str = "name"  # "name": state-dict keys match; "position": same order and shapes, different names


@dataclass
class ImageTowerConfig:
    """A timm image backbone; returns its pooled features and (optionally) its classifier logits."""

    arch: str = "tf_efficientnet_lite0"  # timm model name
    weights: WeightsSource | None = None  # None: random initialisation (tests) or weights inside model.safetensors
    feature_dim: int = 1280  # width of the pooled features
    num_classes: int = 0  # classifier outputs kept (needed by the "bridge" head); 0 drops the classifier
    timm_kwargs: dict[str, Any] = field(default_factory=dict)  # extra arguments to timm.create_model


@dataclass
class TextTowerConfig:
    """A transformers text encoder with pooling; the tokenizer comes from the same place as the weights."""

    weights: WeightsSource | None = None  # directory loadable by AutoModel/AutoTokenizer
    hf_config: dict[str, Any] | None = None  # random-init architecture when ``weights`` is None
    tokenizer: WeightsSource | None = None  # default: ``weights``
    pooling: str = "mean"  # "mean" over non-padding tokens | "cls"
    max_length: int = 64
    feature_dim: int = 384


@dataclass
class HeadConfig:
    """Projection head into the shared space."""

    type: str = "linear"  # "identity" | "linear" | "mlp" | "bridge" (image only: classifier-probability bridge)
    in_dim: int = 0
    out_dim: int = 0
    hidden_dim: int = 0  # mlp only
    dropout: float = 0.0
    top_k: int = 10  # bridge: classes kept from the classifier's distribution
    temperature: float = 1.0  # bridge: softmax temperature over classifier logits


@dataclass
class DualEncoderConfig:
    """A composed CLIP-style model: image tower + text tower + projection heads."""

    name: str = "model"
    embed_dim: int = 384
    image: ImageTowerConfig = field(default_factory=ImageTowerConfig)
    text: TextTowerConfig = field(default_factory=TextTowerConfig)
    image_head: HeadConfig = field(default_factory=HeadConfig)
    text_head: HeadConfig = field(default_factory=HeadConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    logit_scale: float = 2.659260036932778  # log(1/0.07), CLIP's initial temperature
    description: str = ""
    training: dict[str, Any] = field(default_factory=dict)  # free-form provenance: data, seed, metrics
    model_id: str = ""  # hash of config + weights; filled in by save/load
    weights_sha256: str = ""  # SHA-256 of model.safetensors
    format: str = FORMAT_NAME
    format_version: int = FORMAT_VERSION
    type: str = "dual_encoder"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def identity_dict(self) -> dict[str, Any]:
        """The part of the config that defines the model's behaviour (model_id is a hash of this)."""
        d = self.to_dict()
        for k in ("model_id", "description", "training", "name"):
            d.pop(k, None)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DualEncoderConfig:
        d = dict(d)
        check_format(d)
        try:
            img = dict(d.pop("image", {}))
            img["weights"] = _source(img.get("weights"))
            txt = dict(d.pop("text", {}))
            txt["weights"] = _source(txt.get("weights"))
            txt["tokenizer"] = _source(txt.get("tokenizer"))
            pre = dict(d.pop("preprocess", {}))
            for k in ("mean", "std", "background"):
                if k in pre:
                    pre[k] = tuple(pre[k])
            known = {f.name for f in dataclasses.fields(cls)}
            unknown = set(d) - known
            if unknown:
                raise CheckpointCorruptError(f"config.json has unknown fields {sorted(unknown)}")
            return cls(
                image=ImageTowerConfig(**img),
                text=TextTowerConfig(**txt),
                image_head=HeadConfig(**d.pop("image_head", {})),
                text_head=HeadConfig(**d.pop("text_head", {})),
                preprocess=PreprocessConfig(**pre),
                **d,
            )
        except TypeError as e:
            raise CheckpointCorruptError(f"config.json does not describe a photosearch model: {e}") from e


def _source(d: dict[str, Any] | None) -> WeightsSource | None:
    return None if d is None else WeightsSource(**d)


def check_format(d: dict[str, Any]) -> None:
    """Raise a specific error when a config dict is not a photosearch checkpoint this version can read."""
    if d.get("format") != FORMAT_NAME:
        raise UnsupportedCheckpointError(f"config.json is not a photosearch checkpoint (format={d.get('format')!r})")
    version = d.get("format_version")
    if not isinstance(version, int):
        raise CheckpointCorruptError("config.json has no integer 'format_version'")
    if version > FORMAT_VERSION:
        raise UnsupportedCheckpointError(
            f"This checkpoint uses format version {version}, newer than the {FORMAT_VERSION} this photosearch "
            "reads. Upgrade photosearch (pip install -U photosearch) to load it."
        )
    if d.get("type") != "dual_encoder":
        raise UnsupportedCheckpointError(f"Unknown photosearch model type {d.get('type')!r}")


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON object, turning a missing or malformed file into a specific, actionable error."""
    if not path.is_file():
        raise CheckpointNotFoundError(f"{path} does not exist: the folder is not a model checkpoint")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointCorruptError(f"{path} cannot be read as JSON ({e}); re-export or re-download the model") from e
    if not isinstance(data, dict):
        raise CheckpointCorruptError(f"{path} does not hold a JSON object; re-export or re-download the model")
    return data
