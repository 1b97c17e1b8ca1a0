"""Typed training configuration: YAML or TOML files, command-line overrides, the resolved file saved with a run.

    python -m training train --config training/recipes/heads-cached.toml --set optim.lr=1e-4 data.batch_size=64
    python -m training train --config run.yaml --optim.lr 1e-4 --train.epochs=3

A config has a ``kind`` ("train": the engine in :mod:`training.engine`; "default": the shipped default model's own
pipeline, :mod:`training.default_model`) and sections ``model``, ``data``, ``optim``, ``train``, ``eval``,
``output`` (and ``default`` for kind "default"). Every key has a type; values from files and from the command line
are converted to it, and an unknown key is an error that lists the valid ones.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A config file or override that cannot be used, with a message that says how to fix it."""


@dataclass
class ModelSection:
    """Which model to train. Architecture is data: a named preset, optionally adjusted key by key."""

    preset: str = "tiny"  # name in training.presets.PRESETS, or "hf-clip:FOLDER" / "hf-siglip:FOLDER"
    tokenizer: str = ""  # tokenizer folder, for presets whose text tower keeps its tokenizer beside the checkpoint
    image_arch: str = ""  # another timm architecture for the image tower (resnet50, convnext_tiny, vit_small_...)
    image_weights: str = ""  # local weights file (.safetensors/.pth) for the image tower: pretrained when given
    image_key_mapping: str = "name"  # "name" | "position": how image_weights' tensor names map onto timm's
    image_kwargs: dict[str, Any] = field(default_factory=dict)  # extra timm.create_model arguments (img_size, depth…)
    image_classes: int = -1  # classifier outputs the image tower keeps (-1: the preset's; 0: none)
    text_model: str = ""  # local transformers folder (config, tokenizer, weights) for the text tower: pretrained
    text_config: dict[str, Any] = field(default_factory=dict)  # random-init text tower: {"model_type": "bert", ...}
    pooling: str = ""  # text pooling "mean" | "cls" ("" = the preset's)
    max_length: int = 0  # text tokens (0 = the preset's)
    head: str = ""  # projection heads "linear" | "mlp" | "identity" ("" = the preset's)
    head_hidden: int = 0  # hidden width of "mlp" heads (0 = embed_dim)
    embed_dim: int = 0  # width of the shared space (0 = the preset's)
    image_size: int = 0  # side of the image tower's input (0 = the preset's)
    name: str = ""  # model name recorded in the checkpoint ("" = the preset's)
    init_from: str = ""  # a photosearch checkpoint ("default", a name or a folder) whose matching tensors start training


@dataclass
class DataSection:
    """Captioned photos for training and evaluation (formats: training.data.captions.FORMATS)."""

    format: str = "auto"  # coco | flickr8k | flickr30k | karpathy | csv | tsv | jsonl | sidecar | tuxpaint | auto
    annotations: str = ""  # annotation file or folder
    images: str = ""  # image root ("" = next to the annotations)
    split: str = ""  # split inside the annotations used for training (karpathy: "train"; "" = all)
    image_column: str = "image"  # csv/tsv/jsonl column names
    caption_column: str = "caption"
    eval_annotations: str = ""  # a separate evaluation set ("" = eval_split of the same annotations, or a held-out fraction)
    eval_images: str = ""
    eval_split: str = ""  # split inside the annotations used for evaluation (karpathy: "val" or "test")
    eval_fraction: float = 0.1  # held out of the training photos when there is no eval_split/eval_annotations
    limit: int = 0  # use only the first N photos (0 = all)
    max_missing_fraction: float = 0.01  # annotated photos allowed to be missing on disk
    batch_size: int = 64  # per process (global batch = batch_size × processes × train.grad_accum)
    num_workers: int = 0  # DataLoader workers per process
    augment: bool = True  # random resized crop + horizontal flip for training images
    crop_scale: float = 0.5  # smallest crop area of the random resized crop
    views: int = 4  # heads mode: augmented views cached per photo (plus one clean view)
    cache_dir: str = ""  # heads mode: feature cache ("" = ~/.cache/photosearch/features)


@dataclass
class OptimSection:
    """AdamW with a cosine schedule; no weight decay on norms, biases and the temperature."""

    lr: float = 5e-4
    weight_decay: float = 0.2
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    warmup_steps: int = 0  # linear warm-up in optimizer steps (0: warmup_fraction of all steps)
    warmup_fraction: float = 0.05
    min_lr_ratio: float = 0.0  # the cosine ends at lr × min_lr_ratio
    tower_lr_scale: float = 1.0  # learning-rate multiplier for the towers (partial/full fine-tuning)
    grad_clip: float = 0.0  # max gradient norm (0 = no clipping)


