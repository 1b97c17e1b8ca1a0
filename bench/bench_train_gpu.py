"""Training throughput from scratch: our training step against open_clip's, same architecture, same data, one run.

    python bench/bench_train_gpu.py                       # GPU: ViT-B/32 + 12-layer 512-wide text, batch 256, bf16
    python bench/bench_train_gpu.py --smoke               # CPU check: tiny towers, a few steps

Ours: ``photosearch.model.towers.DualEncoder`` built from a config (timm ``vit_base_patch32_224``, random init,
+ a 12-layer 512-wide transformers ``CLIPTextModel`` built from its config, random init, mean pooling, linear heads
into a 512-d space) + ``training.losses.ClipLoss`` + AdamW, under bf16 autocast, optionally ``torch.compile``-d.
open_clip: ``open_clip.create_model("ViT-B-32")`` (the same towers: 12×768 ViT with 32-px patches, 12×512 causal
text transformer, 77 tokens, 49,408-token vocabulary) with open_clip's own ``ClipLoss`` and the step of
``open_clip_train.train.train_one_epoch`` (amp_bf16: autocast, backward, AdamW with its parameter groups, logit
scale clamped after the step). Both get the same synthetic batch, already on the device (random pixels and random
token ids), the same optimiser hyper-parameters, and run interleaved in rounds so that clock or thermal drift hits
both. open_clip is only the reference here: it is imported by this script alone (never by photosearch or
training) and must be importable, e.g. from carried wheels (see bench/README.md).

FLOPs (stated so the fraction of peak can be checked): a transformer layer over n tokens of width d with a 4·d MLP
does 24·n·d² + 4·n²·d FLOPs forward (QKV 6nd², output 2nd², MLP 16nd², scores and weighted sum 4n²d). ViT-B/32
at 224 px: n = 50, d = 768, 12 layers, plus the patch embedding 2·49·3072·768 → 8.8 GFLOP per image. Text:
n = 77, d = 512, 12 layers → 5.96 GFLOP per caption. A training step is counted as 3× the forward (backward ≈ 2×),
so one sample costs 3 × (8.8 + 5.96) ≈ 44 GFLOP; the loss and the heads (< 0.1%) are left out. The fraction of
peak is against the H100's dense bf16 tensor-core peak, 989 TFLOP/s (``--peak-tflops`` for another GPU).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from photosearch.model.config import DualEncoderConfig, HeadConfig, ImageTowerConfig, TextTowerConfig
from photosearch.model.towers import DualEncoder
from training.losses import ClipLoss

H100_BF16_DENSE_TFLOPS = 989.0


@dataclass(frozen=True)
class Arch:
    image_size: int = 224
    patch: int = 32
    vision_width: int = 768
    vision_layers: int = 12
    vision_heads: int = 12
    context: int = 77
    vocab: int = 49408
    text_width: int = 512
    text_layers: int = 12
    text_heads: int = 8
    embed_dim: int = 512

    def image_gflop(self) -> float:
        """Forward GFLOP per image (formula in the module docstring)."""
        grid = (self.image_size // self.patch) ** 2
        n, d = grid + 1, self.vision_width
        patch_embed = 2 * grid * 3 * self.patch**2 * d
        return (self.vision_layers * (24 * n * d * d + 4 * n * n * d) + patch_embed) / 1e9

    def text_gflop(self) -> float:
        n, d = self.context, self.text_width
        return self.text_layers * (24 * n * d * d + 4 * n * n * d) / 1e9


VIT_B_32 = Arch()
SMOKE = Arch(image_size=64, patch=32, vision_width=64, vision_layers=2, vision_heads=2, context=16, vocab=1000,
             text_width=64, text_layers=2, text_heads=2, embed_dim=32)


# ---------------------------------------------------------------------------------------------------------------
# the two models


def ours_config(a: Arch) -> DualEncoderConfig:
    """Our dual encoder at the given size: timm ViT-B/32 (or its tiny smoke variant) + a CLIP-style text model."""
    timm_kwargs = {}
    if a != VIT_B_32:
        timm_kwargs = {"img_size": a.image_size, "patch_size": a.patch, "embed_dim": a.vision_width,
                       "depth": a.vision_layers, "num_heads": a.vision_heads}
    return DualEncoderConfig(
        name="bench-vit-b-32",
        embed_dim=a.embed_dim,
        image=ImageTowerConfig(arch="vit_base_patch32_224", weights=None, feature_dim=a.vision_width, num_classes=0,
                               timm_kwargs=timm_kwargs),
        text=TextTowerConfig(
            weights=None,
            hf_config={"model_type": "clip_text_model", "vocab_size": a.vocab, "hidden_size": a.text_width,
                       "intermediate_size": 4 * a.text_width, "num_hidden_layers": a.text_layers,
                       "num_attention_heads": a.text_heads, "max_position_embeddings": a.context,
                       "hidden_act": "gelu", "projection_dim": a.embed_dim,
                       "pad_token_id": 1, "bos_token_id": a.vocab - 2, "eos_token_id": a.vocab - 1},
            pooling="mean", max_length=a.context, feature_dim=a.text_width,
        ),
        image_head=HeadConfig(type="linear", in_dim=a.vision_width, out_dim=a.embed_dim),
        text_head=HeadConfig(type="linear", in_dim=a.text_width, out_dim=a.embed_dim),
    )


def adamw_groups(model: torch.nn.Module, wd: float) -> list[dict]:
    """open_clip's parameter groups: no weight decay on gains, biases and the logit scale."""
    def exclude(n: str, p: torch.Tensor) -> bool:
        return p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [{"params": [p for n, p in named if exclude(n, p)], "weight_decay": 0.0},
            {"params": [p for n, p in named if not exclude(n, p)], "weight_decay": wd}]


