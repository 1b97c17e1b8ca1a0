"""Benchmark the "why did this match" features on this machine (issue targets in brackets):

    python bench/bench_insight.py                 # all sections, 100k photos
    python bench/bench_insight.py --n 20000 --sections tags

1. heatmap  — one heatmap with the shipped default model (Grad-CAM; the torch image tower is loaded once, on
   first use) for a 12-megapixel JPEG and a 448×448 photo, decode included; plus the torch-free occlusion
   fallback [≤ 1 s per photo].
2. tags     — auto-tagging N photos from stored vectors (10 tags; SQLite read + calibrated scores + writing the
   tag rows), then the incremental run after 1,000 new photos [N = 100k: ≤ 5 s].
3. duplicates — near-duplicate grouping of N photos (``near_duplicate_groups``) with 2,000 planted groups of
   edited copies (visual vector + noise), reporting how many planted groups were found whole [≤ 30 s].

The library is synthetic: photo rows and vectors (clustered, the default model's widths) written straight into
a real SQLite store and HNSW index, as bench_library.py does. Prints Markdown; ``--out`` writes it too.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.bench_library import clustered, load_avg, make_photo

TAGS = ["beach", "cat", "dog", "receipt", "screenshot", "car", "food", "mountains", "snow", "flowers"]


def bench_heatmap(out: list[str]) -> None:
    from PIL import Image

    from photosearch.explain.heatmap import Explainer
    from photosearch.model import load_model

    model = load_model("default", device="cpu")
    work = Path(tempfile.mkdtemp(prefix="ps-heat-"))
    big = work / "12mp.jpg"
    make_photo(1).save(big, quality=90)
    small = work / "448.jpg"
    make_photo(2, (448, 448)).save(small, quality=90)
    q = model.encode_texts(["a dog on a beach at sunset"])[0]
    t = time.perf_counter()
    ex = Explainer(model)
    first = ex.explain(str(small), q)
    first_s = time.perf_counter() - t
    out.append(f"load average before: {load_avg()}")
    out.append("")
    out.append("| photo | method | median | max | runs |")
    out.append("|---|---|---:|---:|---:|")
    for name, path in (("12 MP JPEG (4000×3000)", big), ("448×448 JPEG", small)):
        for method in ("auto", "occlusion"):
            times = []
            for _ in range(7):
                t = time.perf_counter()
                hm = ex.explain(str(path), q, method=method)
                times.append(time.perf_counter() - t)
            out.append(f"| {name} | {hm.method} | {statistics.median(times) * 1000:.0f} ms | {max(times) * 1000:.0f} ms "
                       f"| {len(times)} |")
    out.append("")
    out.append(f"First heatmap of a session (loads the torch image tower once): {first_s:.1f} s ({first.method}).")
    Image.open(big).close()


def build_library(n: int, dups: int, seed: int = 0, graph: bool = True):
    """A library folder with n photo rows and vectors; ``dups`` planted groups of 2–4 near-copies."""
    from photosearch.library import Library
    from photosearch.model import load_model

    model = load_model("default", device="cpu")
    folder = Path(tempfile.mkdtemp(prefix="ps-insight-"))
    lib = Library(folder / "lib", model)
    photos = folder / "photos"
    photos.mkdir()
    f = lib.add_folder(photos)
    store = lib.store
    rng = np.random.default_rng(seed)
    now = time.time()
    with store.transaction() as db:
        db.executemany("INSERT INTO photos(path, folder_id, size, mtime_ns, content_hash, width, height, taken_at, "
                       "camera, added_at, error) VALUES (?,?,?,?,?,?,?,?,?,?,NULL)",
                       [(str(photos / f"p{i:07d}.jpg"), f.id, 1000 + i, 0, f"{i:032x}", 4000, 3000, None, None, now)
                        for i in range(n)])
    ids = np.array([r[0] for r in store.query("SELECT id FROM photos ORDER BY id")], np.int64)
    emb = clustered(n, model.embed_dim, max(1, n // 100), seed)
    vis = clustered(n, model.info.visual_dim, max(1, n // 50), seed + 1, spread=3.0)
    planted = []
    pos = 0
    for _g in range(dups):  # a planted group: copies of one photo's vectors with small noise (edits, resizes)
        size = int(rng.integers(2, 5))
        members = list(range(pos, pos + size))
        pos += size + 3
        for m in members[1:]:
            e = emb[members[0]] + rng.normal(0, 0.01, emb.shape[1]).astype(np.float32)
            v = vis[members[0]] + rng.normal(0, 0.008, vis.shape[1]).astype(np.float32)
            emb[m], vis[m] = e / np.linalg.norm(e), v / np.linalg.norm(v)
        planted.append(set(ids[members].tolist()))
    for s in range(0, n, 20000):
        with store.transaction() as db:
            db.executemany("INSERT INTO vectors(photo_id, model_id, embedding, visual) VALUES (?,?,?,?)",
                           [(int(ids[j]), model.model_id, emb[j].tobytes(), vis[j].astype(np.float16).tobytes())
                            for j in range(s, min(n, s + 20000))])
    if graph:  # duplicate grouping searches the HNSW graph; tagging reads only the store
        mi = lib.index_for(model)
        mi.index.threads = 2
        for s in range(0, n, 10000):
            mi.add(ids[s : s + 10000], emb[s : s + 10000])
        mi.save(force=True)
    return lib, ids, planted


def bench_tags(out: list[str], lib) -> None:
    from photosearch.explain.describe import Vocabulary
    from photosearch.explain.tags import Tag, apply_tags, save_tag

    Vocabulary.for_model(lib.model)  # phrase vectors cached once per model (not part of tagging)
    for t in TAGS:
        save_tag(lib.store, Tag(t))
    n = len(lib.store.vector_ids(lib.model.model_id))
    out.append(f"load average before: {load_avg()}")
    t = time.perf_counter()
    rep = apply_tags(lib)
    full = time.perf_counter() - t
    t = time.perf_counter()
    again = apply_tags(lib)
    noop = time.perf_counter() - t
    out.append("")
    out.append("| run | photos scored | seconds |")
    out.append("|---|---:|---:|")
    out.append(f"| all photos, {len(TAGS)} new tags (encode tag prompts, read vectors, score, write) | {rep.photos:,} "
               f"| **{full:.2f}** |")
    out.append(f"| again, nothing new | {again.photos:,} | {noop:.2f} |")
    assigned = sum(rep.assigned.values())
    out.append("")
    out.append(f"{n:,} photos in the library; {assigned:,} tag assignments written (synthetic vectors, so which "
               "tags is meaningless here — see the calibration table for quality).")


def bench_duplicates(out: list[str], lib, planted: list[set[int]]) -> None:
    from photosearch.search import near_duplicate_groups

    out.append(f"load average before: {load_avg()}")
    t = time.perf_counter()
    groups = near_duplicate_groups(lib)
    secs = time.perf_counter() - t
    found = [{r.photo_id for r in g} for g in groups]
    whole = sum(1 for p in planted if any(p <= f for f in found))
    extra = sum(1 for f in found if not any(f & p for p in planted))
    out.append("")
    out.append("| photos | planted groups | found whole | other groups | seconds |")
    out.append("|---:|---:|---:|---:|---:|")
    out.append(f"| {len(lib.store.vector_ids(lib.model.model_id)):,} | {len(planted):,} | {whole:,} | {extra:,} "
               f"| **{secs:.1f}** |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--sections", nargs="+", default=["heatmap", "tags", "duplicates"])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    os.environ.setdefault("PHOTOSEARCH_CACHE", str(Path(tempfile.gettempdir()) / "photosearch-bench-cache"))
    out: list[str] = [f"machine: {os.cpu_count()} CPUs, {sys.platform}", ""]
    if "heatmap" in args.sections:
        out += ["### Heatmap, default model", ""]
        bench_heatmap(out)
        print("\n".join(out), flush=True)
    if {"tags", "duplicates"} & set(args.sections):
        t = time.perf_counter()
        lib, _ids, planted = build_library(args.n, min(2000, args.n // 10), graph="duplicates" in args.sections)
        out += ["", f"(synthetic library of {args.n:,} photos built in {time.perf_counter() - t:.0f} s)", ""]
        if "tags" in args.sections:
            out += ["### Auto-tagging from stored vectors", ""]
            bench_tags(out, lib)
            print("\n".join(out), flush=True)
        if "duplicates" in args.sections:
            out += ["", "### Duplicate grouping", ""]
            bench_duplicates(out, lib, planted)
        lib.close()
    text = "\n".join(out)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