@dataclass
class TrainSection:
    mode: str = "heads"  # heads (cached features) | partial | full | scratch
    epochs: int = 10
    seed: int = 0
    loss: str = "auto"  # clip | siglip | auto (siglip for SigLIP checkpoints, else clip)
    unfreeze_image_blocks: int = 2  # partial: last N blocks of the image tower trained
    unfreeze_text_blocks: int = 2  # partial: last N layers of the text tower trained
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | bf16 | fp16 | fp32
    grad_accum: int = 1  # micro-batches per optimizer step
    grad_checkpointing: bool = False  # recompute tower activations in backward (saves memory)
    device: str = "auto"  # auto | cpu | cuda
    save_every_steps: int = 0  # also checkpoint every N optimizer steps (0: at the end of each epoch only)
    keep_checkpoints: int = 2  # newest training checkpoints kept
    max_steps: int = 0  # stop after this many optimizer steps (0: run all epochs)
    log_every: int = 10  # steps between loss/lr/temperature log records
    find_unused_parameters: bool = False  # DDP: set when some trainable parameters get no gradient


@dataclass
class EvalSection:
    every: int = 1  # evaluate every N epochs (and always after the last one); 0 = only after the last
    zero_shot: str = ""  # class folder (one sub-folder of photos per class) for zero-shot accuracy
    templates: list[str] = field(default_factory=lambda: ["a photo of a {}."])
    batch_size: int = 64
    max_images: int = 0  # evaluate on at most N photos (0 = all)


@dataclass
class OutputSection:
    dir: str = "runs/run"  # checkpoints, logs, report and the resolved config go here
    name: str = ""  # model name for `python -m training export` ("" = the folder's name)
    tensorboard: bool = True  # TensorBoard event files in DIR/tensorboard (metrics.jsonl is always written)
    report: bool = True  # Markdown report with plots in DIR/report


@dataclass
class DefaultSection:
    """kind = "default": the shipped model's pipeline (training.default_model) with these options."""

    seed: int = 0
    views: int = 8
    epochs: int = 10
    wise_alpha: float = 0.6
    lr: float = 1e-3
    l2sp: float = 0.1
    batch_size: int = 256
    out: str = "resources/models/default"  # relative paths are relative to the repository root
    report: str = "training/reports/default"
    export: bool = True


@dataclass
class TrainConfig:
    kind: str = "train"  # train | default
    description: str = ""
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    train: TrainSection = field(default_factory=TrainSection)
    eval: EvalSection = field(default_factory=EvalSection)
    output: OutputSection = field(default_factory=OutputSection)
    default: DefaultSection = field(default_factory=DefaultSection)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


CHOICES: dict[str, tuple[str, ...]] = {
    "kind": ("train", "default"),
    "train.mode": ("heads", "partial", "full", "scratch"),
    "train.loss": ("auto", "clip", "siglip"),
    "train.precision": ("auto", "bf16", "fp16", "fp32"),
    "model.head": ("", "linear", "mlp", "identity"),
    "model.pooling": ("", "mean", "cls"),
    "model.image_key_mapping": ("name", "position"),
}
SECTIONS = ("model", "data", "optim", "train", "eval", "output", "default")


# -- keys and types -------------------------------------------------------------------------------------------
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def valid_keys() -> list[str]:
    """Every dotted key a config accepts."""
    keys = []
    for f in dataclasses.fields(TrainConfig):
        if dataclasses.is_dataclass(_hints(TrainConfig)[f.name]):
            keys += [f"{f.name}.{g.name}" for g in dataclasses.fields(_hints(TrainConfig)[f.name])]
        else:
            keys.append(f.name)
    return keys


