"""UI responsiveness of the desktop app (issue: the desktop app), measured on Qt's offscreen platform.

    python bench/bench_ui.py [--photos 60] [--results 100000] [--out FILE]

1. Cold start: launch `photosearch --library L` as a user would; time until the window is visible and until
   the first results of a text query arrive (the model loads lazily after the window shows).
2. UI-thread stalls while indexing 12-megapixel JPEGs: a 5 ms heartbeat QTimer on the UI thread records the
   gaps between its ticks; the longest gap and the 99th percentile are the stalls a user would feel.
3. Scrolling a grid of 100,000 results: scroll the real results view page by page through the whole list and
   record the longest event-loop gap.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_12mp(folder: Path, n: int) -> list[Path]:
    """Photo-like 4000x3000 JPEGs (gradients + shapes + noise), cached between runs."""
    import numpy as np
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    rng = np.random.default_rng(0)
    base = None
    for i in range(n):
        p = folder / f"IMG_{i:04d}.jpg"
        if not p.exists():
            if base is None:
                yy, xx = np.mgrid[0:3000, 0:4000].astype(np.float32) / 4000
                base = (yy, xx)
            yy, xx = base
            a = rng.uniform(-4, 4, (3, 2))
            img = np.stack([127 + 100 * np.sin(a[c, 0] * xx * 6 + a[c, 1] * yy * 6 + i) for c in range(3)], -1)
            img += rng.normal(0, 12, img.shape).astype(np.float32)
            im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
            d = ImageDraw.Draw(im)
            for _ in range(12):
                x, y = rng.integers(0, 3600), rng.integers(0, 2600)
                d.ellipse([x, y, x + rng.integers(100, 800), y + rng.integers(100, 800)],
                          fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
            im.save(p, quality=90)
        out.append(p)
    return out


def cold_start(library: Path, query: str, runs: int = 3) -> list[tuple[float, float]]:
    exe = shutil.which("photosearch", path=str(Path(sys.executable).parent)) or "photosearch"
    res = []
    for _ in range(runs):
        env = dict(os.environ, PHOTOSEARCH_PROBE="1", PHOTOSEARCH_PROBE_QUERY=query, QT_QPA_PLATFORM="offscreen")
        t0 = time.time()
        out = subprocess.run([exe, "--library", str(library)], env=env, capture_output=True, text=True, timeout=300)
        marks = {ln.split()[1]: float(ln.split()[2]) for ln in out.stdout.splitlines() if ln.startswith("probe ")}
        res.append((marks.get("window-visible", float("nan")) - t0, marks.get("first-result", float("nan")) - t0))
    return res


def gaps_summary(gaps: list[float]) -> tuple[float, float, int]:
    import numpy as np

    g = np.array(gaps) * 1000 if gaps else np.zeros(1)
    return float(g.max()), float(np.percentile(g, 99)), len(gaps)


def stalls_while_indexing(photos: list[Path], work: Path) -> tuple[tuple[float, float, int], float]:
    from PySide6.QtCore import QSettings, QTimer
    from PySide6.QtWidgets import QApplication

    from photosearch.library import Library
    from photosearch.model import load_model
    from photosearch.ui.main_window import MainWindow

    app = QApplication.instance() or QApplication([])
    model = load_model("default")  # loaded before timing: model loading is measured by the cold start
    lib = Library(work / "lib-index", model)
    w = MainWindow(lib, QSettings(str(work / "s.ini"), QSettings.Format.IniFormat), watch=False)
    w.show()
    gaps: list[float] = []
    last = [time.perf_counter()]

    def tick() -> None:
        now = time.perf_counter()
        gaps.append(now - last[0])
        last[0] = now

    timer = QTimer()
    timer.setInterval(5)
    timer.timeout.connect(tick)
    t0 = time.perf_counter()
    w.apply_folders({str(photos[0].parent): []})
    w.search.setText("a photo")  # searching while indexing, as a user would
    timer.start()
    last[0] = time.perf_counter()
    while time.perf_counter() - t0 < 2 or w.indexer.state != "idle":
        app.processEvents()
        time.sleep(0.001)
        if time.perf_counter() - t0 > 900:
            break
    timer.stop()
    elapsed = time.perf_counter() - t0
    w.close()
    # a heartbeat gap of 5 ms is on time; the stall is what exceeds the interval
    return gaps_summary([max(0.0, g - 0.005) for g in gaps]), len(photos) / elapsed


def scrolling(n_results: int, photos: list[Path], work: Path) -> tuple[tuple[float, float, int], float]:
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from photosearch.library import Library
    from photosearch.search import Result
    from photosearch.ui.main_window import PAGE_RESULTS, MainWindow

    app = QApplication.instance() or QApplication([])
    lib = Library(work / "lib-scroll", lambda: None)
    w = MainWindow(lib, QSettings(str(work / "s2.ini"), QSettings.Format.IniFormat), watch=False)
    w.resize(1400, 900)
    w.show()
    # every result a distinct file, as in a real library: hard links to the sample photos
    links = work / "links"
    links.mkdir(exist_ok=True)
    paths = []
    for i in range(n_results):
        p = links / f"{i:06d}.jpg"
        if not p.exists():
            os.link(photos[i % len(photos)], p)
        paths.append(str(p))
    results = [Result(paths[i], 1.0 - i / n_results, i) for i in range(n_results)]
    t = time.perf_counter()
    w.model.set_results(results)
    w.stack.setCurrentIndex(PAGE_RESULTS)
    app.processEvents()
    set_time = time.perf_counter() - t
    bar = w.view.verticalScrollBar()
    # the view lays items out in batches from the event loop; every iteration while it does counts as a step
    gaps: list[float] = []
    stable = 0
    while stable < 100:
        before = bar.maximum()
        t = time.perf_counter()
        app.processEvents()
        gaps.append(time.perf_counter() - t)
        stable = stable + 1 if bar.maximum() == before else 0
        time.sleep(0.005)  # let the layout timer fire between batches
    layout_steps = len(gaps)
    step = max(1, bar.pageStep())
    pos = 0
    while pos <= bar.maximum():
        t = time.perf_counter()
        bar.setValue(pos)
        app.processEvents()
        gaps.append(time.perf_counter() - t)
        pos += step * 10  # ten pages a step, as a fast flick of the scroll wheel would
    import numpy as np

    worst = int(np.argmax(gaps))
    print(f"scroll range {bar.maximum()} px, page {bar.pageStep()} px, {w.model.rowCount()} rows; worst step "
          f"#{worst} of {len(gaps)} ({layout_steps} layout steps first)", flush=True)
    w.close()
    return gaps_summary(gaps), set_time


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", type=int, default=60)
    ap.add_argument("--results", type=int, default=100_000)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--only-scroll", action="store_true", help="only the scrolling measurement")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-ui-"))
    photos = make_12mp(Path("/tmp/photosearch-bench-12mp-ui"), args.photos)
    load0 = os.getloadavg()[0]

    if args.only_scroll:
        (scroll_max, scroll_p99, steps), set_time = scrolling(args.results, photos, work)
        print(f"scrolling {args.results:,} results: longest step {scroll_max:.1f} ms, p99 {scroll_p99:.1f} ms "
              f"({steps} steps); model reset {1000 * set_time:.0f} ms", flush=True)
        os._exit(0)
    # a small library for the cold-start measurement
    small = work / "cold-lib"
    subprocess.run([sys.executable, "-m", "photosearch", "index", str(photos[0].parent), "--library", str(small),
                    "-q"], check=True, capture_output=True, timeout=1800)
    cold = cold_start(small, "a dog on a beach")
    (stall_max, stall_p99, ticks), rate = stalls_while_indexing(photos, work)
    (scroll_max, scroll_p99, steps), set_time = scrolling(args.results, photos, work)
    load1 = os.getloadavg()[0]
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    lines = [
        f"### UI responsiveness ({time.strftime('%Y-%m-%d')}, {cpu}, {os.cpu_count()} cores, "
        f"{platform.python_version()}, Qt offscreen; load average {load0:.2f} → {load1:.2f})",
        "",
        "| measurement | result | target |",
        "|---|---|---|",
        f"| cold start: window visible (median of {len(cold)}) | {sorted(c[0] for c in cold)[len(cold) // 2]:.2f} s "
        "| ≤ 1.5 s |",
        f"| cold start: first text result (median) | {sorted(c[1] for c in cold)[len(cold) // 2]:.2f} s | ≤ 3 s |",
        f"| longest UI stall while indexing {len(photos)} 12-MP JPEGs ({ticks} heartbeats, {rate:.1f} photos/s) "
        f"| {stall_max:.1f} ms | ≤ 50 ms |",
        f"| p99 UI stall while indexing | {stall_p99:.1f} ms | ≤ 20 ms |",
        f"| scrolling {args.results:,} results: longest step ({steps} steps) | {scroll_max:.1f} ms | ≤ 50 ms |",
        f"| showing {args.results:,} results in the grid (model reset) | {1000 * set_time:.0f} ms | |",
        "",
        f"Cold-start runs (visible, first result) in s: {', '.join(f'({a:.2f}, {b:.2f})' for a, b in cold)}",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    shutil.rmtree(work, ignore_errors=True)
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown of Qt objects (PySide6 may abort while finalising)


if __name__ == "__main__":
    sys.exit(main())
