"""Hugging Face CLIP and SigLIP ``save_pretrained`` folders behind the app's :class:`EmbeddingModel` interface.

Only safetensors weights are read (never pickle), nothing is fetched from the network, and the image preprocessing
and text tokenisation reproduce the folder's own Hugging Face processor so embeddings equal what transformers gives.
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path
from typing import Any

import torch

from photosearch.model.config import PreprocessConfig, read_json
from photosearch.model.encoder import EmbeddingModel, ModelInfo, Tokenizer, pick_device
from photosearch.model.errors import (
    BackboneUnavailableError,
    CheckpointCorruptError,
    CheckpointNotFoundError,
    UnsupportedCheckpointError,
)
from photosearch.model.weights import sha256_file

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
PREPROCESSOR_FILE = "preprocessor_config.json"
SAFE_WEIGHTS = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "spiece.model", "tokenizer.model", "vocab.txt")

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)
# PIL resampling codes as stored in preprocessor_config.json ("resample")
_PIL_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}
_KINDS = {"clip": "hf_clip", "siglip": "hf_siglip"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


# -- the torch module ---------------------------------------------------------------------------------------------
def _pooled(out: Any) -> torch.Tensor:
    """The feature tensor of ``get_*_features``: a tensor (transformers 4.x) or an output's ``pooler_output`` (5.x)."""
    if isinstance(out, torch.Tensor):
        return out
    pooled = getattr(out, "pooler_output", None)
    if isinstance(pooled, torch.Tensor):
        return pooled
    if isinstance(out, (tuple, list)) and len(out) > 1 and isinstance(out[1], torch.Tensor):
        return out[1]  # return_dict=False: (last_hidden_state, pooler_output, ...)
    raise TypeError(f"cannot find the projected features in a {type(out).__name__}")


class HFImageTextModule(torch.nn.Module):
    """Wraps a ``CLIPModel`` / ``SiglipModel``: the visual vector of a photo is its projected embedding itself."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def encode_image(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = _pooled(self.model.get_image_features(pixel_values=pixels))
        return emb, emb

    def encode_text(self, **tokens: torch.Tensor) -> torch.Tensor:
        return _pooled(self.model.get_text_features(**tokens))


# -- preprocessing ------------------------------------------------------------------------------------------------
def _side(value: Any, what: str) -> int:
    """A square side from an int or a {"height", "width"} dict."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, dict) and isinstance(value.get("height"), int) and value.get("height") == value.get("width"):
        return int(value["height"])
    if isinstance(value, dict) and "height" in value and "width" in value:
        raise UnsupportedCheckpointError(
            f"preprocessor_config.json asks for a non-square {what} {value['height']}x{value['width']}; photosearch "
            "supports square model inputs only"
        )
    raise CheckpointCorruptError(f"preprocessor_config.json has an unreadable {what} {value!r}")


def _triple(value: Any, default: tuple[float, float, float], what: str) -> tuple[float, float, float]:
    if value is None:
        return default
    if isinstance(value, (int, float)):
        return (float(value),) * 3
    if isinstance(value, (list, tuple)) and len(value) == 3 and all(isinstance(v, (int, float)) for v in value):
        return tuple(float(v) for v in value)  # type: ignore[return-value]
    raise CheckpointCorruptError(f"preprocessor_config.json has an unreadable {what} {value!r}")


