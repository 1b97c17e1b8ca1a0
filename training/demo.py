"""Search the held-out Tux Paint photos with the shipped model, as the app would: python -m training demo QUERY..."""

from __future__ import annotations

import argparse
import time
from typing import Sequence

import numpy as np

from photosearch.model import load_model
from training.data.tuxpaint import load_rgb
from training.default_model import Options, tuxpaint_split


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training demo")
    ap.add_argument("queries", nargs="*", default=["a cat"])
    ap.add_argument("--model", default="default")
    ap.add_argument("--top", type=int, default=5)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    model = load_model(args.model)
    t1 = time.perf_counter()
    _, test = tuxpaint_split(Options())
    photos = model.encode_images([load_rgb(i.path) for i in test])
    t2 = time.perf_counter()
    print(f"{model} loaded in {t1 - t0:.1f}s; {len(test)} held-out photos encoded in {t2 - t1:.1f}s "
          f"({len(test) / (t2 - t1):.0f}/s, image backend {model.image_backend})")
    for q in args.queries:
        scores = photos @ model.encode_texts([q])[0]
        print(f"\n{q!r}")
        for rank, i in enumerate(np.argsort(-scores)[: args.top], 1):
            print(f"  {rank}. {scores[i]:.3f}  {test[i].path.name:28s} {test[i].captions[0]}")
    return 0