def _unknown(key: str, options: Sequence[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(key, options, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"unknown key {key!r}{hint}; valid keys in {where}: {', '.join(options)}")


def _convert(value: Any, tp: Any, key: str, from_text: bool) -> Any:
    """``value`` as type ``tp``; strings from the command line are parsed, file values only checked/widened."""
    origin = typing.get_origin(tp)
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            if from_text and isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
                return True
            if from_text and isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if tp is int:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, int):
                return value
            if isinstance(value, float) and value.is_integer():
                return int(value)
            if from_text and isinstance(value, str):
                f = float(value.strip())
                if not f.is_integer():
                    raise ValueError
                return int(f)
            raise ValueError
        if tp is float:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, (int, float)):
                return float(value)
            if from_text and isinstance(value, str):
                return float(value.strip())
            raise ValueError
        if tp is str:
            if isinstance(value, str):
                return value
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return str(value)
            raise ValueError
        if origin is list:
            (item,) = typing.get_args(tp)
            if from_text and isinstance(value, str):
                text = value.strip()
                if text.startswith("["):
                    value = _parse_literal(text, key)
                else:
                    value = [v.strip() for v in text.split(",") if v.strip()] if text else []
            if not isinstance(value, (list, tuple)):
                raise ValueError
            return [_convert(v, item, key, from_text) for v in value]
        if origin is dict:
            if from_text and isinstance(value, str):
                value = _parse_literal(value, key) if value.strip() else {}
            if not isinstance(value, dict):
                raise ValueError
            return dict(value)
    except (ValueError, TypeError):
        pass
    name = getattr(tp, "__name__", str(tp))
    raise ConfigError(f"{key} must be {name}, got {value!r}")