def preprocess_from_hf(pp: dict[str, Any] | None, model_type: str, image_size: int) -> PreprocessConfig:
    """Translate a CLIPImageProcessor / SiglipImageProcessor config into a :class:`PreprocessConfig`.

    CLIP: resize the shortest edge, centre crop, rescale, normalise ("shortest"). SigLIP: resize to a fixed square,
    rescale, normalise ("squash"). Defaults for missing keys are those of the transformers processor classes.
    """
    clip = model_type == "clip"
    if pp is None:
        log.warning(
            "no preprocessor_config.json: using %s's standard preprocessing at %dpx; save the model's processor "
            "into the folder (processor.save_pretrained) to be sure photos are preprocessed as it expects",
            "CLIP" if clip else "SigLIP",
            image_size,
        )
        pp = {}
    if not pp.get("do_resize", True):
        raise UnsupportedCheckpointError("preprocessor_config.json has do_resize=false; photosearch must resize photos")
    resample = pp.get("resample", 3)  # both processor classes default to bicubic
    interpolation = _PIL_RESAMPLE.get(resample) if isinstance(resample, int) else None
    if interpolation is None:
        log.warning("preprocessor_config.json resample=%r is not supported; using bicubic", resample)
        interpolation = "bicubic"
    default_mean, default_std = (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD) if clip else (SIGLIP_MEAN, SIGLIP_STD)
    if pp.get("do_normalize", True):
        mean = _triple(pp.get("image_mean"), default_mean, "image_mean")
        std = _triple(pp.get("image_std"), default_std, "image_std")
    else:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    rescale = float(pp.get("rescale_factor", 1.0 / 255.0)) if pp.get("do_rescale", True) else 1.0

    size = pp.get("size", {"shortest_edge": image_size} if clip else {"height": image_size, "width": image_size})
    if isinstance(size, int) and not isinstance(size, bool):  # pre-2023 processor configs store a bare int
        size = {"shortest_edge": size} if clip else {"height": size, "width": size}
    do_crop = pp.get("do_center_crop", clip)
    crop = pp.get("crop_size", size.get("shortest_edge", image_size) if isinstance(size, dict) else image_size)
    if isinstance(size, dict) and "shortest_edge" in size:
        if size.get("longest_edge"):
            raise UnsupportedCheckpointError("preprocessor_config.json limits the longest edge; not supported")
        if not do_crop:
            raise UnsupportedCheckpointError(
                "preprocessor_config.json resizes the shortest edge without a centre crop, which gives non-square "
                "inputs; photosearch needs square ones"
            )
        short = _side(size["shortest_edge"], "size")
        return PreprocessConfig(
            size=_side(crop, "crop_size"),
            resize_mode="shortest",
            resize=short,
            interpolation=interpolation,
            crop_rounding="floor",
            mean=mean,
            std=std,
            rescale=rescale,
        )
    side = _side(size, "size")
    if do_crop and _side(crop, "crop_size") < side:
        raise UnsupportedCheckpointError("preprocessor_config.json squashes and then crops; not supported")
    return PreprocessConfig(
        size=side, resize_mode="squash", resize=None, interpolation=interpolation, mean=mean, std=std, rescale=rescale
    )


# -- files, identity ----------------------------------------------------------------------------------------------
def weights_files(path: Path) -> list[Path]:
    """The folder's safetensors weights (one file or the shards its index names); refuses pickle-only folders."""
    if (path / SAFE_WEIGHTS).is_file():
        return [path / SAFE_WEIGHTS]
    if (path / SAFE_INDEX).is_file():
        weight_map = read_json(path / SAFE_INDEX).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointCorruptError(f"{path / SAFE_INDEX} has no weight_map; re-download or re-save the model")
        shards = sorted({path / str(name) for name in weight_map.values()})
        missing = [p.name for p in shards if not p.is_file()]
        if missing:
            raise CheckpointNotFoundError(
                f"{path} lacks the weight shards {missing} named by {SAFE_INDEX}; download the missing files"
            )
        return shards
    if any((path / name).is_file() for name in PICKLE_WEIGHTS):
        raise UnsupportedCheckpointError(
            f"{path} holds only pytorch_model.bin weights (a pickle file, which photosearch never loads because "
            "unpickling can run arbitrary code). Download the model's model.safetensors instead, or convert it on "
            "a machine you trust: `from transformers import AutoModel; AutoModel.from_pretrained(FOLDER)"
            ".save_pretrained(FOLDER, safe_serialization=True)`"
        )
    raise CheckpointNotFoundError(
        f"{path} has no {SAFE_WEIGHTS} (or {SAFE_INDEX} with its shards); download the model's safetensors weights "
        "into the folder"
    )


def hf_model_id(path: Path, weights: list[Path]) -> str:
    """16 hex digits of SHA-256 over config.json, the weights files' SHA-256 (by name) and preprocessor_config.json."""
    h = hashlib.sha256((path / CONFIG_FILE).read_bytes())
    for w in sorted(weights, key=lambda p: p.name):
        h.update(sha256_file(w).encode())
    if (path / PREPROCESSOR_FILE).is_file():
        h.update((path / PREPROCESSOR_FILE).read_bytes())
    return h.hexdigest()[:16]


def _display_name(path: Path, cfg: dict[str, Any]) -> str:
    name_or_path = cfg.get("_name_or_path")
    if isinstance(name_or_path, str) and _HUB_ID.match(name_or_path) and not Path(name_or_path).exists():
        return name_or_path
    return path.resolve().name


