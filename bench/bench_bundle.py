"""The installer bundle (packaging/): size, what it holds, and how fast the bundled app starts.

    python bench/bench_bundle.py [--bundle dist/photosearch] [--runs 5] [--photos 24] [--out FILE]

Build the bundle first (`make bundle` or `python packaging/build.py`). Every run uses a copy of the bundle in a
temporary folder, outside the source tree, with an environment stripped of PYTHONPATH/VIRTUAL_ENV and a fresh
HOME, as a user's machine without Python would have it:

1. Size: bytes of all files (what `du -sb` reports), file count, the largest parts, and whether torch or any
   CUDA library slipped in.
2. `photosearch --self-test`: verdict and wall time.
3. Start-up: `photosearch --library L` with the app's start-up probe (PHOTOSEARCH_PROBE=1,
   PHOTOSEARCH_PROBE_QUERY): time from launch until the window is visible and until the first results of a
   text query arrive, on a library of generated photos indexed by the bundle beforehand. The same is measured
   for the source install (`.venv/bin/photosearch`) in alternating runs, so both see the same machine load.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "VIRTUAL_ENV", "PHOTOSEARCH", "XDG_"))}
    env.update(HOME=str(home), QT_QPA_PLATFORM="offscreen", XDG_CACHE_HOME=str(home / ".cache"),
               XDG_CONFIG_HOME=str(home / ".config"), XDG_DATA_HOME=str(home / ".local" / "share"))
    return env


def size_report(bundle: Path) -> tuple[int, int, list[tuple[str, int]], list[str]]:
    total, count, parts = 0, 0, {}
    suspicious = []
    for f in bundle.rglob("*"):
        if f.is_symlink() or not f.is_file():
            continue
        n = f.stat().st_size
        total += n
        count += 1
        rel = f.relative_to(bundle).parts
        depth = 3 if rel[0] == "_internal" and len(rel) > 3 and rel[1] in ("PySide6", "resources") else 2
        key = "/".join(rel[:depth]) if len(rel) > depth else "/".join(rel[:-1] or rel)
        if rel[0] == "_internal" and len(rel) == 2:
            key = "_internal/*.so and other top-level files"
        parts[key] = parts.get(key, 0) + n
        low = f.name.lower()
        if low.startswith(("libtorch", "libc10", "libcudnn", "libcublas", "libnccl", "libcudart", "libnvrtc")) \
                or "torch" in rel[1:2]:
            suspicious.append(str(f.relative_to(bundle)))
    top = sorted(parts.items(), key=lambda kv: -kv[1])[:12]
    return total, count, top, suspicious


def probe(exe: list[str], library: Path, env: dict[str, str], query: str) -> tuple[float, float]:
    env = dict(env, PHOTOSEARCH_PROBE="1", PHOTOSEARCH_PROBE_QUERY=query)
    t0 = time.time()
    out = subprocess.run([*exe, "--library", str(library)], env=env, capture_output=True, text=True, timeout=300,
                         check=False)
    marks = {ln.split()[1]: float(ln.split()[2]) for ln in out.stdout.splitlines() if ln.startswith("probe ")}
    if "window-visible" not in marks:
        raise RuntimeError(f"no probe output from {exe[0]} (exit {out.returncode}): {out.stderr[-2000:]}")
    return marks["window-visible"] - t0, marks.get("first-result", float("nan")) - t0


def make_photos(folder: Path, n: int) -> None:
    import numpy as np
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        im = Image.new("RGB", (800, 600), tuple(int(v) for v in rng.integers(120, 255, 3)))
        d = ImageDraw.Draw(im)
        for _ in range(6):
            x, y = rng.integers(0, 700), rng.integers(0, 500)
            d.ellipse([x, y, x + rng.integers(40, 300), y + rng.integers(40, 300)],
                      fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
        im.save(folder / f"IMG_{i:04d}.jpg", quality=90)


def fmt(xs: list[float]) -> str:
    return f"{statistics.median(xs):.2f} s (min {min(xs):.2f}, max {max(xs):.2f})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", type=Path, default=REPO / "dist" / "photosearch")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--photos", type=int, default=24)
    ap.add_argument("--query", default="a red circle")
    ap.add_argument("--no-source", action="store_true", help="skip the source-install comparison")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if not args.bundle.is_dir():
        print(f"{args.bundle} does not exist: build it with `make bundle`", file=sys.stderr)
        return 2
    lines = [(f"Bundle `{args.bundle.name}` — {platform.platform()}, {os.cpu_count()} cores, "
              f"load average at start {os.getloadavg()[0]:.1f}"), ""]
    total, count, top, suspicious = size_report(args.bundle)
    lines += [f"- size: **{total / 1e6:.0f} MB** unpacked ({total} bytes, {count} files; symlinks not counted)",
              "- torch / CUDA libraries in the bundle: " + (", ".join(suspicious[:5]) if suspicious else "none"),
              "- largest parts: " + ", ".join(f"`{k}` {v / 1e6:.0f} MB" for k, v in top), ""]

    with tempfile.TemporaryDirectory(prefix="photosearch-bench-bundle-") as tmp:
        tmp = Path(tmp)
        bundle = tmp / "app" / args.bundle.name
        shutil.copytree(args.bundle, bundle, symlinks=True)
        exe = [str(bundle / ("photosearch-cli.exe" if sys.platform == "win32" else "photosearch"))]
        env = clean_env(tmp / "home")
        t = time.perf_counter()
        st = subprocess.run([*exe, "--self-test"], cwd=tmp, env=env, capture_output=True, text=True, timeout=600,
                            check=False)
        verdict = (st.stdout.strip().splitlines() or ["(no output)"])[-1]
        lines += [(f"- `--self-test` (outside the source tree, clean environment): exit {st.returncode}, "
                   f"{time.perf_counter() - t:.1f} s wall — {verdict}"), ""]

        photos = tmp / "photos"
        make_photos(photos, args.photos)
        library = tmp / "library"
        subprocess.run([*exe, "index", str(photos), "--library", str(library), "-q"], cwd=tmp, env=env,
                       check=True, capture_output=True, timeout=600)
        src = shutil.which("photosearch", path=str(REPO / ".venv" / "bin"))
        kinds = {"bundle": exe}
        if src and not args.no_source:
            kinds["source install (.venv)"] = [src]
        res: dict[str, list[tuple[float, float]]] = {k: [] for k in kinds}
        for k, cmd in kinds.items():  # one unmeasured launch each: page cache warm for both
            probe(cmd, library, env, args.query)
        for _ in range(args.runs):
            for k, cmd in kinds.items():
                res[k].append(probe(cmd, library, env, args.query))
        lines += [(f"Start-up, {args.runs} runs each after one warm-up launch (page cache warm), library of "
                   f"{args.photos} indexed photos, query {args.query!r}, Qt offscreen, load average now "
                   f"{os.getloadavg()[0]:.1f}:"), "",
                  "| app | window visible | first text result |", "|---|---|---|"]
        for k, r in res.items():
            lines.append(f"| {k} | {fmt([a for a, _ in r])} | {fmt([b for _, b in r])} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