def _parse_literal(text: str, key: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{key}: cannot parse {text!r} ({e})") from e


def _check_choice(key: str, value: Any) -> None:
    if key in CHOICES and value not in CHOICES[key]:
        raise ConfigError(f"{key} must be one of {', '.join(repr(c) for c in CHOICES[key])}; got {value!r}")


def from_dict(raw: dict[str, Any], source: str = "config") -> TrainConfig:
    """Build a TrainConfig from a nested dict, converting every value to its key's type."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source} must hold a mapping of sections, got {type(raw).__name__}")
    cfg = TrainConfig()
    top = _hints(TrainConfig)
    for name, value in raw.items():
        if name not in top:
            raise _unknown(name, list(top), f"{source} (top level)")
        tp = top[name]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"[{name}] in {source} must be a section (a mapping), got {value!r}")
            hints = _hints(tp)
            section = getattr(cfg, name)
            for k, v in value.items():
                if k not in hints:
                    raise _unknown(f"{name}.{k}", [f"{name}.{x}" for x in hints], f"[{name}]")
                conv = _convert(v, hints[k], f"{name}.{k}", from_text=False)
                _check_choice(f"{name}.{k}", conv)
                setattr(section, k, conv)
        else:
            conv = _convert(value, tp, name, from_text=False)
            _check_choice(name, conv)
            setattr(cfg, name, conv)
    return cfg


def read_file(path: str | Path) -> dict[str, Any]:
    """The raw mapping in a .toml, .yaml/.yml or .json config file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            return _toml_module().loads(text)
        if suffix in (".yaml", ".yml"):
            import yaml

            return yaml.safe_load(text) or {}
        if suffix == ".json":
            return json.loads(text)
    except ValueError as e:  # TOMLDecodeError and JSONDecodeError are ValueErrors
        raise ConfigError(f"{path} is not valid {suffix[1:].upper()}: {e}") from e
    except Exception as e:  # yaml.YAMLError, without importing yaml at module level
        if type(e).__module__.startswith("yaml"):
            raise ConfigError(f"{path} is not valid YAML: {e}") from e
        raise
    raise ConfigError(f"{path}: config files are .toml, .yaml/.yml or .json")


def _toml_module():
    try:
        import tomllib  # Python ≥ 3.11

        return tomllib
    except ModuleNotFoundError:
        try:
            import tomli

            return tomli
        except ModuleNotFoundError:
            raise ConfigError("reading TOML needs Python ≥ 3.11 (tomllib) or `pip install tomli`; or use a YAML "
                              "config") from None


def apply_overrides(cfg: TrainConfig, overrides: Sequence[str]) -> TrainConfig:
    """Apply ``key=value`` strings (``optim.lr=1e-4``) to a copy of ``cfg``, converting each to its key's type."""
    cfg = dataclasses.replace(cfg, **{s: dataclasses.replace(getattr(cfg, s)) for s in SECTIONS})
    keys = valid_keys()
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value (e.g. optim.lr=1e-4)")
        key, value = item.split("=", 1)
        key = key.strip().lstrip("-")
        if key not in keys:
            raise _unknown(key, keys, "the config")
        if "." in key:
            section_name, name = key.split(".", 1)
            section = getattr(cfg, section_name)
            conv = _convert(value, _hints(type(section))[name], key, from_text=True)
            _check_choice(key, conv)
            setattr(section, name, conv)
        else:
            conv = _convert(value, _hints(TrainConfig)[key], key, from_text=True)
            _check_choice(key, conv)
            setattr(cfg, key, conv)
    return cfg


def split_cli_overrides(args: Sequence[str]) -> list[str]:
    """Turn ``--optim.lr 1e-4`` / ``--optim.lr=1e-4`` / ``--set a.b=1 c.d=2`` command-line pieces into key=value
    strings."""
    out: list[str] = []
    i = 0
    args = list(args)
    while i < len(args):
        a = args[i]
        if a == "--set":
            i += 1
            while i < len(args) and not args[i].startswith("--"):
                out.append(args[i])
                i += 1
            continue
        if a.startswith("--") and len(a) > 2:
            body = a[2:]
            if "=" in body:
                out.append(body)
            elif i + 1 < len(args) and not (args[i + 1].startswith("--") and len(args[i + 1]) > 2):
                out.append(f"{body}={args[i + 1]}")
                i += 1
            else:
                raise ConfigError(f"{a} needs a value (e.g. {a} VALUE or {a}=VALUE)")
            i += 1
            continue
        raise ConfigError(f"unexpected argument {a!r}; overrides look like --set section.key=value or --section.key VALUE")
    return out


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a config file (or start from the defaults when ``path`` is None) and apply overrides."""
    cfg = from_dict(read_file(path), str(path)) if path is not None else TrainConfig()
    return apply_overrides(cfg, overrides)


PATH_KEYS = ("model.tokenizer", "model.image_weights", "model.text_model", "data.annotations", "data.images",
             "data.eval_annotations", "data.eval_images", "data.cache_dir", "eval.zero_shot", "output.dir")


def absolute_paths(cfg: TrainConfig, base: Path | None = None) -> TrainConfig:
    """A copy with every non-empty path key (and an hf-clip:/hf-siglip: preset's folder) made absolute against
    ``base`` (default: the working directory), so a saved config means the same thing from any folder."""
    base = (base or Path.cwd()).resolve()
    out = apply_overrides(cfg, [])

    def absolute(value: str) -> str:
        return str((base / Path(value).expanduser()).resolve()) if value else value

    for key in PATH_KEYS:
        section, name = key.split(".")
        setattr(getattr(out, section), name, absolute(getattr(getattr(out, section), name)))
    for prefix in ("hf-clip:", "hf-siglip:"):
        if out.model.preset.startswith(prefix):
            out.model.preset = prefix + absolute(out.model.preset[len(prefix):])
    return out


# -- writing --------------------------------------------------------------------------------------------------
def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml_value(x)}" for k, x in v.items()) + "}"
    if v is None:
        raise ConfigError("TOML has no null value")
    raise ConfigError(f"cannot write {v!r} to TOML")


def dumps_toml(d: dict[str, Any]) -> str:
    lines = [f"{k} = {_toml_value(v)}" for k, v in d.items() if not isinstance(v, dict) or k not in SECTIONS]
    for k, v in d.items():
        if isinstance(v, dict) and k in SECTIONS:
            lines += ["", f"[{k}]"] + [f"{kk} = {_toml_value(vv)}" for kk, vv in v.items()]
    return "\n".join(lines) + "\n"


def dumps(cfg: TrainConfig, fmt: str = "toml") -> str:
    d = cfg.to_dict()
    if fmt == "toml":
        return dumps_toml(d)
    if fmt == "yaml":
        import yaml

        return yaml.safe_dump(d, sort_keys=False, allow_unicode=True)
    raise ConfigError(f"unknown config format {fmt!r}")


def save_resolved(cfg: TrainConfig, folder: Path, fmt: str = "toml") -> Path:
    """Write the resolved config (every key, defaults included) into ``folder`` as config.toml or config.yaml."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"config.{fmt}"
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(dumps(cfg, fmt), encoding="utf-8")
    tmp.replace(path)
    return path


def resolved_config_path(folder: Path) -> Path:
    """The resolved config a run wrote into its output folder."""
    for name in ("config.toml", "config.yaml"):
        if (folder / name).is_file():
            return folder / name
    raise ConfigError(f"{folder} has no config.toml or config.yaml: is it the output folder of a training run?")


def format_of(path: str | Path | None) -> str:
    return "yaml" if path is not None and Path(path).suffix.lower() in (".yaml", ".yml") else "toml"
