"""``photosearch --self-test``: index a few photos made on the fly in a temporary library, run a text and a
photo query, check the answers, print a one-line verdict and exit 0 (pass) or 1 (fail)."""

from __future__ import annotations

import tempfile
import time
import traceback
from pathlib import Path


def _make_photos(folder: Path) -> list[Path]:
    from PIL import Image, ImageDraw

    specs = [("red-circle", (220, 30, 30), "ellipse"), ("blue-square", (30, 60, 220), "rectangle"),
             ("green-triangle", (30, 170, 60), "polygon"), ("yellow-circle", (240, 210, 40), "ellipse"),
             ("black-square", (20, 20, 20), "rectangle"), ("purple-triangle", (130, 40, 160), "polygon")]
    paths = []
    for name, colour, shape in specs:
        im = Image.new("RGB", (320, 240), (250, 250, 245))
        d = ImageDraw.Draw(im)
        if shape == "ellipse":
            d.ellipse([90, 50, 230, 190], fill=colour)
        elif shape == "rectangle":
            d.rectangle([90, 50, 230, 190], fill=colour)
        else:
            d.polygon([(160, 40), (240, 200), (80, 200)], fill=colour)
        p = folder / f"{name}.jpg"
        im.save(p, quality=92)
        paths.append(p)
    return paths


def run_self_test(model: str | None = None) -> int:
    t0 = time.perf_counter()
    try:
        from photosearch.library import Library
        from photosearch.model import load_model
        from photosearch.search import Searcher

        with tempfile.TemporaryDirectory(prefix="photosearch-selftest-") as tmp:
            photos_dir = Path(tmp) / "photos"
            photos_dir.mkdir()
            photos = _make_photos(photos_dir)
            m = load_model(model or "default")
            with Library(Path(tmp) / "library", m) as lib:
                lib.add_folder(photos_dir)
                report = lib.index()
                if report.indexed != len(photos) or report.failed:
                    raise AssertionError(f"indexed {report.indexed}/{len(photos)}, failed {report.failed}")
                s = Searcher(lib)
                text = s.search("a red circle", limit=len(photos))
                if len(text) != len(photos) or any(a.score < b.score for a, b in zip(text, text[1:])):
                    raise AssertionError("text query did not rank every photo")
                similar = s.similar(str(photos[1]), limit=3)
                if similar[0].path != str(photos[1]) or similar[0].score < 0.99:
                    raise AssertionError(f"photo query found {similar[0].path} first")
        print(f"photosearch self-test: PASS ({m.info.name}, {m.image_backend} images, {len(photos)} photos indexed, "
              f"text and photo queries answered, {time.perf_counter() - t0:.1f}s)")
        return 0
    except Exception as e:  # noqa: BLE001 - the verdict must name any failure
        traceback.print_exc()
        print(f"photosearch self-test: FAIL ({type(e).__name__}: {e})")
        return 1
