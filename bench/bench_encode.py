"""Benchmark photosearch's encoders: image throughput per backend, numerical parity, text, end-to-end, cold start.

    python bench/bench_encode.py                  # full CPU run (about 10 minutes on 2 cores)
    python bench/bench_encode.py --quick          # smoke test: short timings, no torch.compile
    python bench/bench_encode.py --device cuda    # GPU machine: eager fp32/fp16/bf16 (+ channels_last), no ONNX
    python bench/bench_encode.py --out bench/encode-$(hostname).md

Sections (``--only`` picks some):
  cold   load_model("default") in a fresh process: torch backend, ONNX first-time export (empty PHOTOSEARCH_CACHE)
         and two ONNX cached loads (torch-free where photosearch supports it); wall times, VmRSS, model class.
  image  encode_pixels throughput on random preprocessed arrays (model only, no decode) for every image path, and
         min cosine of each path's embedding / visual vectors against torch eager fp32 on 64 real-looking images.
         On CPU this includes an ONNX Runtime investigation (thread counts, spinning, graph optimisation level,
         memory arena, execution mode, int8 dynamic and static quantisation) unless --no-explore.
  text   encode_texts throughput, batch 1 and 64, typical queries: torch and (when loaded) the ONNX text path.
  e2e    encode_images on 12-megapixel JPEGs (decode with JPEG draft mode + preprocess + model), with the split
         between decode and model time.

Timing: each configuration is warmed up, then called repeatedly until it has run for --min-time seconds and at
least --min-reps calls; images/s is batch / median call time. "img/CPU-s" is images per CPU-second this process
consumed (time.process_time) over the same calls: on a machine shared with other jobs the wall-clock rate drops
while this one stays near the uncontended per-core rate (spinning ONNX Runtime threads lower it, as they burn
CPU while waiting). Markdown goes to stdout (and --out); progress to stderr.
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import json
import logging
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench._common import proc_status_mib  # noqa: E402

PARITY_MIN_COSINE = 0.9999  # the bar photosearch.model.fastpath applies before it enables a fast path
TARGET_IMAGES_PER_S = 70.0  # what the indexing pipeline needs on the 2-core reference machine
STAMPS_DIR = Path("/root/.cache/photosearch/data/debian/tuxpaint-stamps-default/usr/share/tuxpaint/stamps")
QUERIES = [
    "dog on a beach at sunset", "a red car parked in the snow", "birthday cake with candles",
    "children playing in the park", "mountain lake with reflections", "a cat sleeping on a sofa",
    "city skyline at night", "plate of pasta with tomato sauce", "old church in a small village",
    "bicycle leaning against a wall", "group photo at a wedding", "fireworks over the river",
    "a bowl of fresh fruit", "snowy forest in winter", "sailing boat on the sea", "flowers in a garden",
]
Runner = Callable[[np.ndarray], "tuple[np.ndarray, np.ndarray]"]


def log(msg: str) -> None:
    print(f"[bench_encode {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def l2n(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), np.float32(1e-12))


def min_cos(a: np.ndarray, b: np.ndarray) -> float:
    return float((l2n(a) * l2n(b)).sum(-1).min())


def load1() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


# ---------------------------------------------------------------------------------------------------------------
# timing
@dataclass
class Timing:
    items: int  # items per call
    calls: list[float] = field(default_factory=list)  # seconds per call
    cpu_s: float = 0.0
    load: float = float("nan")  # 1-min load average at the end of the measurement

    @property
    def median(self) -> float:
        return statistics.median(self.calls)

    @property
    def rate(self) -> float:
        return self.items / self.median

    @property
    def cpu_rate(self) -> float:
        return self.items * len(self.calls) / self.cpu_s if self.cpu_s > 0 else float("nan")

    def to_dict(self) -> dict:
        return {"items": self.items, "calls": self.calls, "cpu_s": self.cpu_s, "load": self.load}

    @classmethod
    def from_dict(cls, d: dict) -> Timing:
        return cls(d["items"], list(d["calls"]), d["cpu_s"], d["load"])


@dataclass
class Budget:
    min_time: float = 3.0
    min_reps: int = 3
    warm_time: float = 1.0
    max_warm_calls: int = 10


def measure(call: Callable[[], object], items: int, budget: Budget) -> Timing:
    """Warm up (≥1 call, up to ``warm_time`` s), then call until ≥ min_time s and ≥ min_reps calls."""
    start = time.perf_counter()
    call()
    n = 1
    while time.perf_counter() - start < budget.warm_time and n < budget.max_warm_calls:
        call()
        n += 1
    t = Timing(items)
    c0, w0 = time.process_time(), time.perf_counter()
    while len(t.calls) < budget.min_reps or time.perf_counter() - w0 < budget.min_time:
        s = time.perf_counter()
        call()
        t.calls.append(time.perf_counter() - s)
    t.cpu_s = time.process_time() - c0
    t.load = load1()
    return t


def run_chunked(runner: Runner, pixels: np.ndarray, batch: int, pad: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Run ``runner`` over ``pixels`` in batches; ``pad`` pads the last batch to ``batch`` (fixed-shape paths)."""
    embs, viss = [], []
    for i in range(0, len(pixels), batch):
        chunk = pixels[i : i + batch]
        n = len(chunk)
        if pad and n < batch:
            chunk = np.concatenate([chunk, np.zeros((batch - n, *chunk.shape[1:]), chunk.dtype)])
        e, v = runner(chunk)
        embs.append(np.asarray(e)[:n])
        viss.append(np.asarray(v)[:n])
    return np.concatenate(embs), np.concatenate(viss)


