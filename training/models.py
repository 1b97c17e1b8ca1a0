"""Models being trained: a config's ``[model]`` section → towers + heads + logit parameters, ready for any mode.

Two families behind one :class:`TrainModule` interface:

- composed dual encoders (photosearch's own checkpoints): a timm image tower, a transformers text tower, heads from
  a named preset in :mod:`training.presets`, adjusted key by key (architecture, local pretrained weights, random-init
  text config, head type, widths);
- Hugging Face ``CLIPModel`` / ``SiglipModel`` ``save_pretrained`` folders (``hf-clip:FOLDER``, ``hf-siglip:FOLDER``).

Each exposes its towers' blocks (for partial unfreezing), its heads (for heads-only training on cached features),
gradient checkpointing, and an export into a folder that :func:`photosearch.model.load_model` loads.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from photosearch.model.config import DualEncoderConfig, HeadConfig, PreprocessConfig, WeightsSource
from training.config import ConfigError, ModelSection

log = logging.getLogger(__name__)

Tokenizer = Callable[[list[str]], dict[str, torch.Tensor]]


# -- blocks of a tower ----------------------------------------------------------------------------------------
def find_blocks(root: nn.Module) -> tuple[list[nn.Module], list[nn.Module]]:
    """(blocks in forward order, modules that follow them) of a timm backbone or a transformers encoder.

    timm ViT/EfficientNet: ``blocks``; ConvNeXt and friends: ``stages``; ResNet: ``layer1..layer4``; transformers:
    the longest ModuleList named ``layer``/``layers``/``blocks`` (BERT ``encoder.layer``, DistilBERT
    ``transformer.layer``, CLIP/SigLIP ``encoder.layers``). The modules that follow are the root's children after
    the one holding the blocks (final norms, pooling heads).
    """
    children = list(root.named_children())
    for attr in ("blocks", "stages", "layers"):
        mod = getattr(root, attr, None)
        if isinstance(mod, (nn.Sequential, nn.ModuleList)) and len(mod):
            names = [n for n, _ in children]
            return list(mod), [m for n, m in children[names.index(attr) + 1 :]]
    numbered = [(n, m) for n, m in children if re.fullmatch(r"layer\d+", n)]
    if numbered:
        last = [n for n, _ in children].index(numbered[-1][0])
        return [m for _, m in numbered], [m for _, m in children[last + 1 :]]
    best: tuple[str, nn.Module] | None = None
    for name, mod in root.named_modules():
        named_list = isinstance(mod, nn.ModuleList) and name.rsplit(".", 1)[-1] in ("layer", "layers", "blocks")
        if named_list and (best is None or len(mod) > len(best[1])):
            best = (name, mod)
    if best is None:
        raise ConfigError(f"cannot find the blocks of a {type(root).__name__} for partial unfreezing")
    top = best[0].split(".", 1)[0]
    names = [n for n, _ in children]
    return list(best[1]), [m for n, m in children[names.index(top) + 1 :]]


def tensor_digest(module: nn.Module) -> str:
    """SHA-256 (16 hex digits) over a module's state dict: names, shapes and values."""
    import hashlib

    h = hashlib.sha256()
    for k, v in module.state_dict().items():
        t = v.detach().cpu().contiguous()
        h.update(f"{k}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def _hf_checkpointing(model: nn.Module) -> None:
    """transformers' activation (gradient) checkpointing, non-reentrant (gradients reach frozen-input blocks)."""
    if hasattr(model, "activation_checkpointing_enable"):  # transformers ≥ 5.x
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def set_trainable(module: nn.Module | None, flag: bool) -> None:
    if module is not None:
        for p in module.parameters():
            p.requires_grad_(flag)


def no_weight_decay(name: str, p: nn.Parameter) -> bool:
    """Norm weights, biases (every parameter with fewer than 2 dims) and the logit scale/bias get no decay."""
    return p.ndim < 2 or "logit_" in name.rsplit(".", 1)[-1]


class _Projection(nn.Module):
    """A Hugging Face projection (nn.Linear or identity) with the heads' (features, logits) signature."""

    def __init__(self, proj: nn.Module | None):
        super().__init__()
        self.proj = proj if proj is not None else nn.Identity()

    def forward(self, x: torch.Tensor, logits: torch.Tensor | None = None) -> torch.Tensor:
        return self.proj(x)


class TrainModule(nn.Module):
    """What the engine trains. ``forward(pixels, tokens)`` → (image embeddings, text embeddings), unnormalised."""

    kind: str = ""
    image_head: nn.Module
    text_head: nn.Module
    logit_bias: nn.Parameter | None

    # towers -> features -> heads
    def image_features(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def text_features(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    @property
    def logit_scale(self) -> nn.Parameter:
        raise NotImplementedError

    def image_tower(self) -> nn.Module:
        raise NotImplementedError

    def text_tower(self) -> nn.Module:
        raise NotImplementedError

    def frozen_always(self) -> list[nn.Module]:
        """Modules whose outputs never reach the loss (e.g. BERT's pooler under mean pooling)."""
        return []

    def tower_blocks(self, which: str) -> tuple[list[nn.Module], list[nn.Module]]:
        return find_blocks(self.image_tower() if which == "image" else self.text_tower())

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        pooled, logits = self.image_features(pixels)
        return self.image_head(pooled, logits)

    def encode_text(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.text_head(self.text_features(tokens))

    def forward(self, pixels: torch.Tensor, tokens: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encode_image(pixels), self.encode_text(tokens)

    def heads(self) -> Heads:
        return Heads(self.image_head, self.text_head, self.logit_scale, self.logit_bias)

    def set_grad_checkpointing(self) -> None:
        raise NotImplementedError

    def identity(self) -> dict[str, Any]:
        """What determines the frozen towers' outputs (the feature cache key)."""
        raise NotImplementedError

    def unsourced_towers(self) -> dict[str, nn.Module]:
        """Towers whose weights come from no file (random initialisation): a heads-only checkpoint keeps them."""
        return {}

    def export(self, out_dir: Path, tokenize: Tokenizer, include_towers: bool, training: dict[str, Any]) -> Path:
        """Write a folder :func:`photosearch.model.load_model` loads; the model is named after ``out_dir``."""
        raise NotImplementedError


class Heads(nn.Module):
    """The trainable part in heads mode, on cached tower outputs. Shares its parameters with the full module."""

    def __init__(self, image_head: nn.Module, text_head: nn.Module, logit_scale: nn.Parameter,
                 logit_bias: nn.Parameter | None):
        super().__init__()
        self.image_head = image_head
        self.text_head = text_head
        self.logit_scale = logit_scale
        self.logit_bias = logit_bias

    def forward(self, pooled: torch.Tensor, logits: torch.Tensor | None, text: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = logits if logits is not None and logits.shape[-1] else None
        return self.image_head(pooled, logits), self.text_head(text)


# -- composed dual encoders -----------------------------------------------------------------------------------
class ComposedModule(TrainModule):
    kind = "composed"

    def __init__(self, cfg: DualEncoderConfig, load_pretrained: bool, loss: str):
        super().__init__()
        from photosearch.model.towers import DualEncoder

        self.dual = DualEncoder(cfg, load_pretrained=load_pretrained)
        self.cfg = cfg
        self.image_head = self.dual.image_head
        self.text_head = self.dual.text_head
        self.logit_bias = None
        if loss == "siglip":
            from training.losses import init_logit_params

            scale, bias = init_logit_params("siglip")
            with torch.no_grad():
                self.dual.logit_scale.copy_(scale)
            self.logit_bias = bias

    @property
    def logit_scale(self) -> nn.Parameter:
        return self.dual.logit_scale

    def image_features(self, pixels):
        return self.dual.image_tower(pixels)

    def text_features(self, tokens):
        return self.dual.text_tower(tokens["input_ids"], tokens["attention_mask"])

    def image_tower(self) -> nn.Module:
        return self.dual.image_tower.backbone

    def text_tower(self) -> nn.Module:
        return self.dual.text_tower.encoder

    def frozen_always(self) -> list[nn.Module]:
        out = []
        pooler = getattr(self.dual.text_tower.encoder, "pooler", None)
        if pooler is not None:
            out.append(pooler)  # BERT's pooler: the tower pools the hidden states itself
        if self.cfg.image.num_classes and self.cfg.image_head.type != "bridge":
            out.append(self.dual.image_tower.backbone.get_classifier())  # logits only feed a bridge head
        return out

    def set_grad_checkpointing(self) -> None:
        self.dual.image_tower.backbone.set_grad_checkpointing(True)
        enc = self.dual.text_tower.encoder
        if not getattr(enc, "supports_gradient_checkpointing", False):
            raise ConfigError(f"the text tower {type(enc).__name__} does not support gradient checkpointing")
        _hf_checkpointing(enc)

    def identity(self) -> dict[str, Any]:
        d = self.cfg.identity_dict()
        random_towers = {k: tensor_digest(m) for k, m in self.unsourced_towers().items()}
        return {"image": d["image"], "text": d["text"], "preprocess": d["preprocess"], "random": random_towers}

    def unsourced_towers(self) -> dict[str, nn.Module]:
        out: dict[str, nn.Module] = {}
        if self.cfg.image.weights is None:
            out["image_tower"] = self.dual.image_tower
        if self.cfg.text.weights is None:
            out["text_tower"] = self.dual.text_tower
        return out

    def export(self, out_dir: Path, tokenize: Tokenizer, include_towers: bool, training: dict[str, Any]) -> Path:
        from photosearch.model.composed import TOKENIZER_DIR, save_checkpoint

        dual = self.dual
        saved_cfg = dual.cfg
        cfg = dataclasses.replace(saved_cfg, name=out_dir.name)  # the name the app shows
        tok = cfg.text.tokenizer
        if not include_towers and tok is not None and tok.kind == "path":
            # a tokenizer folder given at training time goes into the checkpoint, which must stand alone
            cfg.text = dataclasses.replace(cfg.text, tokenizer=WeightsSource(kind="checkpoint", location=TOKENIZER_DIR))
        dual.cfg = cfg
        try:
            save_checkpoint(dual, out_dir, include_towers=include_towers, tokenizer=tokenize, training=training)
        finally:
            dual.cfg = saved_cfg
        return out_dir


def _source_for_folder(folder: Path) -> WeightsSource:
    from photosearch.model.weights import sha256_file

    folder = folder.expanduser().resolve()
    if not (folder / "config.json").is_file():
        raise ConfigError(f"model.text_model {folder} is not a transformers folder (no config.json)")
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return WeightsSource(kind="path", location=str(folder), file=name, sha256=sha256_file(folder / name))
    raise ConfigError(f"model.text_model {folder} has no model.safetensors")


def composed_config(section: ModelSection) -> DualEncoderConfig:
    """The preset named by ``section.preset`` with the section's adjustments applied."""
    from training.presets import PRESETS

    if section.preset not in PRESETS:
        raise ConfigError(f"unknown model.preset {section.preset!r}; known: {', '.join(PRESETS)}, "
                          "hf-clip:FOLDER, hf-siglip:FOLDER")
    cfg = PRESETS[section.preset]()
    image, text, pre = cfg.image, cfg.text, cfg.preprocess
    image_head, text_head = cfg.image_head, cfg.text_head
    if section.image_arch or section.image_kwargs or section.image_classes >= 0:
        import timm

        classes = section.image_classes if section.image_classes >= 0 else (
            image.num_classes if not section.image_arch else 0)
        arch = section.image_arch or image.arch
        kwargs = dict(section.image_kwargs) if section.image_kwargs else dict(image.timm_kwargs)
        try:
            probe = timm.create_model(arch, pretrained=False, num_classes=classes, **kwargs)
        except (RuntimeError, TypeError, ValueError) as e:
            raise ConfigError(f"timm cannot build model.image_arch {arch!r} with {kwargs}: {e}") from e
        weights = image.weights if not section.image_arch else None
        image = dataclasses.replace(image, arch=arch, timm_kwargs=kwargs, num_classes=classes, weights=weights,
                                    feature_dim=probe.num_features)
        if section.image_arch and image_head.type == "bridge" and not classes:
            image_head = dataclasses.replace(image_head, type="linear")
    if section.image_weights:
        from photosearch.model.weights import sha256_file

        path = Path(section.image_weights).expanduser().resolve()
        if not path.is_file():
            raise ConfigError(f"model.image_weights {path} does not exist")
        image = dataclasses.replace(image, weights=WeightsSource(
            kind="path", location=str(path), sha256=sha256_file(path), key_mapping=section.image_key_mapping))
    if section.text_model:
        src = _source_for_folder(Path(section.text_model))
        hidden = json.loads((Path(src.location) / "config.json").read_text()).get("hidden_size") or json.loads(
            (Path(src.location) / "config.json").read_text()).get("dim")
        text = dataclasses.replace(text, weights=src, hf_config=None, tokenizer=None, feature_dim=int(hidden))
    elif section.text_config:
        hf = dict(section.text_config)
        if "model_type" not in hf:
            raise ConfigError("model.text_config needs a 'model_type' (e.g. bert, distilbert)")
        from transformers import AutoConfig

        try:
            hidden = AutoConfig.for_model(hf["model_type"], **{k: v for k, v in hf.items() if k != "model_type"})
        except (ValueError, TypeError) as e:
            raise ConfigError(f"model.text_config is not a transformers config: {e}") from e
        width = getattr(hidden, "hidden_size", None) or hidden.dim
        text = dataclasses.replace(text, weights=None, hf_config=hf, feature_dim=int(width))
    if section.tokenizer:
        folder = Path(section.tokenizer).expanduser().resolve()
        if not folder.is_dir():
            raise ConfigError(f"model.tokenizer {folder} is not a folder")
        text = dataclasses.replace(text, tokenizer=WeightsSource(kind="path", location=str(folder)))
    if section.pooling:
        text = dataclasses.replace(text, pooling=section.pooling)
    if section.max_length:
        text = dataclasses.replace(text, max_length=section.max_length)
    embed = section.embed_dim or cfg.embed_dim
    if section.head:  # fresh heads of the given type (a preset's bridge head settings do not carry over)
        image_head = HeadConfig(type=section.head, hidden_dim=section.head_hidden)
        text_head = HeadConfig(type=section.head, hidden_dim=section.head_hidden)
    elif section.head_hidden:
        image_head = dataclasses.replace(image_head, hidden_dim=section.head_hidden)
        text_head = dataclasses.replace(text_head, hidden_dim=section.head_hidden)
    image_head = dataclasses.replace(image_head, in_dim=image.feature_dim, out_dim=embed)
    text_head = dataclasses.replace(text_head, in_dim=text.feature_dim, out_dim=embed)
    for which, head in (("image", image_head), ("text", text_head)):
        if head.type == "identity" and head.in_dim != head.out_dim:
            raise ConfigError(f"an identity {which} head needs model.embed_dim = {head.in_dim}")
    if section.image_size:
        pre = dataclasses.replace(pre, size=section.image_size, resize=section.image_size)
    tok = text.tokenizer or text.weights
    if tok is not None and tok.kind == "checkpoint":
        raise ConfigError(f"model.preset {section.preset!r} keeps its tokenizer beside the checkpoint: set "
                          "model.tokenizer to a tokenizer folder (e.g. a transformers folder with vocab.txt)")
    if tok is None:
        raise ConfigError("the text tower has no tokenizer: set model.tokenizer or model.text_model")
    return dataclasses.replace(cfg, name=section.name or cfg.name, embed_dim=embed, image=image, text=text,
                               image_head=image_head, text_head=text_head, preprocess=pre)


# -- Hugging Face CLIP / SigLIP -------------------------------------------------------------------------------
class HFModule(TrainModule):
    def __init__(self, folder: Path, model_type: str, random_init: bool):
        super().__init__()
        from photosearch.model.hf import _model_class, weights_files

        cls = _model_class(model_type)
        self.folder = folder
        self.kind = "hf_clip" if model_type == "clip" else "hf_siglip"
        self.model_type = model_type
        if random_init:
            config = cls.config_class.from_pretrained(str(folder), local_files_only=True)
            self.model = cls(config)
        else:
            weights_files(folder)  # refuses pickle-only folders with the app's message
            self.model = cls.from_pretrained(str(folder), local_files_only=True, use_safetensors=True,
                                             dtype=torch.float32)
        self.image_head = _Projection(getattr(self.model, "visual_projection", None))
        self.text_head = _Projection(getattr(self.model, "text_projection", None))
        self.logit_bias = getattr(self.model, "logit_bias", None)

    @property
    def logit_scale(self) -> nn.Parameter:
        return self.model.logit_scale

    def image_features(self, pixels):
        return self.model.vision_model(pixel_values=pixels).pooler_output, None

    def text_features(self, tokens):
        return self.model.text_model(**tokens).pooler_output

    def image_tower(self) -> nn.Module:
        return self.model.vision_model

    def text_tower(self) -> nn.Module:
        return self.model.text_model

    def set_grad_checkpointing(self) -> None:
        _hf_checkpointing(self.model)

    def identity(self) -> dict[str, Any]:
        from photosearch.model.hf import hf_model_id, weights_files

        return {"hf": hf_model_id(self.folder, weights_files(self.folder))}

    def export(self, out_dir: Path, tokenize: Tokenizer, include_towers: bool, training: dict[str, Any]) -> Path:
        """A ``save_pretrained`` folder (safetensors) with the tokenizer and the source's image processor config."""
        from photosearch.model.composed import _atomic_replace_dir
        from photosearch.model.hf import PREPROCESSOR_FILE

        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=out_dir.name + ".", dir=out_dir.parent))
        try:
            self.model.save_pretrained(str(tmp), safe_serialization=True)
            tokenize.tokenizer.save_pretrained(str(tmp))  # type: ignore[attr-defined]
            if (self.folder / PREPROCESSOR_FILE).is_file():
                shutil.copy(self.folder / PREPROCESSOR_FILE, tmp / PREPROCESSOR_FILE)
            (tmp / "photosearch_training.json").write_text(json.dumps(training, indent=1, default=str) + "\n")
            _atomic_replace_dir(tmp, out_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return out_dir


# -- building ---------------------------------------------------------------------------------------------------
@dataclass
class BuiltModel:
    module: TrainModule
    tokenize: Tokenizer
    preprocess: PreprocessConfig
    loss: str  # "clip" | "siglip"
    description: dict[str, Any]  # what the run trained (recorded in the report and the export)


def hf_preset(preset: str) -> tuple[str, Path] | None:
    for prefix, mt in (("hf-clip:", "clip"), ("hf-siglip:", "siglip")):
        if preset.startswith(prefix):
            return mt, Path(preset[len(prefix) :]).expanduser()
    return None


def build_model(section: ModelSection, mode: str, loss: str = "auto") -> BuiltModel:
    """Build the model a config describes. ``mode`` "scratch" initialises every weight at random (from the
    architecture alone); the other modes load pretrained weights where the config names them."""
    hf = hf_preset(section.preset)
    random_init = mode == "scratch"
    if hf is not None:
        model_type, folder = hf
        if not (folder / "config.json").is_file():
            raise ConfigError(f"model.preset {section.preset!r}: {folder} is not a save_pretrained folder")
        from photosearch.model.config import read_json
        from photosearch.model.hf import make_hf_tokenizer, preprocess_from_hf

        raw = read_json(folder / "config.json")
        if raw.get("model_type") != model_type:
            raise ConfigError(f"{folder} holds a {raw.get('model_type')!r} model, not {model_type!r}: use "
                              f"hf-{raw.get('model_type')}:{folder}")
        ignored = [k for k in ("image_arch", "image_weights", "text_model", "head", "embed_dim", "tokenizer", "init_from")
                   if getattr(section, k)]
        if ignored:
            raise ConfigError(f"model.{ignored[0]} cannot change a Hugging Face checkpoint; only its weights train")
        module = HFModule(folder, model_type, random_init)
        cfg = module.model.config
        pp_path = folder / "preprocessor_config.json"
        preprocess = preprocess_from_hf(read_json(pp_path) if pp_path.is_file() else None, model_type,
                                        int(cfg.vision_config.image_size))
        tokenize = make_hf_tokenizer(folder, model_type, int(cfg.text_config.max_position_embeddings))
        natural = "siglip" if model_type == "siglip" else "clip"
        loss = natural if loss == "auto" else loss
        if loss != natural:
            raise ConfigError(f"a {model_type} checkpoint trains with train.loss = {natural!r} (its logit parameters)")
        return BuiltModel(module, tokenize, preprocess, loss, {"kind": module.kind, "folder": str(folder)})
    from photosearch.model.composed import make_tokenizer

    cfg = composed_config(section)
    loss = "clip" if loss == "auto" else loss
    module = ComposedModule(cfg, load_pretrained=not random_init, loss=loss)
    if section.init_from:
        init_from_checkpoint(module, section.init_from)
    tokenize = make_tokenizer(cfg.text)
    return BuiltModel(module, tokenize, cfg.preprocess, loss, {"kind": "composed", "preset": section.preset,
                                                                "name": cfg.name})


def init_from_checkpoint(module: ComposedModule, name_or_dir: str) -> int:
    """Copy every tensor of a photosearch checkpoint whose name and shape match into ``module`` (e.g. start from the
    shipped model's trained heads); returns how many were copied."""
    from photosearch.model import resolve_model_path
    from photosearch.model.config import WEIGHTS_FILE
    from photosearch.model.weights import load_state_dict_file

    folder = resolve_model_path(name_or_dir)
    if not (folder / WEIGHTS_FILE).is_file():
        raise ConfigError(f"model.init_from {name_or_dir!r}: {folder} is not a photosearch checkpoint")
    source = load_state_dict_file(folder / WEIGHTS_FILE)
    target = module.dual.state_dict()
    usable = {k: v for k, v in source.items() if k in target and tuple(target[k].shape) == tuple(v.shape)}
    if not usable:
        raise ConfigError(f"model.init_from {folder}: none of its tensors fits this model's architecture")
    module.dual.load_state_dict(usable, strict=False)
    log.info("initialised %d of %d tensors from %s", len(usable), len(target), folder)
    return len(usable)


def configure_trainable(module: TrainModule, mode: str, image_blocks: int = 0, text_blocks: int = 0) -> list[str]:
    """Set ``requires_grad`` for a training mode; returns a description of what trains.

    heads: heads + logit parameters. partial: also the last ``image_blocks`` / ``text_blocks`` blocks of each tower
    and what follows them (final norms, pooling heads). full / scratch: everything.
    """
    head_mods = [module.image_head, module.text_head]
    logits = [p for p in (module.logit_scale, module.logit_bias) if p is not None]
    if mode in ("full", "scratch"):
        set_trainable(module, True)
        trained = ["image tower", "text tower", "heads", "logit scale"]
    else:
        set_trainable(module, False)
        for m in head_mods:
            set_trainable(m, True)
        trained = ["heads", "logit scale"]
        if mode == "partial":
            for which, n in (("image", image_blocks), ("text", text_blocks)):
                if n <= 0:
                    continue
                blocks, tail = module.tower_blocks(which)
                if n > len(blocks):
                    raise ConfigError(f"train.unfreeze_{which}_blocks = {n}, but the {which} tower has {len(blocks)} "
                                      "blocks")
                for m in blocks[-n:] + tail:
                    set_trainable(m, True)
                trained.append(f"last {n} of {len(blocks)} {which} blocks")
        elif mode != "heads":
            raise ConfigError(f"unknown train.mode {mode!r}")
    for p in logits:
        p.requires_grad_(True)
    for m in module.frozen_always():
        set_trainable(m, False)
    return trained


def freeze_eval(module: nn.Module) -> None:
    """Put every sub-module without trainable parameters in eval mode (frozen BatchNorm stats, no dropout)."""
    for m in module.modules():
        params = list(m.parameters())
        if params and not any(p.requires_grad for p in params):
            m.eval()
