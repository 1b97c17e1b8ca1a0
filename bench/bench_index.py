"""Benchmark photosearch.index.VectorIndex on synthetic clustered, L2-normalised vectors.

    python bench/bench_index.py --sizes 10000 100000 --dim 256

Each size runs in a fresh subprocess so its RSS is its own. Per size: build time (batched adds from the default
capacity, growth included), single-query latency p50/p99 for k=10 at the default ef, recall@10 against exact search
on held-out queries, index file size, and VmRSS after the build (raw data freed) plus peak VmHWM.
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._common import proc_status_mib  # noqa: E402

from photosearch.index import VectorIndex, exact_search, recall_at_k


def clustered(n: int, dim: int, clusters: int, spread: float, seed: int, chunk: int = 65536) -> np.ndarray:
    """(n, dim) float32 unit vectors from a Gaussian mixture, generated in chunks to bound float64 temporaries."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        x = centres[rng.integers(0, clusters, m)] + spread * rng.normal(size=(m, dim))
        out[start : start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def run_one(args: argparse.Namespace) -> dict:
    n, dim = args.worker, args.dim
    n_lat = max(args.queries, args.latency_queries)
    vecs = clustered(n + n_lat, dim, args.clusters, args.spread, args.seed)
    base, queries = vecs[:n], vecs[n:]  # queries are held out, from the same distribution
    ids = np.arange(n, dtype=np.int64) * 2 + 1  # row ids, not positions
    exact, _ = exact_search(base, ids, queries[: args.queries], 10)

    index = VectorIndex(dim, threads=args.threads)
    start = time.perf_counter()
    for s in range(0, n, args.batch):
        index.add(ids[s : s + args.batch], base[s : s + args.batch])
    build_s = time.perf_counter() - start
    del vecs, base

    approx, _ = index.search(queries[: args.queries], k=10)
    recall = recall_at_k(approx, exact)
    for q in queries[:20]:  # warm-up
        index.search(q, k=10)
    lat = np.empty(args.latency_queries)
    for i, q in enumerate(queries[: args.latency_queries]):
        t = time.perf_counter()
        index.search(q, k=10)
        lat[i] = time.perf_counter() - t
    rss = proc_status_mib("VmRSS")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.hnsw"
        index.save(path)
        file_mib = path.stat().st_size / 2**20
    return {
        "n": n,
        "dim": dim,
        "build_s": build_s,
        "p50_ms": float(np.percentile(lat, 50) * 1e3),
        "p99_ms": float(np.percentile(lat, 99) * 1e3),
        "recall": recall,
        "file_mib": file_mib,
        "rss_mib": rss,
        "peak_mib": proc_status_mib("VmHWM"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--queries", type=int, default=200, help="queries for recall@10")
    ap.add_argument("--latency-queries", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="hnswlib threads for building")
    ap.add_argument("--batch", type=int, default=10_000, help="vectors per add() call")
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--spread", type=float, default=1.0, help="noise scale around cluster centres")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # internal: run one size, print JSON
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(run_one(args)))
        return

    defaults = VectorIndex(args.dim)
    print(
        f"VectorIndex M={defaults.M} ef_construction={defaults.ef_construction} ef_search={defaults.ef_search}, "
        f"build threads={args.threads}, {os.cpu_count()} CPUs, {args.clusters} clusters, spread {args.spread}, "
        f"recall on {args.queries} held-out queries, latency over {args.latency_queries} single queries\n",
        flush=True,
    )
    print("| N | D | build s | build vec/s | p50 ms | p99 ms | recall@10 | file MiB | RSS MiB | peak RSS MiB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in args.sizes:
        passed = {k: v for k, v in vars(args).items() if k not in ("sizes", "worker")}
        cmd = [sys.executable, __file__, f"--worker={n}", *(f"--{k.replace('_', '-')}={v}" for k, v in passed.items())]
        r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        print(
            f"| {r['n']:,} | {r['dim']} | {r['build_s']:.1f} | {r['n'] / r['build_s']:,.0f} | {r['p50_ms']:.3f} "
            f"| {r['p99_ms']:.3f} | {r['recall']:.4f} | {r['file_mib']:.1f} | {r['rss_mib']:.0f} | {r['peak_mib']:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
