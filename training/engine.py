"""The training engine behind ``python -m training train --config FILE``.

One loop for every mode:

- ``heads``: the towers are frozen and run once; their outputs are cached on disk (memory-mapped ``.npy``) and each
  epoch trains only the projection heads and the temperature (seconds per epoch on a CPU);
- ``partial``: the last ``train.unfreeze_image_blocks`` / ``train.unfreeze_text_blocks`` blocks of the towers train
  with the heads;
- ``full``: every weight trains (fine-tuning a pretrained model or a Hugging Face CLIP/SigLIP checkpoint);
- ``scratch``: every weight starts at random from the architecture and trains.

Multi-GPU / multi-node through ``torchrun`` (PyTorch DDP): the engine reads ``RANK`` / ``LOCAL_RANK`` /
``WORLD_SIZE``, uses NCCL on GPUs and gloo on CPUs, shards every epoch with a ``DistributedSampler`` and computes the
contrastive loss over features gathered from all processes (:mod:`training.losses`). ``data.batch_size`` is per
process. Mixed precision (bf16 autocast on CUDA; fp16 with a gradient scaler on request), gradient accumulation,
gradient checkpointing, a cosine schedule with linear warm-up, AdamW without weight decay on norms, biases and the
logit parameters.

Checkpoints (``DIR/checkpoints/step-NNNNNNNN.pt``: weights, optimizer, scheduler, scaler, every process's RNG
states, epoch and position in it) are written at the end of each epoch and every ``train.save_every_steps`` steps;
``--resume`` continues from the newest and ends with the same weights as a run that was never interrupted (data
order, captions, augmentations and views are pure functions of (seed, epoch, index)). Training checkpoints are
loaded with ``torch.load(weights_only=True)``: no code runs from them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import logging
import math
import os
import random
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from training.config import ConfigError, TrainConfig, absolute_paths, format_of, save_resolved
from training.models import BuiltModel, build_model, configure_trainable, freeze_eval, no_weight_decay

log = logging.getLogger(__name__)
CHECKPOINT_DIR = "checkpoints"
_CKPT = re.compile(r"^step-(\d{8})\.pt$")


# -- processes and devices ------------------------------------------------------------------------------------
@dataclass
class Dist:
    rank: int = 0
    local_rank: int = 0
    world: int = 1
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))
    initialised_here: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def setup_distributed(device: str) -> Dist:
    """Read torchrun's environment and join the process group (NCCL on GPUs, gloo on CPUs)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("train.device = 'cuda' but no CUDA device is available")
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device(device)
    d = Dist(rank, local, world, dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(minutes=60))
        d.initialised_here = True
    return d


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_worker(worker_id: int) -> None:
    """DataLoader worker: numpy and random seeded from the worker's torch seed (itself drawn from the loader's
    per-epoch generator), so anything random in a transform is reproducible."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]),
                  float(np_state[4])),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("train.precision = 'fp16' needs a CUDA device (use bf16 or fp32 on a CPU)")
    return precision


def autocast_factory(precision: str, device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    if precision == "fp32":
        return contextlib.nullcontext
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


# -- schedule, optimizer --------------------------------------------------------------------------------------
def cosine_with_warmup(total: int, warmup: int, min_ratio: float) -> Callable[[int], float]:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based)."""

    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return f


