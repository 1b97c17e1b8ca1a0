"""Benchmark the photo library end to end: indexing throughput, re-scan of an unchanged library, search latency.

    python bench/bench_library.py                       # 200 photos, 100k-file re-scan, sizes 10k 100k 1M
    python bench/bench_library.py --quick               # 48 photos, 10k-file re-scan, size 10k
    python bench/bench_library.py --sizes 10000 100000 --sections search --out results.md

1. Indexing throughput with the shipped default model (ONNX Runtime on CPU): N synthetic 12-megapixel JPEGs
   (cached in /tmp/photosearch-bench-12mp) indexed by ``Library.add_folder`` + ``Library.index``, for
   decode_workers 1/2 × batch_size 16/32, plus the per-photo cost of each stage timed separately on a sample.
2. Re-scan of an unchanged library: a tree of tiny JPEG files whose rows and vectors are inserted directly into the
   store (and HNSW index), then ``Library.index()`` when nothing changed.
3. Search latency at library sizes 10k / 100k / 1M on synthetic clustered vectors: each size is built in one
   subprocess (store rows, vectors, HNSW index saved to disk) and queried in a fresh one, so the reported resident
   memory is that of a running app (model + index loaded). Text queries go through ``Searcher.search``, photo
   queries through ``Searcher.similar`` with a real 12 MP JPEG.

Prints Markdown tables as results come in and writes them to ``--out`` after each section (section 3: after each
size, with raw numbers appended to ``<out>.jsonl``), so an interrupted run keeps what it measured. A size whose HNSW
build, extrapolated (N log N) from the previous size, exceeds ``--max-build-minutes`` is skipped with a note. The
load average is recorded with each section because the machine may be shared.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench._common import proc_status_mib  # noqa: E402

PHOTO_CACHE = Path("/tmp/photosearch-bench-12mp")
RESCAN_CACHE = Path("/tmp/photosearch-bench-rescan")
PHOTO_SIZE = (4000, 3000)
DIM_FALLBACK = 384
TEXT_WORDS = (
    ["red", "old", "small", "happy", "wet", "sunny", "dark", "bright", "blue", "green", "tall", "wooden"],
    ["dog", "cat", "car", "house", "tree", "boat", "bicycle", "mountain", "flower", "child", "bridge", "horse"],
    ["on", "near", "under", "in front of", "behind", "next to"],
    ["a beach", "the snow", "a lake", "a street", "a forest", "a table", "the sky", "a garden", "a city", "a field"],
)


# --------------------------------------------------------------------------------------------------------------
# small helpers


def load_avg() -> str:
    try:
        a, b, c = os.getloadavg()
    except OSError:
        return "n/a"
    return f"{a:.2f} / {b:.2f} / {c:.2f}"


def pct(values: Sequence[float], q: float) -> float:
    """Percentile of seconds, in milliseconds."""
    return float(np.percentile(np.asarray(values, np.float64), q) * 1e3) if len(values) else float("nan")


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def dir_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


class Report:
    """Markdown lines printed as they come and written to ``out`` after each section (raw results to out.jsonl)."""

    def __init__(self, out: Path | None, echo: bool = True, sink: list[str] | None = None):
        self.out = out
        self.echo = echo
        self.lines: list[str] = [] if sink is None else sink

    def __call__(self, line: str = "") -> None:
        if self.echo:
            print(line, flush=True)
        self.lines.append(line)

    def table(self, header: Sequence[str], align: str | None = None) -> None:
        self("| " + " | ".join(header) + " |")
        self("|" + "|".join("---:" if a == "r" else "---" for a in (align or "r" * len(header))) + "|")

    def flush(self, extra: Sequence[str] = ()) -> None:
        if self.out:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self.out.write_text("\n".join([*self.lines, *extra]) + "\n")

    def save_json(self, record: dict) -> None:
        if self.out:
            with open(self.out.with_suffix(".jsonl"), "a") as f:
                f.write(json.dumps(record) + "\n")


def load_default_model():
    from photosearch.model import load_model

    return load_model("default", device="cpu", image_backend="onnx")


def clustered(n: int, dim: int, clusters: int, seed: int, spread: float = 1.0, chunk: int = 65536) -> np.ndarray:
    """(n, dim) float32 unit vectors from a Gaussian mixture (as bench_index.py), generated in chunks."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(1, clusters), dim))
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        x = centres[rng.integers(0, len(centres), m)] + spread * rng.normal(size=(m, dim))
        out[start : start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def real_embeddings(model) -> np.ndarray:
    """Image embeddings of real pictures with this model: the Tux Paint stamps (training data, fetched from
    Debian into the data cache), each as is, mirrored and two crops. Cached per model id."""
    cache = Path(f"/tmp/photosearch-bench-realvecs-{model.model_id}.npy")
    if cache.is_file():
        return np.load(cache)
    from PIL import Image, ImageOps

    from training.data.tuxpaint import load_tuxpaint

    views = []
    for item in load_tuxpaint():
        with Image.open(item.path) as im:
            im = im.convert("RGBA")
            w, h = im.size
            views += [im, ImageOps.mirror(im), im.crop((0, 0, w * 3 // 4, h * 3 // 4)),
                      im.crop((w // 4, h // 4, w, h))]
    vecs = np.concatenate([model.encode_images(views[s : s + 64]) for s in range(0, len(views), 64)])
    np.save(cache, vecs.astype(np.float32))
    return vecs


def realistic(n: int, real: np.ndarray, clusters: int, seed: int, spread: float = 0.7,
              chunk: int = 65536) -> np.ndarray:
    """(n, D) unit vectors shaped like the model's real image embeddings: a Gaussian mixture whose cluster centres
    and within-cluster spread both follow the mean and covariance of ``real``, so the energy falls off across
    directions as it does for real photos (isotropic noise would be a space no image model produces)."""
    rng = np.random.default_rng(seed)
    mean = real.mean(0)
    values, vectors = np.linalg.eigh(np.cov(real.T))
    root = vectors * np.sqrt(values.clip(min=0))  # (D, D): z @ root.T has the covariance of real
    centres = mean + rng.normal(size=(max(1, clusters), real.shape[1])) @ root.T
    out = np.empty((n, real.shape[1]), np.float32)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        x = centres[rng.integers(0, len(centres), m)] + spread * rng.normal(size=(m, real.shape[1])) @ root.T
        out[start : start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def unit_f16(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.normal(size=(n, dim)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)


# --------------------------------------------------------------------------------------------------------------
# synthetic 12 MP photos


def make_photo(seed: int, size: tuple[int, int] = PHOTO_SIZE):
    """A photo-like RGB image: smooth colour gradients, blurred shapes, mid-frequency texture and sensor noise."""
    from PIL import Image, ImageDraw, ImageFilter

    W, H = size
    rng = np.random.default_rng(seed)
    w, h = W // 8, H // 8
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.empty((h, w, 3), np.float32)
    for c in range(3):
        a, b, d = rng.uniform(-1, 1, 3)
        base[..., c] = 128 + 90 * np.sin(a * x / w * 3 + b * y / h * 3 + d * 6)
    im = Image.fromarray(base.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(8, 20))):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        x1, y1 = x0 + int(rng.integers(20, w // 2)), y0 + int(rng.integers(20, h // 2))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
    im = im.filter(ImageFilter.GaussianBlur(2)).resize((W, H), Image.Resampling.BILINEAR)
    arr = np.asarray(im).astype(np.int16)
    tex = rng.normal(0, 1, (H // 4, W // 4)).astype(np.float32)
    tex_im = Image.fromarray((tex * 40 + 128).clip(0, 255).astype(np.uint8)).resize((W, H), Image.Resampling.BILINEAR)
    arr += (np.asarray(tex_im).astype(np.int16) - 128)[..., None] // 2
    arr += rng.integers(-6, 7, (H, W, 1), dtype=np.int16)
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def write_photo(i: int) -> str:
    """Write photo i of the cache (atomically); every 4th is stored rotated with EXIF orientation 6, every 3rd has
    a date taken, all have a camera make/model."""
    from PIL import Image

    path = PHOTO_CACHE / f"photo_{i:04d}.jpg"
    if path.is_file():
        return str(path)
    im = make_photo(1000 + i)
    exif = Image.Exif()
    exif[0x010F] = "BenchCam"
    exif[0x0110] = "BenchCam 12"
    if i % 4 == 1:
        exif[0x0112] = 6  # displayed rotated 90° clockwise: store the pixels rotated the other way
        im = im.transpose(Image.Transpose.ROTATE_90)
    if i % 3 == 0:
        exif.get_ifd(0x8769)[0x9003] = f"2021:{1 + i % 12:02d}:{1 + i % 28:02d} 12:{i % 60:02d}:00"
    tmp = path.with_suffix(".tmp")
    im.save(tmp, "JPEG", quality=90, exif=exif)
    os.replace(tmp, path)
    return str(path)


def ensure_photos(n: int, workers: int = 2) -> list[Path]:
    PHOTO_CACHE.mkdir(parents=True, exist_ok=True)
    missing = [i for i in range(n) if not (PHOTO_CACHE / f"photo_{i:04d}.jpg").is_file()]
    if missing:
        print(f"generating {len(missing)} 12 MP JPEGs in {PHOTO_CACHE} ...", file=sys.stderr, flush=True)
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(write_photo, missing))
    return [PHOTO_CACHE / f"photo_{i:04d}.jpg" for i in range(n)]


def photo_folder(n: int) -> Path:
    """A folder holding exactly the first n cached photos (hard links), so the library indexes just those."""
    photos = ensure_photos(n)
    folder = PHOTO_CACHE / f"set-{n}"
    if not folder.is_dir() or len(list(folder.iterdir())) != n:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for p in photos:
            os.link(p, folder / p.name)
    return folder


# --------------------------------------------------------------------------------------------------------------
# 1. indexing throughput


def stage_costs(model, paths: list[Path], batch: int) -> dict[str, float]:
    """Seconds per photo of each indexing stage, timed separately on a sample (single-threaded)."""
    import hashlib

    from PIL import Image

    from photosearch.library import Library
    from photosearch.library.pipeline import decode_file
    from photosearch.library.scan import FileEntry, read_metadata
    from photosearch.model.preprocess import open_image, resize_crop, to_array

    cfg = model.preprocess_config
    entries = [FileEntry(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths]
    out: dict[str, float] = {}

    # decode_file as the workers run it, and its parts
    decode_file(entries[0], model)  # warm-up
    cpu0 = time.thread_time()
    t_dec, decoded = timed(lambda: [decode_file(e, model) for e in entries])
    out["decode_cpu"] = (time.thread_time() - cpu0) / len(entries)
    assert all(d.error is None for d in decoded), [d.error for d in decoded if d.error]
    out["decode"] = t_dec / len(entries)
    parts = {"read_hash": 0.0, "jpeg_decode": 0.0, "metadata": 0.0, "resize_norm": 0.0}
    for e in entries:
        t0 = time.perf_counter()
        data = Path(e.path).read_bytes()
        hashlib.blake2b(data, digest_size=16).hexdigest()
        t1 = time.perf_counter()
        im = open_image(data, min_side=cfg.resize or cfg.size, background=tuple(cfg.background))
        t2 = time.perf_counter()
        with Image.open(io.BytesIO(data)) as header:
            read_metadata(header)
        t3 = time.perf_counter()
        to_array(resize_crop(im, cfg), cfg)
        t4 = time.perf_counter()
        for k, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            parts[k] += dt
    out.update({k: v / len(entries) for k, v in parts.items()})

    # encode: model.encode_pixels per batch (median of 3 passes over the sample)
    pixels = np.stack([d.pixels for d in decoded])
    reps = max(1, math.ceil(batch / len(pixels)))
    pixels = np.concatenate([pixels] * reps)[: max(batch, len(pixels))]
    model.encode_pixels(pixels[:batch])  # warm-up
    passes = []
    cpu0 = time.process_time()
    for _ in range(3):
        passes.append(sum(timed(lambda s=s: model.encode_pixels(pixels[s : s + batch]))[0]
                          for s in range(0, len(pixels) - batch + 1, batch)))
    n_enc = (len(pixels) // batch) * batch
    out["encode"] = float(np.median(passes)) / n_enc
    out["encode_cpu"] = (time.process_time() - cpu0) / (3 * n_enc)
    emb, vis = model.encode_pixels(pixels[:batch])

    # commit: what Library._commit_batch does after encoding, on fake paths (8 batches)
    with tempfile.TemporaryDirectory(prefix="psbench-commit-") as tmp:
        lib = Library(Path(tmp) / "lib", model)
        folder = lib.add_folder(paths[0].parent)
        mi = lib.index_for(model)
        store = lib.store
        t_copies = t_tx = t_failed = t_add = 0.0
        n_batches = 8
        for b in range(n_batches):
            names = [f"{folder.path}/commit_{b}_{j}.jpg" for j in range(batch)]
            hashes = [f"{b:08x}{j:024x}" for j in range(batch)]
            t0 = time.perf_counter()
            for h in hashes:  # the "identical copy" check per photo
                [p for p in store.photos_by_hash(h) if store.has_vector(model.model_id, p.id)]
            t1 = time.perf_counter()
            ids = []
            with store.transaction() as db:
                for name, h in zip(names, hashes, strict=True):
                    store.upsert_photo(db, name, folder.id, 1000, 1, h, decoded[0].meta, None)
                for j, name in enumerate(names):
                    pid = store.photo_by_path_in(db, name)
                    store.put_vectors(db, model.model_id, pid, emb[j], vis[j])
                    ids.append(pid)
            t2 = time.perf_counter()
            store.query(f"SELECT id FROM photos WHERE error IS NOT NULL AND path IN ({','.join('?' * len(names))})",
                        names)
            t3 = time.perf_counter()
            mi.add(ids, emb)
            t4 = time.perf_counter()
            t_copies += t1 - t0
            t_tx += t2 - t1
            t_failed += t3 - t2
            t_add += t4 - t3
        lib.close()
    n = n_batches * batch
    out.update(copy_check=t_copies / n, transaction=t_tx / n, failed_query=t_failed / n, index_add=t_add / n)
    out["commit"] = (t_copies + t_tx + t_failed + t_add) / n
    return out


def bench_indexing(rep: Report, model, n: int, sample: int) -> None:
    from photosearch.library import Library

    folder = photo_folder(n)
    paths = sorted(folder.iterdir())
    sizes = [p.stat().st_size for p in paths]
    for p in paths:  # warm the page cache so every configuration reads from memory
        p.read_bytes()
    with tempfile.TemporaryDirectory(prefix="psbench-default-") as tmp:
        probe = Library(Path(tmp) / "lib", model)
        default_workers, default_batch = probe.decode_workers, probe.batch_size
        probe.close()
    rep(f"## 1. Indexing throughput, end to end ({n} photos, 12 MP)")
    rep()
    rep(f"- photos: {n} synthetic {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]} JPEGs, quality 90, {np.mean(sizes) / 1e6:.2f} MB "
        f"average ({min(sizes) / 1e6:.2f}–{max(sizes) / 1e6:.2f}), every 4th EXIF-rotated, every 3rd with a date "
        f"taken; files in the page cache")
    rep(f"- model: {model.info.name} ({model.model_id}), image backend {model.image_backend}, "
        f"embed dim {model.embed_dim}, visual dim {model.info.visual_dim}")
    rep(f"- Library defaults on this machine: decode_workers={default_workers}, batch_size={default_batch} "
        f"({os.cpu_count()} CPUs)")
    rep(f"- load average before: {load_avg()}")
    rep()
    rep.table(["decode_workers", "batch_size", "seconds", "photos/s", "CPU s (process)", "CPU ms / photo", "indexed",
               "failed", "load avg (1 min) after"])
    best = 0.0
    for workers in (1, 2):
        for batch in (16, 32):
            with tempfile.TemporaryDirectory(prefix="psbench-index-") as tmp:
                lib = Library(Path(tmp) / "lib", model, decode_workers=workers, batch_size=batch)
                t0, cpu0 = time.perf_counter(), time.process_time()
                lib.add_folder(folder)
                report = lib.index()
                seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
                lib.close()
            rate = n / seconds
            best = max(best, rate)
            rep(f"| {lib.decode_workers} | {batch} | {seconds:.1f} | {rate:.1f} | {cpu:.1f} | {cpu / n * 1e3:.0f} | "
                f"{report.indexed} | {len(report.failed)} | {os.getloadavg()[0]:.2f} |")
    rep()
    rep(f"Best: **{best:.1f} photos/s** (target ≥ 50 photos/s: {'met' if best >= 50 else 'NOT met'}).")
    rep()
    # the ceiling no encoder can lift: reading, hashing and decoding alone, on every core
    from concurrent.futures import ThreadPoolExecutor

    from photosearch.library.pipeline import decode_file
    from photosearch.library.scan import FileEntry

    entries = [FileEntry(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths]
    cores = os.cpu_count() or 1
    with ThreadPoolExecutor(cores) as pool:
        t0, cpu0 = time.perf_counter(), time.process_time()
        decoded = list(pool.map(lambda e: decode_file(e, model), entries))
        seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    assert all(d.error is None for d in decoded)
    rep(f"Decoding alone (`decode_file`: read, hash, JPEG draft decode, EXIF, resize — no encoding, no commit) on "
        f"{cores} threads: **{n / seconds:.1f} photos/s** ({cpu / n * 1e3:.0f} CPU-ms per photo, "
        f"{np.mean(sizes) / 1e6:.2f} MB average JPEG, load {os.getloadavg()[0]:.2f}) — the ceiling for indexing "
        "these files on this machine, whatever the model costs.")
    rep()

    sample_paths = paths[: min(sample, n)]
    rep(f"### Per-stage cost, timed separately on {len(sample_paths)} photos (single-threaded, ms per photo)")
    rep()
    rep.table(["batch", "decode (decode_file)", "decode CPU", "↳ read+hash", "↳ JPEG draft decode+EXIF transpose",
               "↳ metadata", "↳ resize+normalise", "encode (encode_pixels)", "encode CPU (all threads)", "commit",
               "↳ copy check", "↳ transaction", "↳ failed query", "↳ index add", "serial photos/s",
               "overlap bound photos/s (1 / 2 workers)"])
    for batch in (16, 32):
        c = stage_costs(model, sample_paths, batch)
        serial = 1 / (c["decode"] + c["encode"] + c["commit"])
        bound = [1 / max(c["decode"] / w, c["encode"] + c["commit"]) for w in (1, 2)]
        ms = {k: v * 1e3 for k, v in c.items()}
        rep(f"| {batch} | {ms['decode']:.1f} | {ms['decode_cpu']:.1f} | {ms['read_hash']:.1f} | "
            f"{ms['jpeg_decode']:.1f} | {ms['metadata']:.2f} | {ms['resize_norm']:.1f} | {ms['encode']:.1f} | "
            f"{ms['encode_cpu']:.1f} | "
            f"{ms['commit']:.2f} | {ms['copy_check']:.2f} | "
            f"{ms['transaction']:.2f} | {ms['failed_query']:.2f} | {ms['index_add']:.2f} | {serial:.1f} | "
            f"{bound[0]:.1f} / {bound[1]:.1f} |")
    rep()
    rep("Serial = 1 / (decode + encode + commit). Overlap bound = 1 / max(decode / workers, encode + commit): the "
        "pipeline's ceiling if decoding overlapped perfectly with encoding, which on 2 cores it cannot, since ONNX "
        "Runtime already uses both cores for encoding. CPU columns are CPU time (not wall time): on a shared, "
        "loaded machine wall time exceeds them; 2 cores × 1000 / (decode CPU + encode CPU) is the idle-machine "
        "ceiling in photos/s.")
    rep(f"- load average after: {load_avg()}")
    rep()
    rep.flush()


# --------------------------------------------------------------------------------------------------------------
# 2. re-scan of an unchanged library


def tiny_jpeg() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 120, 40)).save(buf, "JPEG", quality=80)
    return buf.getvalue()


def ensure_rescan_tree(n_files: int, per_folder: int = 1000) -> Path:
    root = RESCAN_CACHE / str(n_files)
    done = root / ".complete"  # hidden: skipped by the scanner
    if done.is_file():
        return root
    shutil.rmtree(root, ignore_errors=True)
    data = tiny_jpeg()
    print(f"writing {n_files} tiny JPEGs under {root} ...", file=sys.stderr, flush=True)
    for i in range(n_files):
        d = root / f"d{i // per_folder:03d}"
        if i % per_folder == 0:
            d.mkdir(parents=True)
        with open(d / f"img{i % per_folder:04d}.jpg", "wb") as f:
            f.write(data)
    done.write_text("ok\n")
    return root


def populate_library(lib, root: Path, model, seed: int = 0, chunk: int = 20_000) -> tuple[int, float]:
    """Insert a photo row and vectors for every file below root (executemany), and add them to the index.
    Returns (count, index build seconds)."""
    from photosearch.library.scan import walk_photos

    folder = lib.add_folder(root)
    mi = lib.index_for(model)
    store = lib.store
    entries = list(walk_photos(folder.path))
    now = time.time()
    with store.transaction() as db:
        db.executemany(
            "INSERT INTO photos(path, folder_id, size, mtime_ns, content_hash, width, height, taken_at, camera, "
            "added_at, error) VALUES (?,?,?,?,?,?,?,?,?,?,NULL)",
            [(e.path, folder.id, e.size, e.mtime_ns, f"{i:032x}", 8, 8, None, None, now)
             for i, e in enumerate(entries)],
        )
    ids = np.array([r[0] for r in store.query("SELECT id FROM photos WHERE folder_id=? ORDER BY id", (folder.id,))])
    rng = np.random.default_rng(seed)
    vecs = clustered(len(ids), model.embed_dim, max(1, len(ids) // 100), seed)
    for s in range(0, len(ids), chunk):
        vis = unit_f16(rng, len(ids[s : s + chunk]), model.info.visual_dim)
        with store.transaction() as db:
            db.executemany(
                "INSERT INTO vectors(photo_id, model_id, embedding, visual) VALUES (?,?,?,?)",
                [(int(pid), model.model_id, vecs[s + j].tobytes(), vis[j].tobytes())
                 for j, pid in enumerate(ids[s : s + chunk])],
            )
    mi.index.threads = 2
    t0 = time.perf_counter()
    for s in range(0, len(ids), 10_000):
        mi.add(ids[s : s + 10_000], vecs[s : s + 10_000])
    build = time.perf_counter() - t0
    mi.index.threads = 1
    mi.save(force=True)
    return len(entries), build


def bench_rescan(rep: Report, model, n_files: int) -> None:
    from photosearch.library import Library

    root = ensure_rescan_tree(n_files)
    rep(f"## 2. Re-scan of an unchanged library ({n_files:,} files)")
    rep()
    with tempfile.TemporaryDirectory(prefix="psbench-rescan-") as tmp:
        lib_dir = Path(tmp) / "lib"
        with Library(lib_dir, model) as lib:
            t_setup, (_, build) = timed(lambda: populate_library(lib, root, model))
        rep(f"- {n_files // 1000} folders × 1000 tiny JPEGs ({len(tiny_jpeg())} bytes each) below one library "
            f"folder; rows + vectors inserted directly ({t_setup:.0f} s setup, HNSW build {build:.0f} s); "
            f"library {dir_mib(lib_dir):.0f} MiB on disk; directory entries warm in the kernel cache")
        rep(f"- load average before: {load_avg()}")
        rep()
        rep.table(["run", "seconds", "unchanged", "indexed", "moved", "removed", "failed", "target ≤ 5 s per 100k"],
                  "lrrrrrrl")
        target = 5.0 * n_files / 100_000
        rows = []
        t0 = time.perf_counter()
        lib = Library(lib_dir, model)
        r = lib.index()
        rows.append(("fresh Library object (opens store, loads HNSW file) + index()", time.perf_counter() - t0, r))
        for k in range(3):
            t, r = timed(lib.index)
            rows.append((f"index() again on the open library (#{k + 1})", t, r))
        t_scan, (todo, vanished, r_scan) = timed(lib.scan)
        rows.append(("scan() alone (walk + stat + compare)", t_scan, r_scan))
        lib.close()
        for name, t, r in rows:
            rep(f"| {name} | {t:.2f} | {r.unchanged:,} | {r.indexed} | {r.moved} | {r.removed} | {len(r.failed)} | "
                f"{'met' if t <= target else 'NOT met'} |")
        assert not todo and not vanished, (len(todo), len(vanished))
    rep()
    rep(f"- load average after: {load_avg()}")
    rep()
    rep.flush()


# --------------------------------------------------------------------------------------------------------------
# 3. search latency (each size: a build subprocess, then a query subprocess)


def text_queries(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        q = " ".join(str(words[rng.integers(len(words))]) for words in TEXT_WORDS)
        if q not in seen:
            seen.add(q)
            out.append(q)
    return out


def worker_build(n: int, lib_dir: Path, n_queries: int, seed: int) -> dict:
    """Store rows + vectors and the HNSW index file for n synthetic photos; ground truth for recall."""
    from photosearch.index import exact_search
    from photosearch.index.reduce import kept_energy
    from photosearch.library.library import ModelIndex
    from photosearch.library.store import Store

    model = load_default_model()
    dim, vdim = model.embed_dim, model.info.visual_dim
    clusters = max(1, n // 100)
    vecs = realistic(n + n_queries, real_embeddings(model), clusters, seed)
    base, held_out = vecs[:n], vecs[n:]
    text_vecs = model.encode_texts(text_queries(n_queries))
    info = {"model_id": model.model_id, "name": model.info.name, "path": model.info.path}
    del model
    ids = np.arange(1, n + 1, dtype=np.int64)
    truth_held, _ = exact_search(base, ids, held_out, 10)
    truth_text, _ = exact_search(base, ids, text_vecs, 10)
    np.savez(lib_dir / "truth.npz", held_out=held_out, truth_held=truth_held, text=text_vecs, truth_text=truth_text)

    store = Store(lib_dir / "lib")
    store.register_model(info["model_id"], info["name"], info["path"], dim, vdim)
    folder = store.add_folder("/bench/photos")
    rng = np.random.default_rng(seed + 1)
    t0 = time.perf_counter()
    chunk = 50_000
    now = time.time()
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        vis = unit_f16(rng, e - s, vdim)
        with store.transaction() as db:
            db.executemany(
                "INSERT INTO photos(id, path, folder_id, size, mtime_ns, content_hash, width, height, taken_at, camera,"
                " added_at, error) VALUES (?,?,?,?,?,?,?,?,?,?,?,NULL)",
                [(i, f"/bench/photos/d{i // 1000:04d}/img{i:07d}.jpg", folder.id, 3_000_000 + i % 997,
                  1_600_000_000_000_000_000 + i, f"{i:032x}", 4000, 3000, 1.6e9 + i, "BenchCam 12", now)
                 for i in range(s + 1, e + 1)],
            )
            db.executemany(
                "INSERT INTO vectors(photo_id, model_id, embedding, visual) VALUES (?,?,?,?)",
                [(i + 1, info["model_id"], base[i].tobytes(), vis[i - s].tobytes()) for i in range(s, e)],
            )
    insert_s = time.perf_counter() - t0

    # the app's own path for a library whose index file is missing: ModelIndex rebuilds it from the store
    # (reduced from ModelIndex.REDUCE_AT photos on, all cores), then saves it
    t0 = time.perf_counter()
    mi = ModelIndex(store, info["model_id"], dim)
    mi.save(force=True)
    build_s = time.perf_counter() - t0
    proj = mi.index.projection
    energy = kept_energy(proj, held_out) if proj is not None else 1.0
    graph_dim = mi.index.graph_dim
    path = mi.path
    del mi, vecs, base
    store.close()
    index_bytes = path.stat().st_size + sum(path.with_suffix(suffix).stat().st_size for suffix in
                                            ((".proj.npy", ".codes.npz") if proj is not None else ()))
    return {"n": n, "model_id": info["model_id"], "clusters": clusters, "insert_s": insert_s, "build_s": build_s,
            "graph_dim": graph_dim, "kept_energy": energy,
            "index_mib": index_bytes / 2**20,
            "db_mib": sum(p.stat().st_size for p in (lib_dir / "lib").glob("library.sqlite3*")) / 2**20,
            "build_peak_mib": proc_status_mib("VmHWM")}


def single_thread_text_latency(model, queries: list[str]) -> list[float]:
    """Seconds per single-query text encoding with one intra-op thread (ONNX Runtime session or torch)."""
    if model.text_backend == "onnx":
        from photosearch.model.onnx_model import try_load_onnx_only

        one = try_load_onnx_only(Path(model.info.path), threads=1)
        if one is None:
            return []
        one.encode_texts(queries[:5])  # warm-up
        return [timed(lambda q=q: one.encode_texts([q]))[0] for q in queries]
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return [timed(lambda q=q: model.encode_texts([q]))[0] for q in queries]
    finally:
        torch.set_num_threads(threads)


def worker_query(n: int, lib_dir: Path, photos: list[str], n_queries: int) -> dict:
    """Latency, recall and resident memory with the model and the index loaded (a fresh process)."""
    r: dict[str, Any] = {"n": n, "rss_start_mib": proc_status_mib("VmRSS")}  # Python + numpy only
    from photosearch.index import recall_at_k
    from photosearch.library import Library
    from photosearch.search import Searcher

    r["model_load_s"], model = timed(load_default_model)
    r["rss_model_mib"] = proc_status_mib("VmRSS")
    lib = Library(lib_dir / "lib", model)
    built = {row[0] for row in lib.store.query("SELECT model_id FROM models")}
    if model.model_id not in built:
        raise SystemExit(f"the default model changed between the build ({', '.join(built)}) and the query process "
                         f"({model.model_id}): someone rewrote resources/models/default; run again")
    r["model_id"] = model.model_id
    r["index_load_s"], mi = timed(lambda: lib.index_for(model))
    assert len(mi.index) == n, (len(mi.index), n)
    r["rss_loaded_mib"] = proc_status_mib("VmRSS")
    searcher = Searcher(lib)
    queries = text_queries(n_queries)
    truth = np.load(lib_dir / "truth.npz")
    for q in queries[:10]:  # warm-up
        searcher.search(q)

    e2e, enc, sv, idx, idx_held = [], [], [], [], []
    for q in queries:
        e2e.append(timed(lambda q=q: searcher.search(q, limit=20))[0])
    vecs = []
    for q in queries:
        t, v = timed(lambda q=q: model.encode_texts([q]))
        enc.append(t)
        vecs.append(v[0])
    for v in vecs:
        sv.append(timed(lambda v=v: searcher.search_vector(v, None, 20))[0])
        idx.append(timed(lambda v=v: mi.index.search(v, 20))[0])
    approx_held = []
    for v in truth["held_out"]:
        t, (ids, _) = timed(lambda v=v: mi.index.search(v, 10))
        idx_held.append(t)
        approx_held.append(ids[0])
    approx_text = [mi.index.search(v, 10)[0][0] for v in truth["text"]]
    r["recall_held"] = recall_at_k(np.array(approx_held), truth["truth_held"])
    r["recall_text"] = recall_at_k(np.array(approx_text), truth["truth_text"])
    for name, vals in (("text_e2e", e2e), ("text_encode", enc), ("search_vector", sv), ("index_text", idx),
                       ("index_held", idx_held)):
        r[f"{name}_p50"], r[f"{name}_p99"] = pct(vals, 50), pct(vals, 99)

    # photo queries: Searcher.similar end to end, then its parts
    searcher.similar(photos[0])  # warm-up
    reps = 3
    sim = [timed(lambda p=p: searcher.similar(p, limit=20))[0] for _ in range(reps) for p in photos]
    dec, encp, knn, rerank, svp = [], [], [], [], []
    from photosearch.model.vectors import l2_normalize

    for _ in range(reps):
        for p in photos:
            t, px = timed(lambda p=p: model.preprocess(p))
            dec.append(t)
            t, (emb, vis) = timed(lambda px=px: model.encode_pixels(px[None]))
            encp.append(t)
            t, (ids, _) = timed(lambda e=emb[0]: mi.index.search(e, 256))
            knn.append(t)

            def fetch_rerank(cand: np.ndarray = ids[0], v: np.ndarray = vis[0]) -> None:
                _, vv = lib.store.embeddings(mi.model_id, cand.tolist(), visual=True)
                np.argsort(-(l2_normalize(vv) @ v))

            rerank.append(timed(fetch_rerank)[0])
            svp.append(timed(lambda e=emb[0], v=vis[0]: searcher.search_vector(e, v, 20))[0])
    for name, vals in (("photo_e2e", sim), ("photo_decode", dec), ("photo_encode", encp), ("photo_knn", knn),
                       ("photo_rerank", rerank), ("photo_search_vector", svp)):
        r[f"{name}_p50"], r[f"{name}_p99"] = pct(vals, 50), pct(vals, 99)
    r["photo_queries"] = len(sim)
    r["rss_end_mib"] = proc_status_mib("VmRSS")
    r["peak_mib"] = proc_status_mib("VmHWM")
    r["backends"] = f"images {model.image_backend}, texts {model.text_backend}"
    r["torch_imported"] = "torch" in sys.modules

    # an experiment, after the memory readings: text encoding with one intra-op thread (not what the app does)
    one = single_thread_text_latency(model, queries[:100])
    r["text_encode_1thread_p50"], r["text_encode_1thread_p99"] = pct(one, 50), pct(one, 99)
    r["load_avg"] = load_avg()
    lib.close()
    return r


def run_worker(args: list[str], timeout: float | None = None) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {' '.join(args)} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def search_tables(results: list[dict], embed_dim: int) -> list[str]:
    """The Markdown tables of section 3 for the sizes measured so far."""
    lines: list[str] = []
    rep = Report(None, echo=False, sink=lines)
    rep("### Build and memory")
    rep()
    rep(f"- model id used by the build/query processes: {', '.join(sorted({r['model_id'] for r in results}))}; "
        f"backends: {', '.join(sorted({r['backends'] for r in results}))}; torch imported by the query process: "
        f"{', '.join(sorted({'yes' if r['torch_imported'] else 'no' for r in results}))}")
    rep()
    rep.table(["N", "clusters", "graph dim (energy kept)", "store insert s", "index rebuild s", "build vec/s",
               "index files MiB", "store MiB",
               "model load s", "index load s", "RSS Python+numpy MiB", "RSS + model MiB",
               "RSS + model + index MiB", "RSS after queries MiB", "peak RSS MiB"])
    for r in results:
        rep(f"| {r['n']:,} | {r['clusters']:,} | {r.get('graph_dim', embed_dim)} ({r.get('kept_energy', 1.0):.3f}) | "
            f"{r['insert_s']:.1f} | {r['build_s']:.1f} | "
            f"{r['n'] / r['build_s']:,.0f} | {r['index_mib']:.0f} | {r['db_mib']:.0f} | {r['model_load_s']:.1f} | "
            f"{r['index_load_s']:.2f} | "
            f"{r['rss_start_mib']:.0f} | {r['rss_model_mib']:.0f} | {r['rss_loaded_mib']:.0f} | {r['rss_end_mib']:.0f} "
            f"| {r['peak_mib']:.0f} |")
    rep()
    rep("### Text queries (ms)")
    rep()
    rep.table(["N", "Searcher.search p50", "p99", "text encode p50", "p99", "search_vector p50", "p99",
               "index only (text vecs) p50", "p99", "index only (held-out) p50", "p99", "recall@10 held-out",
               "recall@10 text vecs (out of distribution)", "encode, 1 thread p50", "p99", "load avg"])
    for r in results:
        rep(f"| {r['n']:,} | {r['text_e2e_p50']:.1f} | {r['text_e2e_p99']:.1f} | {r['text_encode_p50']:.1f} | "
            f"{r['text_encode_p99']:.1f} | {r['search_vector_p50']:.2f} | {r['search_vector_p99']:.2f} | "
            f"{r['index_text_p50']:.2f} | {r['index_text_p99']:.2f} | {r['index_held_p50']:.2f} | "
            f"{r['index_held_p99']:.2f} | {r['recall_held']:.4f} | {r['recall_text']:.4f} | "
            f"{r['text_encode_1thread_p50']:.1f} | {r['text_encode_1thread_p99']:.1f} | {r['load_avg']} |")
    rep()
    rep("### Photo queries with a 12 MP JPEG (ms)")
    rep()
    rep.table(["N", "Searcher.similar p50", "p99", "decode+preprocess p50", "encode p50", "HNSW k=256 p50",
               "visual fetch+re-rank p50", "search_vector (with re-rank) p50", "p99"])
    for r in results:
        rep(f"| {r['n']:,} | {r['photo_e2e_p50']:.1f} | {r['photo_e2e_p99']:.1f} | {r['photo_decode_p50']:.1f} | "
            f"{r['photo_encode_p50']:.1f} | {r['photo_knn_p50']:.2f} | {r['photo_rerank_p50']:.2f} | "
            f"{r['photo_search_vector_p50']:.2f} | {r['photo_search_vector_p99']:.2f} |")
    rep()
    if not results:
        return lines
    big = results[-1]
    checks = [
        ("text p50 ≤ 20 ms", big["text_e2e_p50"] <= 20),
        ("text p99 ≤ 50 ms", big["text_e2e_p99"] <= 50),
        ("photo query ≤ 150 ms (p50)", big["photo_e2e_p50"] <= 150),
        ("recall@10 ≥ 0.98 (held-out)", big["recall_held"] >= 0.98),
        ("RSS ≤ 1.5 GB", big["rss_end_mib"] <= 1.5 * 1024),
    ]
    rep(f"Targets at {big['n']:,} (the largest size run): " + "; ".join(
        f"{name}: {'met' if ok else 'NOT met'}" for name, ok in checks))
    if big["n"] < 1_000_000:
        # the index's own share of RSS (loaded minus model-only, same process) scales with N; the model's doesn't
        per_vec = (big["rss_loaded_mib"] - big["rss_model_mib"]) / big["n"]
        est_rss = big["rss_model_mib"] + per_vec * 1_000_000
        est_build = big["build_s"] * (1_000_000 / big["n"]) * math.log(1e6) / math.log(big["n"])
        hnsw_bytes = embed_dim * 4 + (2 * 16 * 4 + 4) + 8  # vector + level-0 links (2M) + label, M=16
        rep()
        rep(f"Extrapolation to 1,000,000 from {big['n']:,}: RSS with model + index ≈ {est_rss:.0f} MiB (model "
            f"{big['rss_model_mib']:.0f} MiB + {per_vec * 2**20:.0f} bytes per photo measured; hnswlib's own "
            f"level-0 element is {hnsw_bytes} bytes); HNSW build ≈ {est_build / 60:.0f} min at 2 threads "
            f"(N log N from {big['build_s']:.0f} s); store ≈ {big['db_mib'] * 1e6 / big['n'] / 1024:.1f} GiB.")
    rep()
    return lines


def bench_search(rep: Report, model, sizes: list[int], n_queries: int, max_build_min: float, seed: int) -> None:
    photos = [str(p) for p in ensure_photos(8)]
    rep(f"## 3. Search latency (sizes {', '.join(f'{n:,}' for n in sizes)})")
    rep()
    rep(f"- synthetic L2-normalised {model.embed_dim}-d vectors shaped like the model's real image embeddings "
        "(Gaussian mixture, N/100 clusters, centres and spread drawn with the mean and covariance of the model's "
        "embeddings of 538 Tux Paint stamps × 4 views) + float16 visual vectors "
        f"({model.info.visual_dim}-d) per photo in the store; the index is rebuilt from the store by the app's own "
        "ModelIndex (reduced graph from 100k photos on), saved, then loaded by the Library in a fresh query process")
    rep(f"- text: {n_queries} distinct queries through Searcher.search (limit 20), after 10 warm-ups; photo: "
        f"{len(photos)} different 12 MP JPEGs × 3 through Searcher.similar (limit 20)")
    rep(f"- load average before: {load_avg()}")
    rep()
    results: list[dict] = []
    for n in sizes:
        if results:
            prev = results[-1]
            est = prev["build_s"] * (n / prev["n"]) * math.log(n) / math.log(prev["n"])
            if est > max_build_min * 60:
                rep(f"- **{n:,} skipped**: index build extrapolated from {prev['n']:,} ({prev['build_s']:.0f} s) to "
                    f"≈ {est / 60:.0f} min (> {max_build_min:.0f} min limit); store insert ≈ "
                    f"{prev['insert_s'] * n / prev['n'] / 60:.0f} min more; run it alone with --sizes {n} to force it")
                rep()
                continue
        with tempfile.TemporaryDirectory(prefix=f"psbench-search-{n}-") as tmp:
            d = Path(tmp)
            print(f"[search {n:,}] building ...", file=sys.stderr, flush=True)
            b = run_worker([f"--_build={n}", f"--_dir={d}", f"--queries={n_queries}", f"--seed={seed}"])
            print(f"[search {n:,}] built in {b['build_s']:.0f} s; querying ...", file=sys.stderr, flush=True)
            q = run_worker([f"--_query={n}", f"--_dir={d}", f"--queries={n_queries}", "--_photos", *photos])
        results.append({**b, **q})
        rep.save_json(results[-1])
        rep.flush(search_tables(results, model.embed_dim))  # partial results survive an interrupted run
    for line in search_tables(results, model.embed_dim):
        rep(line)
    rep(f"- load average after: {load_avg()}")
    rep()
    rep.flush()


# --------------------------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="48 photos, 10k-file re-scan, size 10k only")
    ap.add_argument("--photos", type=int, help="photos for the indexing benchmark (default 200; --quick 48)")
    ap.add_argument("--rescan-files", type=int, help="files for the re-scan benchmark (default 100000; --quick 10000)")
    ap.add_argument("--sizes", type=int, nargs="+", help="library sizes for search (default 10000 100000 1000000)")
    ap.add_argument("--sections", nargs="+", choices=["indexing", "rescan", "search"],
                    default=["indexing", "rescan", "search"])
    ap.add_argument("--queries", type=int, default=200, help="text queries per size (latency and recall)")
    ap.add_argument("--sample", type=int, default=32, help="photos timed stage by stage")
    ap.add_argument("--max-build-minutes", type=float, default=25.0,
                    help="skip a size whose extrapolated HNSW build exceeds this")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="also write the Markdown here")
    ap.add_argument("--_build", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--_query", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--_dir", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--_photos", nargs="*", default=[], help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args._build:
        print(json.dumps(worker_build(args._build, args._dir, args.queries, args.seed)))
        return
    if args._query:
        print(json.dumps(worker_query(args._query, args._dir, args._photos, args.queries)))
        return

    n_photos = args.photos or (48 if args.quick else 200)
    n_files = args.rescan_files or (10_000 if args.quick else 100_000)
    sizes = args.sizes or ([10_000] if args.quick else [10_000, 100_000, 1_000_000])
    rep = Report(args.out)
    import platform

    import onnxruntime

    load0 = load_avg()
    t_load, model = timed(load_default_model)
    rep("# photosearch library benchmark")
    rep()
    rep(f"- {time.strftime('%Y-%m-%d %H:%M')}, {platform.platform()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, onnxruntime {onnxruntime.__version__}")
    rep(f"- model: {model!r}, loaded in {t_load:.1f} s")
    rep(f"- load average (1 / 5 / 15 min) at start: {load0} — the machine may be shared with other work")
    rep()
    if "indexing" in args.sections:
        bench_indexing(rep, model, n_photos, args.sample)
    if "rescan" in args.sections:
        bench_rescan(rep, model, n_files)
    if "search" in args.sections:
        bench_search(rep, model, sizes, args.queries, args.max_build_minutes, args.seed)
    rep.flush()


if __name__ == "__main__":
    main()