# ---------------------------------------------------------------------------------------------------------------
# test images
def synth_photo(rng: np.random.Generator, w: int, h: int) -> Image.Image:  # noqa: F821
    """A photo-like RGB image: low-frequency colour blobs + a smooth gradient + sensor-like noise."""
    from PIL import Image

    small = rng.uniform(0, 255, (int(rng.integers(2, 7)), int(rng.integers(2, 7)), 3)).astype(np.uint8)
    img = np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC), dtype=np.float32)
    gx = np.linspace(-1.0, 1.0, w, dtype=np.float32)[None, :, None] * rng.uniform(-60, 60, 3).astype(np.float32)
    gy = np.linspace(-1.0, 1.0, h, dtype=np.float32)[:, None, None] * rng.uniform(-60, 60, 3).astype(np.float32)
    img += gx
    img += gy
    img += rng.normal(0.0, float(rng.uniform(2, 12)), (h, w, 3)).astype(np.float32)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def parity_images(tmp: Path, n: int = 64, seed: int = 0, stamps: bool = True) -> tuple[list[Path], str]:
    """``n`` image files: up to n/4 Tux Paint stamp PNGs (real clip art, when that cache exists) and synthetic photos
    of varied sizes written as JPEG and PNG."""
    rng = np.random.default_rng(seed)
    out: list[Path] = []
    if stamps and STAMPS_DIR.is_dir():
        stamps = sorted(STAMPS_DIR.rglob("*.png"))
        if stamps:
            step = max(1, len(stamps) // (n // 4))
            out = stamps[::step][: n // 4]
    n_stamps = len(out)
    sizes = [(640, 480), (480, 640), (1024, 768), (300, 300), (1200, 800), (224, 224), (800, 1200), (2000, 1500),
             (500, 333), (256, 1024)]
    d = tmp / "parity"
    d.mkdir(parents=True, exist_ok=True)
    for i in range(n - n_stamps):
        w, h = sizes[i % len(sizes)]
        im = synth_photo(rng, w, h)
        p = d / (f"synth_{i:02d}.jpg" if i % 3 else f"synth_{i:02d}.png")
        im.save(p, quality=90) if p.suffix == ".jpg" else im.save(p)
        out.append(p)
    return out, f"{n_stamps} Tux Paint stamp PNGs + {n - n_stamps} synthetic photos (gradients + noise, 224-2000 px, JPEG/PNG)"


def big_jpegs(tmp: Path, n: int, seed: int = 1) -> list[Path]:
    """``n`` 12-megapixel JPEGs (4000x3000, every fourth one portrait), quality 90."""
    rng = np.random.default_rng(seed)
    d = tmp / "jpeg12mp"
    d.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        w, h = (3000, 4000) if i % 4 == 3 else (4000, 3000)
        p = d / f"photo_{i:02d}.jpg"
        synth_photo(rng, w, h).save(p, quality=90)
        paths.append(p)
    return paths


# ---------------------------------------------------------------------------------------------------------------
# image paths
@dataclass
class ImageConfig:
    name: str
    make: Callable[[], Runner]  # builds the runner (returns l2-normalised (emb, visual))
    workers: int = 1  # >1: the runner is fed workers×batch images per call, split across threads
    pad: bool = False  # fixed-shape path: pad the parity set's last batch
    fp32_exact: bool = True  # expected to meet the parity bar (int8 / half precision rows are not)
    note: str = ""


@dataclass
class ImageResult:
    cfg: ImageConfig
    timings: dict[int, Timing] = field(default_factory=dict)
    cos_emb: float = float("nan")
    cos_vis: float = float("nan")
    error: str = ""
    extra: str = ""


def normalised(fn: Runner) -> Runner:
    def run(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        e, v = fn(p)
        return l2n(e), l2n(v)

    return run


class ConcurrentRunner:
    """Split each call's images across ``workers`` Python threads sharing one runner (ONNX Runtime releases the
    GIL in ``run``, so two 1-thread calls proceed in parallel)."""

    def __init__(self, runner: Runner, workers: int):
        self.runner, self.workers = runner, workers
        self.pool = ThreadPoolExecutor(workers)

    def __call__(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        parts = [p for p in np.array_split(pixels, self.workers) if len(p)]
        outs = list(self.pool.map(self.runner, parts))
        return np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs])


def ort_runner(path: Path, intra: int = 2, inter: int = 1, level: str = "all", spinning: bool = True,
               arena: bool = True, parallel: bool = False) -> Runner:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    so.intra_op_num_threads = intra
    so.inter_op_num_threads = inter
    so.enable_cpu_mem_arena = arena
    so.log_severity_level = 3  # errors only
    if parallel:
        so.execution_mode = ort.ExecutionMode.ORT_PARALLEL
    if not spinning:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

    def run(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        e, v = sess.run(None, {"pixels": np.ascontiguousarray(p, dtype=np.float32)})
        return e, v

    return normalised(run)


def torch_module_runner(module, device, dtype, channels_last: bool) -> Runner:
    import torch

    fmt = torch.channels_last if channels_last else torch.contiguous_format

    @torch.inference_mode()
    def run(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = torch.from_numpy(np.ascontiguousarray(p, dtype=np.float32)).to(device).to(dtype)
        x = x.contiguous(memory_format=fmt)
        e, v = module.encode_image(x)
        return e.float().cpu().numpy(), v.float().cpu().numpy()

    return normalised(run)


def quantize(src: Path, tmp: Path, kind: str, calib: np.ndarray | None = None) -> Path:
    """int8 copies of the exported model: ``dynamic`` (weights only, QUInt8) or ``static`` (QDQ, per-channel
    weights, reduce_range as ORT advises on AVX2 without VNNI, MinMax calibration on ``calib``)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs a warning per shape tensor it leaves in float
    try:
        return _quantize(src, tmp, kind, calib)
    finally:
        root.setLevel(level)


def _quantize(src: Path, tmp: Path, kind: str, calib: np.ndarray | None) -> Path:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = tmp / "pre.onnx"
    if not pre.exists():
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
    out = tmp / f"int8_{kind}.onnx"
    if kind == "dynamic":
        quantize_dynamic(str(pre), str(out), weight_type=QuantType.QUInt8)
    else:
        assert calib is not None

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.it = iter([{"pixels": calib[i : i + 1]} for i in range(len(calib))])

            def get_next(self):
                return next(self.it, None)

        quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        reduce_range=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out


def onnx_image_path(model) -> Path:
    """Where photosearch caches the image-path ONNX export of ``model`` (the location moved between versions)."""
    size = model.preprocess_config.size
    try:
        from photosearch.model.onnx_model import export_paths

        return export_paths(model.model_id, size)[0]
    except ImportError:
        from photosearch.model.fastpath import cache_dir

        return cache_dir() / "onnx" / f"{model.model_id}-{size}.onnx"


def ort_threads(model) -> str:
    """intra_op threads of the ONNX Runtime session behind ``model``'s image path, if one can be found."""
    sess = getattr(model, "image_session", None) or getattr(getattr(model, "_image_runner", None), "session", None)
    try:
        return str(sess.get_session_options().intra_op_num_threads)
    except AttributeError:
        return "?"


def ort_threads_text(model) -> str:
    try:
        return str(model.text_session.get_session_options().intra_op_num_threads)
    except AttributeError:
        return "?"


def fold_same_pads(model, src: Path, dst: Path) -> Path:
    """Copy of the export with timm's TF-"same" Pad nodes folded into the following Conv's (asymmetric) pads.

    tf_efficientnet_lite0's five stride-2 convs pad dynamically (Conv2dSame); in ONNX that is a Pad before the
    Conv, which makes ONNX Runtime leave its NCHWc layout (ReorderOutput → Pad → ReorderInput) five times. For the
    fixed 224×224 input the pads are constants, and ONNX Conv accepts asymmetric pads."""
    import onnx
    import torch
    from timm.layers.conv2d_same import Conv2dSame
    from timm.layers.padding import pad_same_arg

    pads: list[tuple[int, int, int, int]] = []  # (left, right, top, bottom) in forward order
    hooks = [c.register_forward_pre_hook(
        lambda c, a: pads.append(tuple(pad_same_arg(a[0].shape[-2:], c.weight.shape[-2:], c.stride, c.dilation))))
        for c in model.module.modules() if isinstance(c, Conv2dSame)]
    try:
        size = model.preprocess_config.size
        with torch.inference_mode():
            model.module.encode_image(torch.zeros(1, 3, size, size))
    finally:
        for h in hooks:
            h.remove()
    graph = onnx.load(str(src))
    nodes = list(graph.graph.node)
    pad_nodes = [n for n in nodes if n.op_type == "Pad"]
    if len(pad_nodes) != len(pads):
        raise RuntimeError(f"{len(pad_nodes)} Pad nodes but {len(pads)} Conv2dSame layers")
    for pad, (left, right, top, bottom) in zip(pad_nodes, pads):
        users = [n for n in nodes if pad.output[0] in n.input]
        if len(users) != 1 or users[0].op_type != "Conv":
            raise RuntimeError(f"Pad {pad.name} does not feed exactly one Conv")
        conv = users[0]
        conv.input[0] = pad.input[0]
        for a in [a for a in conv.attribute if a.name == "pads"]:
            conv.attribute.remove(a)
        conv.attribute.append(onnx.helper.make_attribute("pads", [top, left, bottom, right]))
        graph.graph.node.remove(pad)
    used = {name for n in graph.graph.node for name in n.input}
    for init in [i for i in graph.graph.initializer if i.name not in used]:  # the pad-size constants
        graph.graph.initializer.remove(init)
    onnx.save(graph, str(dst))
    return dst


def bench_image_configs(configs: list[ImageConfig], batches: list[int], inputs: np.ndarray, parity_px: np.ndarray,
                        ref: tuple[np.ndarray, np.ndarray], budget: Budget) -> list[ImageResult]:
    results = []
    parity_batch = max(b for b in batches if b <= len(parity_px))
    for cfg in configs:
        res = ImageResult(cfg)
        results.append(res)
        try:
            t = time.perf_counter()
            runner = cfg.make()
            setup = time.perf_counter() - t
            if setup > 1.0:
                res.extra = f"setup {setup:.1f} s"
            e, v = run_chunked(runner, parity_px, max(1, parity_batch // cfg.workers), pad=cfg.pad)
            res.cos_emb, res.cos_vis = min_cos(ref[0], e), min_cos(ref[1], v)
            for b in batches:
                x = inputs[: b * cfg.workers]
                res.timings[b] = measure(lambda runner=runner, x=x: runner(x), len(x), budget)
                log(f"  {cfg.name:48s} b{b:<4d} {res.timings[b].rate:8.1f} img/s  "
                    f"({res.timings[b].cpu_rate:.1f} img/CPU-s, load {res.timings[b].load:.2f})")
            if isinstance(runner, ConcurrentRunner):
                runner.pool.shutdown()
        except Exception as exc:  # noqa: BLE001 - a failing path is reported, not fatal
            res.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
            log(f"  {cfg.name}: FAILED {res.error}")
    return results


# ---------------------------------------------------------------------------------------------------------------
# torch.compile (in a subprocess: it can take minutes per shape and must not take the main run down with it)
def compile_worker(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    if args.compile_mode == "freezing":
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
    from photosearch.model import load_model

    model = load_model("default", device="cpu", image_backend="torch")
    module = copy.deepcopy(model.module).eval()
    compiled = torch.compile(module.encode_image, dynamic=False)

    @torch.no_grad()
    def run(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        e, v = compiled(torch.from_numpy(np.ascontiguousarray(p, dtype=np.float32)))
        return l2n(e.numpy()), l2n(v.numpy())

    budget = Budget(args.min_time, args.min_reps, args.warm_time)
    data = np.load(args.compile_io)
    inputs, parity = data["inputs"], data["parity"]
    batches = sorted(args.batches, reverse=True)  # largest first: the parity run reuses its compiled graph
    for i, b in enumerate(batches):
        t = time.perf_counter()
        run(inputs[:b])
        compile_s = time.perf_counter() - t
        rec: dict = {"batch": b, "compile_s": compile_s}
        if i == 0:
            e, v = run_chunked(run, parity, b, pad=True)
            out = Path(args.compile_io).with_suffix(".out.npz")
            np.savez(out, emb=e, vis=v)
            rec["parity"] = str(out)
        rec["timing"] = measure(lambda b=b: run(inputs[:b]), b, budget).to_dict()
        print(json.dumps(rec), flush=True)


def bench_compile(args: argparse.Namespace, tmp: Path, batches: list[int], inputs: np.ndarray, parity_px: np.ndarray,
                  ref: tuple[np.ndarray, np.ndarray]) -> ImageResult:
    name = "torch.compile inductor" + (" (freezing)" if args.compile_mode == "freezing" else "")
    res = ImageResult(ImageConfig(name, make=lambda: None))
    io = tmp / "compile_io.npz"
    np.savez(io, inputs=inputs[: max(batches)], parity=parity_px)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "compile", "--compile-io", str(io),
           "--compile-mode", args.compile_mode, "--threads", str(args.threads), "--min-time", str(args.min_time),
           "--min-reps", str(args.min_reps), "--warm-time", str(args.warm_time), "--batches", *map(str, batches)]
    log(f"torch.compile in a subprocess (timeout {args.compile_timeout:.0f} s)")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.compile_timeout, check=False)
        out, err, rc = proc.stdout, proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        err, rc = f"timed out after {args.compile_timeout:.0f} s", None
    compile_times = []
    for line in out.splitlines():
        if not line.startswith("{"):
            continue
        rec = json.loads(line)
        res.timings[rec["batch"]] = Timing.from_dict(rec["timing"])
        compile_times.append(f"b{rec['batch']} {rec['compile_s']:.0f} s")
        if "parity" in rec:
            got = np.load(rec["parity"])
            res.cos_emb, res.cos_vis = min_cos(ref[0], got["emb"]), min_cos(ref[1], got["vis"])
        log(f"  {name:48s} b{rec['batch']:<4d} {res.timings[rec['batch']].rate:8.1f} img/s "
            f"(compile {rec['compile_s']:.0f} s)")
    res.extra = "compile " + ", ".join(compile_times) if compile_times else ""
    if rc != 0:
        tail = [ln for ln in err.strip().splitlines() if ln.strip()][-1:] or ["no output"]
        res.error = (err if rc is None else f"exit {rc}: {tail[0][:200]}")
        if res.timings:
            res.error = "partial: " + res.error
    return res


# ---------------------------------------------------------------------------------------------------------------
# cold start (fresh process per measurement)
def cold_worker(args: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    from photosearch.model import load_model  # torch is not imported here: photosearch may start without it

    t1 = time.perf_counter()
    model = load_model("default", device=args.device, image_backend=args.backend)
    t2 = time.perf_counter()
    rss_load = proc_status_mib("VmRSS")
    torch_imported = "torch" in sys.modules
    if torch_imported:
        import torch

        torch.set_num_threads(args.threads)
    px = np.random.default_rng(0).uniform(-1, 1, (1, 3, 224, 224)).astype(np.float32)
    t = time.perf_counter()
    model.encode_pixels(px)
    first_img = time.perf_counter() - t
    t = time.perf_counter()
    model.encode_texts([QUERIES[0]])
    first_txt = time.perf_counter() - t
    rec = {
        "import_s": t1 - t0, "load_s": t2 - t1, "first_image_s": first_img, "first_text_s": first_txt,
        "rss_load_mib": rss_load, "rss_after_mib": proc_status_mib("VmRSS"), "hwm_mib": proc_status_mib("VmHWM"),
        "backend": model.image_backend, "text_backend": getattr(model, "text_backend", "torch"),
        "model_type": type(model).__name__, "torch_imported": torch_imported,
    }
    if args.device.startswith("cuda"):
        rec["cuda_max_alloc_mib"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(rec), flush=True)


def bench_cold(args: argparse.Namespace, cache: Path) -> list[tuple[str, dict]]:
    runs = [("torch backend", "torch", cache / "torch_cache")]
    if args.device == "cpu":
        runs += [("onnx backend, first run (exports ONNX)", "onnx", cache / "onnx_cache"),
                 ("onnx backend, cached export", "onnx", cache / "onnx_cache"),
                 ("onnx backend, cached export (again)", "onnx", cache / "onnx_cache")]
    out = []
    for label, backend, cdir in runs:
        cdir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PHOTOSEARCH_CACHE=str(cdir))
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "cold", "--backend", backend,
               "--device", args.device, "--threads", str(args.threads)]
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, check=False)
        wall = time.perf_counter() - t
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            out.append((label, {"error": f"exit {proc.returncode}: {tail[:200]}"}))
            log(f"  cold start {label}: FAILED {tail[:200]}")
            continue
        rec = json.loads(lines[-1])
        rec["process_s"] = wall
        out.append((label, rec))
        log(f"  cold start {label}: load_model {rec['load_s']:.1f} s, process {wall:.1f} s, RSS {rec['rss_load_mib']:.0f} MiB")
    return out


# ---------------------------------------------------------------------------------------------------------------
# machine info and Markdown
def machine_info(device: str) -> list[tuple[str, str]]:
    import PIL
    import timm
    import torch
    import transformers

    cpu = "unknown"
    flags: set[str] = set()
    try:
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            if line.startswith("model name") and cpu == "unknown":
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        cpu = platform.processor() or "unknown"
    simd = " ".join(f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile") if f in flags)
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    mem = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    quota = ""
    try:
        q = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if q and q[0] != "max":
            quota = f", cgroup quota {int(q[0]) / int(q[1]):.1f} CPUs"
    except (OSError, ValueError, IndexError):
        pass
    try:
        import onnxruntime

        ort_v = onnxruntime.__version__
    except ImportError:
        ort_v = "not installed"
    try:
        rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=False).stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        rev = "?"
    rows = [
        ("CPU", f"{cpu} ({simd or 'no AVX2'})"),
        ("Cores", f"{os.cpu_count()} logical, {affinity} usable{quota}; torch threads {torch.get_num_threads()}"),
        ("Memory", mem),
    ]
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(0)
        gpu = (f"{props.name}, {props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}, "
               f"cuDNN {torch.backends.cudnn.version()}, TF32 convs {torch.backends.cudnn.allow_tf32}")
        rows.append(("GPU", gpu))
    rows += [
        ("Software", (f"Python {platform.python_version()}, torch {torch.__version__}, onnxruntime {ort_v}, "
                      f"timm {timm.__version__}, transformers {transformers.__version__}, numpy {np.__version__}, "
                      f"Pillow {PIL.__version__}")),
        ("Commit", rev),
    ]
    return rows


def md_table(headers: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def fmt_cos(c: float) -> str:
    return "–" if math.isnan(c) else f"{c:.6f}"


def image_table(results: list[ImageResult], batches: list[int], ref_rates: dict[int, float], cpu: bool) -> str:
    headers = ["Configuration", "Batch", "images/s", "× eager", "ms/call"]
    if cpu:
        headers.append("img/CPU-s")
    headers += ["load1", "min cos emb", "min cos visual", "parity"]
    rows = []
    for r in results:
        ok = r.cos_emb >= PARITY_MIN_COSINE and r.cos_vis >= PARITY_MIN_COSINE
        parity = "ref" if r.cfg.name.endswith("(reference)") else ("–" if math.isnan(r.cos_emb) else
                                                                   ("pass" if ok else "**FAIL**"))
        if r.error and not r.timings:
            rows.append([r.cfg.name, "–", "skipped", "", "", *([""] if cpu else []), "", "", "", r.error])
            continue
        for b in batches:
            t = r.timings.get(b)
            if t is None:
                continue
            label = f"{r.cfg.workers}×{b}" if r.cfg.workers > 1 else str(b)
            speed = t.rate / ref_rates[b] if ref_rates.get(b) else float("nan")
            row = [r.cfg.name, label, f"{t.rate:.1f}", "–" if math.isnan(speed) else f"{speed:.1f}",
                   f"{t.median * 1000:.1f}"]
            if cpu:
                row.append(f"{t.cpu_rate:.1f}")
            row += [f"{t.load:.2f}", fmt_cos(r.cos_emb), fmt_cos(r.cos_vis), parity]
            rows.append(row)
    return md_table(headers, rows)


# ---------------------------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short timings, fewer images, no torch.compile (smoke test)")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda / cuda:N")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (and ONNX intra-op default)")
    ap.add_argument("--out", type=Path, help="also write the Markdown to this file")
    ap.add_argument("--only", nargs="+", choices=["cold", "image", "text", "e2e"], help="run only these sections")
    ap.add_argument("--no-explore", action="store_true", help="skip the ONNX Runtime option/int8 investigation")
    ap.add_argument("--compile-mode", choices=["freezing", "default", "off"], default=None,
                    help="torch.compile variant on CPU (default: freezing; off with --quick)")
    ap.add_argument("--compile-timeout", type=float, default=900.0, help="seconds for the whole torch.compile run")
    ap.add_argument("--e2e-images", type=int, default=None, help="number of 12-MP JPEGs (default 16, quick 4)")
    ap.add_argument("--min-time", type=float, default=None, help="seconds per configuration (default 3, quick 0.3)")
    ap.add_argument("--min-reps", type=int, default=None, help="calls per configuration (default 3, quick 1)")
    ap.add_argument("--warm-time", type=float, default=None, help="warm-up seconds (default 1, quick 0.1)")
    ap.add_argument("--batches", type=int, nargs="+", default=None, help="image batch sizes (cpu 1 8 32, cuda 1 32 128)")
    ap.add_argument("--worker", choices=["cold", "compile"], help=argparse.SUPPRESS)
    ap.add_argument("--backend", default="torch", help=argparse.SUPPRESS)
    ap.add_argument("--compile-io", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.min_time = args.min_time if args.min_time is not None else (0.3 if args.quick else 3.0)
    args.min_reps = args.min_reps if args.min_reps is not None else (1 if args.quick else 3)
    args.warm_time = args.warm_time if args.warm_time is not None else (0.1 if args.quick else 1.0)
    if args.compile_mode is None:
        args.compile_mode = "off" if args.quick else "freezing"
    cuda = args.device.startswith("cuda")
    if args.batches is None:
        args.batches = [1, 32, 128] if cuda else [1, 8, 32]
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("onnxruntime").setLevel(logging.ERROR)

    if args.worker == "cold":
        return cold_worker(args)
    if args.worker == "compile":
        return compile_worker(args)
    run_main(args, cuda)


def run_main(args: argparse.Namespace, cuda: bool) -> None:
    sections = set(args.only or ["cold", "image", "text", "e2e"])
    load_start = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    started = _dt.datetime.now().astimezone()
    budget = Budget(args.min_time, args.min_reps, args.warm_time)
    tmp = Path(tempfile.mkdtemp(prefix="bench_encode_"))
    md: list[str] = []
    findings: list[str] = []
    e2e_findings: list[str] = []
    try:
        # -- cold start first: fresh processes, and it leaves the ONNX export cached for the rest ------------------
        cache = tmp / "cache"
        cold = []
        if "cold" in sections:
            log("cold start")
            cold = bench_cold(args, cache)
        os.environ["PHOTOSEARCH_CACHE"] = str(cache / "onnx_cache")

        import torch

        torch.set_num_threads(args.threads)
        from photosearch.model import load_model

        info = machine_info(args.device)
        log("loading models")
        ref_model = load_model("default", device="cpu", image_backend="torch")  # the numerical reference
        dev_model = load_model("default", device=args.device, image_backend="torch") if cuda else None
        fast_model = None
        if not cuda:
            try:
                fast_model = load_model("default", device="cpu", image_backend="onnx")
                if getattr(fast_model, "text_backend", "torch") != "onnx" and hasattr(fast_model, "module"):
                    # the first load wrote the exports; a second one is what the app gets at every later start
                    fast_model = load_model("default", device="cpu", image_backend="onnx")
            except Exception as exc:  # noqa: BLE001
                findings.append(f"ONNX Runtime path unavailable: {exc}")

        image_results: list[ImageResult] = []
        ref_rates: dict[int, float] = {}
        parity_desc = ""
        if "image" in sections:
            paths, parity_desc = parity_images(tmp, 64)
            parity_px = np.stack([ref_model.preprocess(p) for p in paths])
            ref = run_chunked(ref_model.encode_pixels, parity_px, 32)
            inputs = np.random.default_rng(0).uniform(-1, 1, (max(args.batches) * 2, 3, 224, 224)).astype(np.float32)
            configs = image_configs(args, cuda, ref_model, dev_model, fast_model, tmp)
            log("image throughput")
            image_results = bench_image_configs(configs, args.batches, inputs, parity_px, ref, budget)
            if not cuda and args.compile_mode != "off":
                image_results.insert(2, bench_compile(args, tmp, args.batches, inputs, parity_px, ref))
            elif not cuda:
                image_results.insert(2, ImageResult(ImageConfig("torch.compile inductor", make=lambda: None),
                                                    error="skipped (--quick or --compile-mode off)"))
            ref_rates = {b: t.rate for b, t in image_results[0].timings.items()}

        text_rows = []
        if "text" in sections:
            log("text throughput")
            queries = [form.format(q) for form in ("{}", "a photo of {}", "{}, close up", "{} in summer")
                       for q in QUERIES]
            text_ref = ref_model.encode_texts(queries)
            text_models = [(f"torch {args.device}" if cuda else "torch (reference)", dev_model or ref_model)]
            if fast_model is not None and getattr(fast_model, "text_backend", "torch") != "torch":
                label = (f"{fast_model.text_backend} ({type(fast_model).__name__}, "
                         f"intra_op={ort_threads_text(fast_model)})")
                text_models.append((label, fast_model))
            for label, tm in text_models:
                cos = min_cos(text_ref, tm.encode_texts(queries))
                for b in (1, 64):
                    qs = queries[:b]
                    t = measure(lambda qs=qs, tm=tm: tm.encode_texts(qs, batch_size=64), b, budget)
                    text_rows.append([label, str(b), f"{t.rate:.1f}", f"{t.median * 1000:.1f}", f"{t.cpu_rate:.1f}",
                                      f"{np.mean([len(q.split()) for q in qs]):.1f}", f"{t.load:.2f}", fmt_cos(cos)])
                    log(f"  text {label} b{b}: {t.rate:.1f} texts/s")

        e2e_rows = []
        e2e_note = ""
        if "e2e" in sections:
            n = args.e2e_images or (4 if args.quick else 16)
            log(f"writing {n} 12-megapixel JPEGs")
            jpgs = big_jpegs(tmp, n)
            mb = np.mean([p.stat().st_size for p in jpgs]) / 2**20
            models = [("torch eager", ref_model)] if not cuda else [(f"torch eager fp32 {args.device}", dev_model)]
            if fast_model is not None and fast_model.image_backend == "onnx":
                models.insert(0, ("onnxruntime (photosearch auto)", fast_model))
            from photosearch.model.preprocess import open_image, resize_crop, to_array

            for label, m in models:
                log(f"  e2e {label}")
                tot = measure(lambda m=m: m.encode_images(jpgs), n, budget)
                dec = measure(lambda m=m: [m.preprocess(p) for p in jpgs], n, budget)
                arr = np.stack([m.preprocess(p) for p in jpgs])
                mod = measure(lambda m=m, arr=arr: m.encode_pixels(arr), n, budget)
                d_ms, m_ms = dec.median / n * 1000, mod.median / n * 1000
                d_cpu, m_cpu = 1000 / dec.cpu_rate, 1000 / mod.cpu_rate
                e2e_rows.append([label, str(n), f"{tot.rate:.1f}", f"{tot.median / n * 1000:.1f}",
                                 f"{d_ms:.1f} / {d_cpu:.1f}", f"{m_ms:.1f} / {m_cpu:.1f}",
                                 f"{100 * d_cpu / (d_cpu + m_cpu):.0f}%", f"{tot.load:.2f}"])
                if not cuda:
                    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
                    e2e_findings.append(
                        f"End to end with {label}: {d_cpu:.0f} CPU-ms decode+preprocess + {m_cpu:.0f} CPU-ms model per "
                        f"12-MP JPEG, so {cores} fully idle cores cap indexing at ≈{cores * 1000 / (d_cpu + m_cpu):.0f}"
                        " photos/s however decode and model are overlapped (projection from CPU time).")
            cfg = ref_model.preprocess_config
            few = jpgs[: min(4, n)]
            full = measure(lambda: [to_array(resize_crop(open_image(p), cfg), cfg) for p in few], len(few), budget)
            e2e_note = (f"{n} JPEGs, mean {mb:.1f} MiB, 4000×3000 (1 in 4 portrait), quality 90, decoded one by one in "
                        f"the calling thread. Without JPEG draft mode (full 12-MP decode) decode+preprocess takes "
                        f"{full.median / len(few) * 1000:.0f} ms/image.")

        load_end = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3

        # -- Markdown ------------------------------------------------------------------------------------------------
        title = f"## Encoder benchmark ({args.device}) — {started:%Y-%m-%d %H:%M %Z}"
        md.append(title)
        md.append("")
        cmd = "python bench/bench_encode.py " + " ".join(sys.argv[1:])
        md.append(f"`{cmd.strip()}` — model `default` ({ref_model.info.name}, id {ref_model.model_id}); "
                  f"timings: median of ≥{args.min_reps} calls and ≥{args.min_time:g} s per row after warm-up.")
        md.append("")
        info.append(("Load average", (f"start {load_start[0]:.2f} / {load_start[1]:.2f} / {load_start[2]:.2f}, "
                                      f"end {load_end[0]:.2f} / {load_end[1]:.2f} / {load_end[2]:.2f} (1/5/15 min)")))
        md.append(md_table(["Machine", ""], [[k, v] for k, v in info]))
        md.append("")
        if image_results:
            md.append("### Image encoding, model only (`encode_pixels`, random preprocessed 224×224 input)")
            md.append("")
            md.append(image_table(image_results, args.batches, ref_rates, cpu=not cuda))
            md.append("")
            md.append(f"Parity: min cosine over 64 images ({parity_desc}) of each path's L2-normalised embedding and "
                      f"visual vector against torch eager fp32 on CPU; the bar is {PARITY_MIN_COSINE}. "
                      "`N×b` rows: N Python threads each running batches of b on the same session.")
            notes = [f"{r.cfg.name}: {'; '.join(x for x in (r.cfg.note, r.extra, r.error if r.timings else '') if x)}"
                     for r in image_results if r.cfg.note or r.extra or (r.error and r.timings)]
            if notes:
                md.append("")
                md += [f"- {n}" for n in notes]
            md.append("")
            findings += image_findings(image_results, args.batches, ref_rates, cuda)
        if text_rows:
            md.append("### Text encoding (`encode_texts`, typical queries)")
            md.append("")
            md.append(md_table(["Text backend", "Batch", "texts/s", "ms/call", "texts/CPU-s", "words/query", "load1",
                                "min cos vs torch (64 queries)"], text_rows))
            md.append("")
        if e2e_rows:
            md.append("### End to end (`encode_images` on 12-megapixel JPEGs, decode + preprocess + model)")
            md.append("")
            md.append(md_table(["Image backend", "Images", "images/s", "ms/image",
                                "decode+preprocess ms/image (wall / CPU)", "model ms/image (wall / CPU)",
                                "decode share of CPU", "load1"], e2e_rows))
            md.append("")
            md.append(e2e_note)
            md.append("")
        if cold:
            md.append("### Cold start (`load_model(\"default\")` in a fresh process)")
            md.append("")
            rows = []
            for label, r in cold:
                if "error" in r:
                    rows.append([label, "failed", "", "", "", "", "", r["error"]])
                    continue
                extra = (f"{r.get('model_type', '?')}: images {r['backend']}, texts {r.get('text_backend', '?')}, "
                         f"torch {'imported' if r.get('torch_imported', True) else 'not imported'}")
                if "cuda_max_alloc_mib" in r:
                    extra += f", CUDA alloc {r['cuda_max_alloc_mib']:.0f} MiB"
                rows.append([label, f"{r['import_s']:.1f}", f"{r['load_s']:.1f}", f"{r['process_s']:.1f}",
                             f"{r['first_image_s'] * 1000:.0f} / {r['first_text_s'] * 1000:.0f}",
                             f"{r['rss_load_mib']:.0f}", f"{r['rss_after_mib']:.0f} / {r['hwm_mib']:.0f}", extra])
            md.append(md_table(["Run", "import s", "load_model s", "whole process s", "first image / text ms",
                                "VmRSS after load MiB", "VmRSS after first encodes / peak MiB", "notes"], rows))
            md.append("")
            verified = any((cache / "onnx_cache" / "onnx").glob("*.verified"))
            md.append("`import s`: `import photosearch.model` (torch, when needed, is imported inside `load_model` and "
                      "counted there); `whole process s` includes interpreter start-up; the first ONNX run includes "
                      "the export and the parity probe" + ("; cached runs skip the probe (fastpath's `.verified` "
                                                            "marker)." if verified else "; cached runs repeat it.")
                      + " The notes say which class `load_model` returned and whether torch was imported at all.")
            md.append("")
        findings += e2e_findings
        if findings:
            md.append("### Findings")
            md.append("")
            md += [f"- {f}" for f in findings]
            md.append("")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    text = "\n".join(md)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
        log(f"wrote {args.out}")


def image_configs(args, cuda: bool, ref_model, dev_model, fast_model, tmp: Path) -> list[ImageConfig]:
    import torch

    if cuda:
        configs = []
        for dtype_name, dtype in (("fp32", torch.float32), ("fp16", torch.float16), ("bf16", torch.bfloat16)):
            for cl in (False, True):
                def make(dtype=dtype, cl=cl):
                    module = copy.deepcopy(dev_model.module).to(dtype)
                    if cl:
                        module = module.to(memory_format=torch.channels_last)
                    return torch_module_runner(module, dev_model.device, dtype, cl)

                name = f"torch eager {dtype_name}{' channels_last' if cl else ''} {args.device}"
                configs.append(ImageConfig(name, make, fp32_exact=dtype_name == "fp32"))
        # the CPU reference is timed first so "× eager" means: versus the CPU eager fp32 path
        return [ImageConfig("torch eager fp32 cpu (reference)", lambda: ref_model.encode_pixels)] + configs

    configs = [
        ImageConfig("torch eager fp32 (reference)", lambda: ref_model.encode_pixels),
        ImageConfig("torch eager channels_last",
                    lambda: torch_module_runner(copy.deepcopy(ref_model.module).to(memory_format=torch.channels_last),
                                                ref_model.device, torch.float32, True)),
    ]
    if fast_model is None or fast_model.image_backend != "onnx":
        return configs
    from photosearch.model.fastpath import OnnxImageRunner

    onnx_path = onnx_image_path(ref_model)
    configs += [
        ImageConfig(f"onnxruntime, photosearch default (intra_op={ort_threads(fast_model)})",
                    lambda: fast_model.encode_pixels,
                    note=f"load_model(image_backend='onnx') → {type(fast_model).__name__}, as the app gets it"),
        ImageConfig("onnxruntime intra_op=1", lambda: normalised(OnnxImageRunner(onnx_path, threads=1))),
        ImageConfig("onnxruntime intra_op=2", lambda: normalised(OnnxImageRunner(onnx_path, threads=2))),
    ]
    if args.no_explore:
        return configs
    calib_dir = tmp / "calib"
    configs += [
        ImageConfig("ort intra_op=2, no spinning", lambda: ort_runner(onnx_path, intra=2, spinning=False),
                    note="session.intra_op.allow_spinning=0"),
        ImageConfig("ort intra_op=1, 2 worker threads", lambda: ConcurrentRunner(ort_runner(onnx_path, intra=1), 2),
                    workers=2, note="one session, intra_op=1, run() from 2 Python threads"),
        ImageConfig("ort intra_op=2, mem arena off", lambda: ort_runner(onnx_path, intra=2, arena=False),
                    note="enable_cpu_mem_arena=False"),
        ImageConfig("ort intra_op=1 inter_op=2, ORT_PARALLEL",
                    lambda: ort_runner(onnx_path, intra=1, inter=2, parallel=True),
                    note="execution_mode=ORT_PARALLEL"),
        ImageConfig("ort intra_op=2, graph opt EXTENDED", lambda: ort_runner(onnx_path, intra=2, level="extended"),
                    note="ORT_ENABLE_EXTENDED: no NCHWc layout transformation"),
        ImageConfig("ort intra_op=2, graph opt BASIC", lambda: ort_runner(onnx_path, intra=2, level="basic")),
        ImageConfig("ort intra_op=1, Pad folded into Conv",
                    lambda: ort_runner(fold_same_pads(ref_model, onnx_path, tmp / "folded.onnx"), intra=1),
                    note="export tweak: the 5 TF-same Pad nodes folded into asymmetric Conv pads (see fold_same_pads)"),
        ImageConfig("ort intra_op=1, Pad folded, 2 worker threads",
                    lambda: ConcurrentRunner(ort_runner(fold_same_pads(ref_model, onnx_path, tmp / "folded.onnx"),
                                                        intra=1), 2), workers=2),
        ImageConfig("ort int8 dynamic (intra_op=1)",
                    lambda: ort_runner(quantize(onnx_path, tmp, "dynamic"), intra=1), fp32_exact=False,
                    note="quantize_dynamic, QUInt8 weights (ConvInteger/MatMulInteger)"),
        ImageConfig("ort int8 static QDQ (intra_op=1)",
                    lambda: ort_runner(quantize(onnx_path, tmp, "static", calib_pixels(ref_model, calib_dir)),
                                       intra=1), fp32_exact=False,
                    note="quantize_static QDQ, per-channel s8 weights, u8 activations, reduce_range, MinMax "
                         "calibration on 32 synthetic photos (not the parity images)"),
    ]
    return configs


def calib_pixels(model, d: Path) -> np.ndarray:
    paths, _ = parity_images(d, 32, seed=123, stamps=False)
    return np.stack([model.preprocess(p) for p in paths]).astype(np.float32)


def image_findings(results: list[ImageResult], batches: list[int], ref_rates: dict[int, float], cuda: bool) -> list[str]:
    out = []
    batched = [b for b in batches if b > 1]
    best = None
    for r in results[1:]:
        if not r.timings or not (r.cos_emb >= PARITY_MIN_COSINE and r.cos_vis >= PARITY_MIN_COSINE):
            continue
        for b, t in r.timings.items():
            if b in batched and (best is None or t.rate > best[2].rate):
                best = (r, b, t)
    if best:
        r, b, t = best
        line = f"Fastest batched path meeting the parity bar: {r.cfg.name}, batch {b}: {t.rate:.1f} images/s"
        if ref_rates.get(b):
            line += f" ({t.rate / ref_rates[b]:.1f}× torch eager at batch {b})"
        if not cuda:
            line += (f"; the {TARGET_IMAGES_PER_S:.0f} images/s target is "
                     f"{'met' if t.rate >= TARGET_IMAGES_PER_S else 'NOT met'} on this machine at this load")
        out.append(line + ".")
    if not cuda:
        best_cpu = max(((r, b, t) for r in results for b, t in r.timings.items()
                        if r.cfg.fp32_exact and r.cos_emb >= PARITY_MIN_COSINE), key=lambda x: x[2].cpu_rate,
                       default=None)
        if best_cpu:
            r, b, t = best_cpu
            out.append(f"Highest images per CPU-second with parity: {r.cfg.name}, batch {b}: {t.cpu_rate:.1f} "
                       "(≈ the per-core rate this path would reach on an otherwise idle core).")
        one = [r for r in results if r.cfg.name == "onnxruntime intra_op=1" and r.timings]
        if one:
            per_core = statistics.median(t.cpu_rate for t in one[0].timings.values())
            out.append(f"ONNX Runtime with intra_op=1 costs {1000 / per_core:.1f} CPU-ms per image (median over batch "
                       f"sizes): an idle core would do ≈{per_core:.0f} images/s, so {os.cpu_count()} free cores with one "
                       f"1-thread worker each ≈{per_core * (os.cpu_count() or 1):.0f} images/s (projection, not a "
                       "measurement).")
    for r in results:
        if not r.cfg.fp32_exact and r.timings:
            bestb = max(r.timings, key=lambda b: r.timings[b].rate)
            out.append(f"{r.cfg.name}: up to {r.timings[bestb].rate:.1f} images/s (batch {bestb}) but min cosine "
                       f"{r.cos_emb:.4f} (emb) / {r.cos_vis:.4f} (visual) vs the reference — "
                       f"{'within' if min(r.cos_emb, r.cos_vis) >= PARITY_MIN_COSINE else 'below'} the "
                       f"{PARITY_MIN_COSINE} bar.")
    return out


if __name__ == "__main__":
    main()