# -- tokenizer ----------------------------------------------------------------------------------------------------
def make_hf_tokenizer(path: Path, model_type: str, max_length: int) -> Tokenizer:
    """The folder's tokenizer with the padding each family was trained with.

    CLIP: pad to the longest text, truncate to ``max_length``, pass the attention mask. SigLIP: always pad to
    ``max_length`` and pass input_ids only (its text tower pools the last position and was trained without a
    mask; the HF pipeline uses ``padding="max_length"`` and SiglipTokenizer returns no mask).
    """
    from transformers import AutoTokenizer

    missing_msg = (
        f"{path} has no tokenizer files; save the model's tokenizer (or processor) into the folder with "
        "save_pretrained, or download tokenizer.json / tokenizer_config.json with the model"
    )
    if not any((path / f).is_file() for f in (*TOKENIZER_FILES, "tokenizer_config.json")):
        raise CheckpointNotFoundError(missing_msg)
    try:
        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except ImportError as e:
        raise BackboneUnavailableError(
            f"The tokenizer of {path} needs a package that is not installed ({e}). For SigLIP's sentencepiece "
            "tokenizer: pip install sentencepiece"
        ) from e
    except Exception as e:  # noqa: BLE001 - transformers raises OSError/ValueError/KeyError/... for bad folders
        if not any((path / f).is_file() for f in TOKENIZER_FILES):
            raise CheckpointNotFoundError(missing_msg) from e
        raise CheckpointCorruptError(f"the tokenizer in {path} cannot be loaded ({e}); re-download it") from e

    siglip = model_type == "siglip"

    def tokenize(texts: list[str]) -> dict[str, torch.Tensor]:
        enc = tok(
            texts,
            padding="max_length" if siglip else True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        keys = ("input_ids",) if siglip else ("input_ids", "attention_mask")
        return {k: enc[k] for k in keys if k in enc}

    tokenize.tokenizer = tok  # type: ignore[attr-defined]
    return tokenize


# -- loading ------------------------------------------------------------------------------------------------------
def _model_class(model_type: str) -> type:
    if model_type == "clip":
        from transformers import CLIPModel

        return CLIPModel
    if model_type == "siglip":
        from transformers import SiglipModel

        return SiglipModel
    if model_type == "siglip2":
        raise UnsupportedCheckpointError(
            "SigLIP 2 NaFlex checkpoints (model_type 'siglip2') use variable-resolution patch inputs that photosearch "
            "does not support; use a fixed-resolution SigLIP 2 checkpoint (e.g. google/siglip2-base-patch16-224, "
            "model_type 'siglip') or a SigLIP/CLIP model"
        )
    raise UnsupportedCheckpointError(
        f"model_type {model_type!r} is not a Hugging Face CLIP or SigLIP model; photosearch loads CLIPModel and "
        "SiglipModel folders"
    )


def load_hf_model(path: Path, device: str | torch.device | None = "auto") -> EmbeddingModel:
    """Load a CLIPModel / SiglipModel ``save_pretrained`` folder (safetensors only, offline)."""
    path = Path(path)
    cfg = read_json(path / CONFIG_FILE)
    model_type = str(cfg.get("model_type"))
    cls = _model_class(model_type)
    weights = weights_files(path)
    try:
        config = cls.config_class.from_dict(cfg)
        text_cfg, vision_cfg = config.text_config, config.vision_config
        max_length = int(text_cfg.max_position_embeddings)
        image_size = int(vision_cfg.image_size)
        embed_dim = (
            int(config.projection_dim)
            if model_type == "clip"
            else int(getattr(text_cfg, "projection_size", None) or text_cfg.hidden_size)
        )
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        raise CheckpointCorruptError(
            f"{path / CONFIG_FILE} is not a valid {cls.__name__} config ({e}); re-download the model"
        ) from e

    pp_path = path / PREPROCESSOR_FILE
    preprocess = preprocess_from_hf(read_json(pp_path) if pp_path.is_file() else None, model_type, image_size)
    if preprocess.size != image_size:
        log.warning("%s feeds %dpx images to a model configured for %dpx", path, preprocess.size, image_size)
    tokenize = make_hf_tokenizer(path, model_type, max_length)

    try:
        model, loading = cls.from_pretrained(
            str(path),
            config=config,
            local_files_only=True,
            use_safetensors=True,
            dtype=torch.float32,
            output_loading_info=True,
        )
    except Exception as e:  # noqa: BLE001 - any failure to read the weights means a broken folder
        raise CheckpointCorruptError(
            f"the weights in {path} cannot be loaded as a {cls.__name__} ({e}); re-download the model's safetensors"
        ) from e
    missing = sorted(loading.get("missing_keys") or [])
    mismatched = list(loading.get("mismatched_keys") or [])
    if missing or mismatched:
        raise CheckpointCorruptError(
            f"{path} is not a complete {cls.__name__}: {len(missing)} tensors missing (e.g. {missing[:3]}), "
            f"{len(mismatched)} with the wrong shape; re-download or re-save the full model"
        )

    info = ModelInfo(
        model_id=hf_model_id(path, weights),
        name=_display_name(path, cfg),
        kind=_KINDS[model_type],
        embed_dim=embed_dim,
        visual_dim=embed_dim,
        path=str(path),
    )
    out = EmbeddingModel(HFImageTextModule(model), tokenize, preprocess, info, pick_device(device))
    return out