def param_groups(module: nn.Module, head_params: set[int], lr: float, weight_decay: float,
                 tower_lr_scale: float) -> list[dict[str, Any]]:
    """AdamW groups: (towers | heads) × (decay | no decay). Norms, biases, logit scale and bias get no decay."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    names: dict[tuple[bool, bool], list[str]] = {}
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        k = (id(p) in head_params, no_weight_decay(name, p))
        groups.setdefault(k, []).append(p)
        names.setdefault(k, []).append(name)
    out = []
    for (is_head, no_decay), params in sorted(groups.items()):
        out.append({"params": params, "weight_decay": 0.0 if no_decay else weight_decay,
                    "lr": lr * (1.0 if is_head else tower_lr_scale),
                    "name": f"{'heads' if is_head else 'towers'}/{'no_decay' if no_decay else 'decay'}"})
    return out


# -- data -----------------------------------------------------------------------------------------------------
class EpochSampler(Sampler[int]):
    """A DistributedSampler (one shard per process, reshuffled per epoch from the seed; one process is the
    special case world=1) that can skip the batches a resumed run already trained on."""

    def __init__(self, dataset: Dataset, world: int, rank: int, seed: int):
        self.inner = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed,
                                        drop_last=len(dataset) >= world)  # type: ignore[arg-type]
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.inner.set_epoch(epoch)
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        return iter(list(self.inner)[self.skip :])

    def __len__(self) -> int:
        return len(self.inner) - self.skip


def load_data(cfg: TrainConfig):
    """(train CaptionData, eval CaptionData | None, ClassFolder | None) as the [data] and [eval] sections say."""
    from training.data.captions import load_caption_data, load_class_folder

    d = cfg.data

    def load(ann: str, images: str, split: str):
        return load_caption_data(
            d.format, ann or None, images or None, split=split or None, image_column=d.image_column,
            caption_column=d.caption_column, max_missing_fraction=d.max_missing_fraction, limit=d.limit or None)

    if not d.annotations and d.format != "tuxpaint":
        raise ConfigError("data.annotations is empty: name the annotation file or folder (see the README's data "
                          "layouts)")
    train = load(d.annotations, d.images, d.split)
    held = None
    if d.eval_annotations:
        held = load(d.eval_annotations, d.eval_images, d.eval_split)
    elif d.eval_split:
        held = load(d.annotations, d.images, d.eval_split)
    elif d.eval_fraction > 0:
        train, held = train.split(d.eval_fraction, seed=cfg.train.seed)
    if held is not None and cfg.eval.max_images and len(held.items) > cfg.eval.max_images:
        held = dataclasses.replace(held, items=held.items[: cfg.eval.max_images])
    classes = load_class_folder(cfg.eval.zero_shot) if cfg.eval.zero_shot else None
    return train, held, classes


def caption_ids(train) -> tuple[list[str], dict[str, int]]:
    """Every distinct (whitespace/case-normalised) caption of the training set, with its id."""
    ids: dict[str, int] = {}
    for it in train.items:
        for c in it.captions:
            ids.setdefault(" ".join(c.lower().split()), len(ids))
    return list(ids), ids


# -- checkpoints ----------------------------------------------------------------------------------------------
def checkpoints(out: Path) -> list[Path]:
    folder = out / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _CKPT.match(p.name))


def latest_checkpoint(out: Path) -> Path | None:
    found = checkpoints(out)
    return found[-1] if found else None


def load_checkpoint(path: Path) -> dict[str, Any]:
    return torch.load(str(path), map_location="cpu", weights_only=True)


def load_tower_states(module, ck: dict[str, Any]) -> None:
    """Random-init towers a heads-only checkpoint carries (see ``TrainModule.unsourced_towers``)."""
    towers = module.unsourced_towers()
    for name, state in ck.get("towers", {}).items():
        towers[name].load_state_dict(state)


def _save_atomic(obj: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, str(tmp))
    os.replace(tmp, path)


# -- evaluation -----------------------------------------------------------------------------------------------
def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def evaluate(encode_images: Callable[[Sequence[Path]], np.ndarray], encode_texts: Callable[[Sequence[str]], np.ndarray],
             held, classes, templates: Sequence[str]) -> dict[str, float]:
    """Recall@1/5/10 both ways on the held-out photos (every caption counts) and zero-shot accuracy."""
    from training.data.captions import eval_lists
    from training.evaluate import caption_recall, zero_shot_accuracy

    out: dict[str, float] = {}
    if held is not None and held.items:
        images, captions, c2i = eval_lists(held)
        out.update(caption_recall(encode_images(images), encode_texts(captions), c2i))
    if classes is not None:
        out["zero_shot"] = zero_shot_accuracy(encode_images(classes.paths), classes.labels, classes.classes,
                                              encode_texts, templates=tuple(templates))
    return out


# -- the run --------------------------------------------------------------------------------------------------
class Run:
    """One training run (one process of it under torchrun)."""

    def __init__(self, cfg: TrainConfig, d: Dist, config_source: str | None):
        self.cfg, self.d = cfg, d
        self.out = Path(cfg.output.dir)
        self.config_source = config_source
        t = cfg.train
        if t.grad_accum < 1 or cfg.data.batch_size < 1 or t.epochs < 1:
            raise ConfigError("train.grad_accum, data.batch_size and train.epochs must be ≥ 1")
        if t.mode == "scratch" and cfg.model.image_weights:
            raise ConfigError("train.mode = 'scratch' initialises every weight at random: drop model.image_weights")
        self.precision = resolve_precision(t.precision, d.device)
        self.autocast = autocast_factory(self.precision, d.device)

        seed_everything(t.seed)  # identical initial weights on every process
        self.built: BuiltModel = build_model(cfg.model, t.mode, t.loss)
        self.module = self.built.module
        self.trained = configure_trainable(self.module, t.mode, t.unfreeze_image_blocks, t.unfreeze_text_blocks)
        self.module.to(d.device)
        self.train_data, self.held, self.classes = load_data(cfg)
        names, self.caption_id = caption_ids(self.train_data)
        self.heads_mode = t.mode == "heads"
        if self.heads_mode:
            self._prepare_heads(names)
        else:
            self._prepare_towers()
        head_ids = {id(p) for p in self.module.heads().parameters()}
        self.optimizer = torch.optim.AdamW(
            param_groups(self.net, head_ids, cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.tower_lr_scale),
            lr=cfg.optim.lr, betas=(cfg.optim.beta1, cfg.optim.beta2), eps=cfg.optim.eps)
        self.sampler = EpochSampler(self.dataset, d.world, d.rank, t.seed)
        shard = len(self.sampler.inner)
        self.batches_per_epoch = shard // cfg.data.batch_size if shard >= cfg.data.batch_size else 1
        self.steps_per_epoch = self.batches_per_epoch // t.grad_accum
        if self.steps_per_epoch < 1:
            raise ConfigError(
                f"{shard} training photos per process make {self.batches_per_epoch} batches of {cfg.data.batch_size}, "
                f"fewer than train.grad_accum = {t.grad_accum}: lower data.batch_size or train.grad_accum")
        total = t.epochs * self.steps_per_epoch
        if t.max_steps:
            total = min(total, t.max_steps)
        self.total_steps = total
        warmup = cfg.optim.warmup_steps or round(cfg.optim.warmup_fraction * total)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, cosine_with_warmup(total, warmup, cfg.optim.min_lr_ratio))
        self.scaler = torch.amp.GradScaler(d.device.type, enabled=self.precision == "fp16")
        if self.built.loss == "siglip":
            from training.losses import SigLipLoss

            self.loss_fn: nn.Module = SigLipLoss()
        else:
            from training.losses import ClipLoss

            self.loss_fn = ClipLoss(local_loss=True)
        self.ddp: nn.Module = self.net
        if d.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.ddp = DDP(self.net, device_ids=[d.local_rank] if d.device.type == "cuda" else None,
                           find_unused_parameters=t.find_unused_parameters)
        seed_everything(t.seed * 1000 + d.rank)  # per-process streams for dropout and the like
        self.epoch, self.batch_in_epoch, self.step = 0, 0, 0
        self.last_lr = float("nan")

    # -- set-up per mode ----------------------------------------------------------------------------------------
    def _feature_store(self):
        from training.cached import FeatureStore

        root = Path(self.cfg.data.cache_dir).expanduser() if self.cfg.data.cache_dir else Path(
            os.environ.get("PHOTOSEARCH_CACHE", Path.home() / ".cache" / "photosearch")) / "features"
        return FeatureStore(root)

    def _prepare_heads(self, names: list[str]) -> None:
        from training.cached import HeadsPairs
        from training.data.captions import TrainPairs

        if self.module.kind == "hf_siglip":
            raise ConfigError("heads mode needs projection heads outside the towers; a SigLIP checkpoint's are inside "
                              "them: use train.mode = 'partial' (e.g. unfreeze_image_blocks = 1) instead")
        cfg, d = self.cfg, self.d
        paths = [it.image for it in self.train_data.items]
        if d.local_rank == 0 and d.world > 1:  # one process per machine extracts; the others read its cache
            self._image_cache("train-images", paths, cfg.data.views)
            self._text_cache("train-captions", names)
        d.barrier()
        pooled, logits = self._image_cache("train-images", paths, cfg.data.views)
        text = self._text_cache("train-captions", names)
        pairs = TrainPairs(self.train_data, transform=lambda im: im, seed=cfg.train.seed)
        captions_of = [[self.caption_id[" ".join(c.lower().split())] for c in it.captions]
                       for it in self.train_data.items]
        self.dataset = HeadsPairs(pooled, logits, text, captions_of, pairs.caption_index, cfg.train.seed)
        self.net = self.module.heads()
        self.collate = None
        self._eval_images: dict[tuple[Path, ...], tuple[np.ndarray, np.ndarray]] = {}
        self._text_memo: dict[str, np.ndarray] = {}

    def _image_cache(self, name: str, paths: Sequence[Path], views: int) -> tuple[np.ndarray, np.ndarray]:
        from training.cached import extract_image_features

        cfg = self.cfg
        return extract_image_features(
            self.module, paths, self.built.preprocess, views, cfg.train.seed, cfg.data.crop_scale, self.d.device,
            self.autocast, self._feature_store(), name, self.module.identity(), cfg.eval.batch_size,
            cfg.data.num_workers)

    def _text_cache(self, name: str, texts: Sequence[str]) -> np.ndarray:
        from training.cached import extract_text_features

        return extract_text_features(self.module, self.built.tokenize, texts, self.d.device, self.autocast,
                                     self._feature_store(), name, self.module.identity())

    def _prepare_towers(self) -> None:
        from training.cached import SeededDataset, image_transform
        from training.data.captions import TrainPairs

        cfg = self.cfg
        if cfg.train.grad_checkpointing:
            self.module.set_grad_checkpointing()
        tf = image_transform(self.built.preprocess, cfg.data.augment, cfg.data.crop_scale)
        self.dataset = SeededDataset(TrainPairs(self.train_data, tf, seed=cfg.train.seed), cfg.train.seed)
        self.net = self.module
        tokenize, ids = self.built.tokenize, self.caption_id

        def collate(batch):
            images = torch.stack([b[0] for b in batch])
            caps = [b[1] for b in batch]
            groups = torch.tensor([ids.get(" ".join(c.lower().split()), -1 - i) for i, c in enumerate(caps)])
            return images, tokenize(caps), groups

        self.collate = collate

    # -- encoding for evaluation ----------------------------------------------------------------------------
    @torch.no_grad()
    def encode_images(self, paths: Sequence[Path]) -> np.ndarray:
        from training.cached import ImageViews

        if self.heads_mode:  # cached frozen-tower outputs (computed at the first evaluation) through the heads
            key = tuple(paths)
            if key not in self._eval_images:
                self._eval_images[key] = self._image_cache("eval-images", paths, 0)
            pooled, logits = self._eval_images[key]
            heads = self.module.heads()
            out = []
            for i in range(0, len(paths), 4096):
                p = torch.from_numpy(np.asarray(pooled[0, i : i + 4096], np.float32)).to(self.d.device)
                lg = torch.from_numpy(np.asarray(logits[0, i : i + 4096], np.float32)).to(self.d.device)
                out.append(heads.image_head(p, lg if lg.shape[-1] else None).float().cpu().numpy())
            return _normalise(np.concatenate(out))
        out = []
        loader = DataLoader(ImageViews(paths, self.built.preprocess), batch_size=self.cfg.eval.batch_size,
                            num_workers=self.cfg.data.num_workers)
        for x in loader:
            with self.autocast():
                out.append(self.module.encode_image(x.to(self.d.device)).float().cpu().numpy())
        return _normalise(np.concatenate(out))

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        dev = self.d.device
        if self.heads_mode:  # frozen text tower once per distinct text, then the current text head
            todo = [t for t in dict.fromkeys(texts) if t not in self._text_memo]
            for i in range(0, len(todo), 256):
                tokens = {k: v.to(dev) for k, v in self.built.tokenize(todo[i : i + 256]).items()}
                with self.autocast():
                    feats = self.module.text_features(tokens).float().cpu().numpy()
                self._text_memo.update(zip(todo[i : i + 256], feats))
            feats = torch.from_numpy(np.stack([self._text_memo[t] for t in texts])).to(dev)
            return _normalise(self.module.text_head(feats).float().cpu().numpy())
        out = []
        for i in range(0, len(texts), 256):
            tokens = {k: v.to(dev) for k, v in self.built.tokenize(list(texts[i : i + 256])).items()}
            with self.autocast():
                out.append(self.module.encode_text(tokens).float().cpu().numpy())
        return _normalise(np.concatenate(out))

    def run_eval(self) -> dict[str, float]:
        """Evaluate in eval mode without touching the training RNG streams (a resumed run stays identical)."""
        self.module.eval()
        devices = [self.d.device] if self.d.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices):
                return evaluate(self.encode_images, self.encode_texts, self.held, self.classes,
                                self.cfg.eval.templates)
        finally:
            self._train_mode()

    def _train_mode(self) -> None:
        self.net.train()
        if not self.heads_mode:
            freeze_eval(self.module)

    # -- checkpoints ----------------------------------------------------------------------------------------
    def save(self) -> Path | None:
        states = [rng_state()]
        if self.d.world > 1:
            states = [None] * self.d.world
            dist.all_gather_object(states, rng_state())
        path = self.out / CHECKPOINT_DIR / f"step-{self.step:08d}.pt"
        if self.d.main:
            towers = {k: m.state_dict() for k, m in self.module.unsourced_towers().items()} if self.heads_mode else {}
            _save_atomic({
                "model": self.net.state_dict(),
                "towers": towers,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "rng": states,
                "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch, "step": self.step,
                "world_size": self.d.world, "mode": self.cfg.train.mode,
                "config": self.cfg.to_dict(),
            }, path)
            for old in checkpoints(self.out)[: -max(1, self.cfg.train.keep_checkpoints)]:
                old.unlink(missing_ok=True)
            log.info("checkpoint %s (epoch %d, batch %d)", path, self.epoch, self.batch_in_epoch)
        self.d.barrier()
        return path

    def restore(self, path: Path) -> None:
        ck = load_checkpoint(path)
        if ck.get("world_size", 1) != self.d.world:
            raise ConfigError(f"{path} was written by {ck.get('world_size')} processes; resume with the same number "
                              f"(this run has {self.d.world})")
        changed = _diff(ck.get("config", {}), self.cfg.to_dict())
        if changed:
            log.warning("resuming with a changed config: %s", ", ".join(changed))
        self.net.load_state_dict(ck["model"])
        load_tower_states(self.module, ck)
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scheduler.load_state_dict(ck["scheduler"])
        self.scaler.load_state_dict(ck["scaler"])
        set_rng_state(ck["rng"][self.d.rank])
        self.epoch, self.batch_in_epoch, self.step = ck["epoch"], ck["batch_in_epoch"], ck["step"]
        log.info("resumed from %s: epoch %d, batch %d, step %d", path, self.epoch, self.batch_in_epoch, self.step)

    # -- the loop -------------------------------------------------------------------------------------------
    def loss(self, batch) -> torch.Tensor:
        dev = self.d.device
        with self.autocast():
            if self.heads_mode:
                pooled, logits, text, groups = batch
                img, txt = self.ddp(pooled.to(dev), logits.to(dev), text.to(dev))
            else:
                pixels, tokens, groups = batch
                img, txt = self.ddp(pixels.to(dev, non_blocking=True), {k: v.to(dev) for k, v in tokens.items()})
        img, txt = img.float(), txt.float()
        if self.built.loss == "siglip":
            return self.loss_fn(img, txt, self.module.logit_scale, self.module.logit_bias)
        return self.loss_fn(img, txt, self.module.logit_scale, groups.to(dev))

    def loader(self, epoch: int, skip_batches: int) -> DataLoader:
        self.sampler.set_epoch(epoch, skip_batches * self.cfg.data.batch_size)
        self.dataset.set_epoch(epoch)
        g = torch.Generator().manual_seed(self.cfg.train.seed * 100003 + epoch)
        return DataLoader(self.dataset, batch_size=self.cfg.data.batch_size, sampler=self.sampler,
                          num_workers=self.cfg.data.num_workers, collate_fn=self.collate, generator=g,
                          worker_init_fn=seed_worker,
                          drop_last=len(self.sampler.inner) >= self.cfg.data.batch_size,
                          pin_memory=self.d.device.type == "cuda")

    def train_step(self, it: Iterator, metrics) -> float:
        """One optimizer step over ``train.grad_accum`` micro-batches; returns the step's loss (all processes)."""
        t, d = self.cfg.train, self.d
        micro = []
        for k in range(t.grad_accum):
            batch = next(it)
            sync = k == t.grad_accum - 1 or d.world == 1
            with contextlib.nullcontext() if sync else self.ddp.no_sync():
                loss = self.loss(batch)
                self.scaler.scale(loss / t.grad_accum).backward()
            micro.append(float(loss.detach()))
        if self.cfg.optim.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.cfg.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        lr = self.last_lr = next(g["lr"] for g in self.optimizer.param_groups  # this step's rate (optim.lr
                                 if g["name"].startswith("heads"))           # × schedule; towers × tower_lr_scale)
        self.scheduler.step()
        self.step += 1
        self.batch_in_epoch += t.grad_accum
        step_loss = float(np.mean(micro))
        if d.world > 1:
            tl = torch.tensor([step_loss], device=d.device)
            dist.all_reduce(tl)
            step_loss = float(tl) / d.world
        if metrics is not None and (self.step % max(1, t.log_every) == 0 or self.step == 1):
            metrics.write({"type": "train", "step": self.step, "epoch": self.epoch + 1, "loss": step_loss, "lr": lr,
                           "temperature": self.temperature()})
        return step_loss

    def temperature(self) -> float:
        from training.losses import MAX_LOGIT_SCALE

        return float(1.0 / self.module.logit_scale.detach().clamp(max=MAX_LOGIT_SCALE).exp())

    def fit(self, resume: bool, stop_after_steps: int | None = None, t_start: float | None = None) -> dict[str, Any]:
        from training.runlog import MetricsLog, read_metrics, write_report

        cfg, d, t = self.cfg, self.d, self.cfg.train
        t_start = time.perf_counter() if t_start is None else t_start
        ck = latest_checkpoint(self.out)
        if ck is not None and not resume:
            raise ConfigError(f"{self.out} already holds checkpoints of a run: pass --resume to continue it, or choose "
                              "another output.dir")
        if ck is not None:
            self.restore(ck)
        elif resume:
            log.info("--resume: no checkpoint in %s, starting from the beginning", self.out)
        metrics = MetricsLog(self.out, cfg.output.tensorboard and d.main, self.step if ck is not None else None) \
            if d.main else None
        if d.main:
            log.info("training %s (%s): %d photos, %d steps/epoch × %d epochs, global batch %d, precision %s, %d "
                     "process(es), device %s", self.built.description, ", ".join(self.trained),
                     len(self.train_data.items), self.steps_per_epoch, t.epochs,
                     cfg.data.batch_size * d.world * t.grad_accum, self.precision, d.world, d.device)
        self._train_mode()
        interrupted = False
        last_eval: dict[str, float] = {}
        try:
            while self.epoch < t.epochs and self.step < self.total_steps:
                it = iter(self.loader(self.epoch, self.batch_in_epoch))
                n_batches = self.steps_per_epoch * t.grad_accum
                losses: list[float] = []
                while self.batch_in_epoch < n_batches and self.step < self.total_steps:
                    losses.append(self.train_step(it, metrics))
                    mid_epoch = self.batch_in_epoch < n_batches and self.step < self.total_steps
                    if stop_after_steps is not None and self.step >= stop_after_steps and mid_epoch:
                        self.save()
                        interrupted = True
                        break
                    if t.save_every_steps and self.step % t.save_every_steps == 0 and mid_epoch:
                        self.save()
                if interrupted:
                    break
                self.epoch += 1  # an epoch cut short by train.max_steps counts as the last one
                self.batch_in_epoch = 0
                last = self.epoch >= t.epochs or self.step >= self.total_steps
                if d.main:
                    t0 = time.perf_counter()
                    evaluated = (cfg.eval.every and self.epoch % cfg.eval.every == 0) or last
                    if evaluated:
                        last_eval = self.run_eval()
                    record = {"type": "epoch", "step": self.step, "epoch": self.epoch,
                              "train_loss": float(np.mean(losses)) if losses else float("nan"),
                              "lr": self.last_lr, "temperature": self.temperature(),
                              **(last_eval if evaluated else {})}
                    if metrics is not None:
                        metrics.write(record)
                    log.info("epoch %d: loss %.4f %s (eval %.1fs)", self.epoch, record["train_loss"],
                             {k: round(v, 1) for k, v in last_eval.items()} if evaluated else "",
                             time.perf_counter() - t0)
                d.barrier()
                self.save()
                if stop_after_steps is not None and self.step >= stop_after_steps and not last:
                    interrupted = True
                    break
        finally:
            if metrics is not None:
                metrics.close()
        summary = {
            "output": str(self.out), "mode": t.mode, "trained": self.trained, "model": self.built.description,
            "config_source": self.config_source, "epochs_done": self.epoch, "steps": self.step,
            "finished": not interrupted,
            "train_photos": len(self.train_data.items),
            "eval_photos": len(self.held.items) if self.held is not None else 0,
            "eval_captions": self.held.num_captions if self.held is not None else 0,
            "world_size": d.world, "batch_size": cfg.data.batch_size, "grad_accum": t.grad_accum,
            "global_batch": cfg.data.batch_size * d.world * t.grad_accum, "precision": self.precision,
            "seed": t.seed, "seconds": time.perf_counter() - t_start, "metrics": last_eval,
            "checkpoint": str(latest_checkpoint(self.out)),
        }
        if d.main and summary["finished"]:
            records = read_metrics(self.out / "metrics.jsonl")
            epochs = [r for r in records if r.get("type") == "epoch"]
            if not last_eval:  # a resumed run that had nothing left to train: the metrics of the last epoch
                evaluated = [r for r in epochs if "t2i_R@1" in r or "zero_shot" in r]
                summary["metrics"] = {k: v for k, v in evaluated[-1].items()
                                      if k not in ("type", "step", "epoch", "train_loss")} if evaluated else {}
            summary["epoch_losses"] = [r["train_loss"] for r in epochs]
            (self.out / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
            if cfg.output.report:
                summary["report"] = str(write_report(self.out / "report", summary, records))
        return summary


def _diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
            out += _diff(a[k], b[k], f"{prefix}{k}.")
        elif a.get(k) != b.get(k) and f"{prefix}{k}" not in ("output.dir",):
            out.append(f"{prefix}{k}: {a.get(k)!r} → {b.get(k)!r}")
    return out


def train(cfg: TrainConfig, *, resume: bool = False, config_source: str | None = None,
          stop_after_steps: int | None = None) -> dict[str, Any]:
    """Run (or, with ``resume``, continue) the training a config describes; returns the run's summary.

    ``stop_after_steps`` stops early after writing a checkpoint, as if the process had been killed there.
    """
    if cfg.kind != "train":
        raise ConfigError(f"kind = {cfg.kind!r}: run it with `python -m training train --config FILE`, which "
                          "dispatches to the right pipeline")
    t0 = time.perf_counter()
    cfg = absolute_paths(cfg)
    d = setup_distributed(cfg.train.device)
    try:
        if d.main:
            save_resolved(cfg, Path(cfg.output.dir), format_of(config_source))
        run = Run(cfg, d, config_source)
        return run.fit(resume, stop_after_steps, t0)
    finally:
        if d.initialised_here:
            dist.destroy_process_group()