OPT = {"lr": 5e-4, "betas": (0.9, 0.98), "eps": 1e-6}
WD = 0.2


class Runner:
    """One training step, callable repeatedly on the same batch."""

    name: str
    n_params: int

    def step(self) -> None:
        raise NotImplementedError


class Ours(Runner):
    def __init__(self, a: Arch, batch: dict, device: torch.device, compile_: bool, fused: bool):
        self.name = "ours" + (" + torch.compile" if compile_ else "")
        torch.manual_seed(0)
        self.model = DualEncoder(ours_config(a), load_pretrained=False).to(device).train()
        self.n_params = sum(p.numel() for p in self.model.parameters())
        kw = {"fused": True} if fused and device.type == "cuda" else {}
        self.opt = torch.optim.AdamW(adamw_groups(self.model, WD), **OPT, **kw)
        self.adamw = "fused" if kw else "default"
        self.loss_fn = ClipLoss()
        self.batch, self.device = batch, device
        self.forward = torch.compile(self._forward) if compile_ else self._forward

    def _forward(self, pixels: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=torch.bfloat16):
            image, _ = self.model.encode_image(pixels)
            text = self.model.encode_text(input_ids, attention_mask)
            return self.loss_fn(image, text, self.model.logit_scale)

    def step(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        loss = self.forward(self.batch["pixels"], self.batch["input_ids"], self.batch["attention_mask"])
        loss.backward()
        self.opt.step()


class OpenClip(Runner):
    """The step of open_clip_train.train.train_one_epoch for precision amp_bf16, accum_freq 1, one process."""

    def __init__(self, a: Arch, batch: dict, device: torch.device, compile_: bool):
        import open_clip
        from open_clip.loss import ClipLoss as OpenClipLoss
        from open_clip.model import CLIP

        self.name = "open_clip" + (" + torch.compile" if compile_ else "")
        self.version = open_clip.__version__
        torch.manual_seed(0)
        if a == VIT_B_32:
            model = open_clip.create_model("ViT-B-32", precision="amp_bf16", device=device, output_dict=True)
        else:
            vision = {"image_size": a.image_size, "layers": a.vision_layers, "width": a.vision_width,
                      "patch_size": a.patch, "head_width": a.vision_width // a.vision_heads}
            text = {"context_length": a.context, "vocab_size": a.vocab, "width": a.text_width,
                    "heads": a.text_heads, "layers": a.text_layers}
            model = CLIP(a.embed_dim, vision, text, output_dict=True).to(device)
        self.model = model.train()
        self.n_params = sum(p.numel() for p in self.model.parameters())
        self.opt = torch.optim.AdamW(adamw_groups(self.model, WD), **OPT)  # open_clip main.py: no fused/foreach flag
        self.adamw = "default"
        self.loss_fn = OpenClipLoss()
        self.run_model = torch.compile(self.model) if compile_ else self.model  # open_clip main.py --torchcompile
        self.batch, self.device = batch, device

    def step(self) -> None:
        self.opt.zero_grad()
        with torch.autocast(self.device.type, dtype=torch.bfloat16):
            out = self.run_model(self.batch["pixels"], self.batch["tokens"])
            losses = self.loss_fn(**out, output_dict=True)
            total = sum(losses.values())
        total.backward()
        self.opt.step()
        with torch.no_grad():
            self.model.logit_scale.clamp_(0, math.log(100))


# ---------------------------------------------------------------------------------------------------------------
# timing


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_steps(r: Runner, steps: int, device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        r.step()
    sync(device)
    return time.perf_counter() - t0


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        return f"{p.name} ({p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs), CUDA {torch.version.cuda}"
    return f"CPU {platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], check=False, capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=10).stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny towers and few steps (runs on a CPU)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=None, help="default 256 (smoke: 8)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per round (default 20; smoke 3)")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3; smoke 2)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 10; smoke 1)")
    ap.add_argument("--variants", default=None,
                    help="comma list of ours, open_clip, ours_compile, open_clip_compile "
                         "(default: all four on a GPU, ours and open_clip with --smoke)")
    ap.add_argument("--no-fused-adamw", action="store_true", help="ours with AdamW's default (foreach) kernels")
    ap.add_argument("--peak-tflops", type=float, default=H100_BF16_DENSE_TFLOPS)
    ap.add_argument("--out", type=Path, default=None, help="also write the Markdown here")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers as JSON here")
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    arch = SMOKE if args.smoke else VIT_B_32
    batch_size = args.batch or (8 if args.smoke else 256)
    steps = args.steps or (3 if args.smoke else 20)
    rounds = args.rounds or (2 if args.smoke else 3)
    warmup = args.warmup if args.warmup is not None else (1 if args.smoke else 10)
    variants = (args.variants or ("ours,open_clip" if args.smoke or device.type != "cuda"
                                  else "ours,open_clip,ours_compile,open_clip_compile")).split(",")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    g = torch.Generator(device="cpu").manual_seed(0)
    tokens = torch.randint(1, arch.vocab - 2, (batch_size, arch.context), generator=g)
    tokens[:, -1] = arch.vocab - 1  # end-of-text last (open_clip pools there: the highest token id)
    batch = {
        "pixels": torch.randn(batch_size, 3, arch.image_size, arch.image_size, generator=g).to(device),
        "tokens": tokens.to(device),
        "input_ids": tokens.to(device),
        "attention_mask": torch.ones(batch_size, arch.context, dtype=torch.long, device=device),
    }

    notes: list[str] = []
    runners: list[Runner] = []
    for v in variants:
        v = v.strip()
        if v.startswith("open_clip"):
            try:
                runners.append(OpenClip(arch, batch, device, compile_=v.endswith("_compile")))
            except ImportError as e:
                if not args.smoke:
                    raise SystemExit(f"open_clip is not importable ({e}); carry its wheels (bench/README.md)")
                notes.append(f"{v}: skipped, open_clip not importable ({e})")
        elif v.startswith("ours"):
            runners.append(Ours(arch, batch, device, compile_=v.endswith("_compile"), fused=not args.no_fused_adamw))
        else:
            raise SystemExit(f"unknown variant {v!r}")

    gflop_per_sample = 3 * (arch.image_gflop() + arch.text_gflop())
    compile_s: dict[str, float] = {}
    for r in runners:  # warm-up (and compilation) outside the timed rounds
        t0 = time.perf_counter()
        for _ in range(warmup):
            r.step()
        sync(device)
        compile_s[r.name] = time.perf_counter() - t0
        print(f"{r.name}: warm-up {warmup} steps {compile_s[r.name]:.1f} s", file=sys.stderr, flush=True)
    times: dict[str, list[float]] = {r.name: [] for r in runners}
    for i in range(rounds):
        for r in runners:
            times[r.name].append(time_steps(r, steps, device))
        print(f"round {i + 1}/{rounds}: " + ", ".join(f"{k} {batch_size * steps / v[-1]:.1f}/s"
                                                   for k, v in times.items()), file=sys.stderr, flush=True)

    rate = {k: batch_size * steps / statistics.median(v) for k, v in times.items()}
    ref = rate.get("open_clip")
    peak_mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    mode = "SMOKE (tiny towers; not a throughput measurement)" if args.smoke else "ViT-B/32 + 12×512 text, from scratch"
    lines = [
        f"### Training throughput — {mode}",
        "",
        (f"- device: {machine(device)}; torch {torch.__version__}; commit {git_commit()}; "
        f"load average {os.getloadavg()[0]:.2f}"),
        (f"- batch {batch_size}, bf16 autocast, synthetic data on the device; {rounds} interleaved rounds × {steps} "
        f"steps after {warmup} warm-up steps; median round"),
        (f"- FLOPs per sample: 3 × ({arch.image_gflop():.4g} image + {arch.text_gflop():.4g} text) = "
        f"{gflop_per_sample:.4g} GFLOP; peak {args.peak_tflops:.0f} TFLOP/s (bf16 dense)"),
        "",
        "| variant | params | AdamW | samples/s | × open_clip | TFLOP/s | % of peak | warm-up s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in runners:
        s = rate[r.name]
        tflops = s * gflop_per_sample / 1e3
        ratio = f"{s / ref:.3f}" if ref else "—"
        lines.append(f"| {r.name} | {r.n_params / 1e6:.1f} M | {r.adamw} | {s:,.1f} | {ratio} | {tflops:.2f} | "
                     f"{100 * tflops / args.peak_tflops:.2f} | {compile_s[r.name]:.1f} |")
    if device.type == "cuda":
        lines.append(f"\npeak GPU memory allocated (all variants alive): {peak_mem:.1f} GiB")
    lines += [f"\n{n}" for n in notes]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    if args.json:
        args.json.write_text(json.dumps({"samples_per_s": rate, "batch": batch_size, "smoke": args.smoke,
                                         "gflop_per_sample": gflop_per_sample, "device": machine(device)}, indent=1))
    return 0

if __name__ == "__main__":
    raise SystemExit(main())
