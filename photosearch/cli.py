"""The headless command line: index, search, similar, status, duplicates, forget, explain, describe, tags.

Output contract (scripts and benchmarks depend on it): with ``--json`` every query prints one line
``{"query": ..., "results": [{"path": ..., "score": ...}, ...]}`` in the order the queries were given;
scores are cosine similarities.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

log = logging.getLogger("photosearch")


def _date(s: str) -> float:
    try:
        return datetime.fromisoformat(s).timestamp()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is not a date (use YYYY-MM-DD)") from None


def build_parser() -> argparse.ArgumentParser:
    from photosearch.search.engine import DUPLICATE_THRESHOLD, KEEP_RULES
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--library", type=Path, help="library folder (default: $PHOTOSEARCH_LIBRARY or the user data folder)")
    common.add_argument("--model", default=None, help="'default', a photosearch checkpoint folder, or a Hugging Face "
                        "CLIP/SigLIP folder (default: the library's model, else the shipped one)")
    common.add_argument("--device", default="auto", help="cpu, cuda or auto")
    common.add_argument("-v", "--verbose", action="store_true")

    results = argparse.ArgumentParser(add_help=False)
    results.add_argument("--limit", "-n", type=int, default=10)
    results.add_argument("--json", action="store_true", help="one JSON object per query per line")
    results.add_argument("--folder", help="only photos below this folder")
    results.add_argument("--from", dest="date_from", type=_date, help="taken on or after (YYYY-MM-DD)")
    results.add_argument("--to", dest="date_to", type=_date, help="taken before (YYYY-MM-DD)")
    results.add_argument("--min-score", type=float)
    results.add_argument("--sort", choices=("relevance", "date"), default="relevance")

    ap = argparse.ArgumentParser(prog="photosearch", description="Search your photos by text or by example photo. "
                                 "With no command, opens the window.", parents=[common])
    ap.add_argument("--self-test", action="store_true", help="index generated photos in a temporary library, run a "
                    "text and a photo query, print a verdict (exit status 0 = pass)")
    sub = ap.add_subparsers(dest="command")
    p = sub.add_parser("index", parents=[common], help="add folders and index them now")
    p.add_argument("paths", nargs="*", type=Path, help="folders to add (none: re-index the library's folders)")
    p.add_argument("--exclude", action="append", default=[], help="folder path or name pattern to skip (repeatable)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.add_argument("--batch-size", type=int, default=32, help="photos encoded and committed together (default 32)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p = sub.add_parser("search", parents=[common, results], help="search by text (and photos: 'beach + ./dog.jpg')")
    p.add_argument("queries", nargs="*", help="one query per argument")
    p.add_argument("--from-file", type=Path, help="one query per line ('-' for standard input)")
    p = sub.add_parser("similar", parents=[common, results], help="photos similar to the given photos")
    p.add_argument("images", nargs="+")
    p = sub.add_parser("status", parents=[common], help="what the library holds")
    p.add_argument("--json", action="store_true")
    p.add_argument("--failures", action="store_true", help="list the files that could not be indexed, with reasons")
    p = sub.add_parser("duplicates", parents=[common], help="groups of near-duplicate photos (and moving the extra "
                       "copies to the trash)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--threshold", type=float, default=DUPLICATE_THRESHOLD,
                   help=f"visual cosine similarity (default {DUPLICATE_THRESHOLD:g})")
    p.add_argument("--trash", action="store_true", help="move all but one photo of each group to the system trash "
                   "(shows the plan; add --yes to do it; undo with `photosearch undo-trash`)")
    p.add_argument("--keep", choices=KEEP_RULES, default="largest", help="which photo of a group stays (default: the "
                   "largest in pixels, then bytes)")
    p.add_argument("--yes", action="store_true", help="with --trash: really move the files")
    sub.add_parser("undo-trash", parents=[common], help="put the photos last moved to the trash back")
    p = sub.add_parser("forget", parents=[common], help="remove a photo or a folder from the library (not from disk)")
    p.add_argument("paths", nargs="+", type=Path)
    p = sub.add_parser("explain", parents=[common], help="heatmap of the regions of a photo that match a query")
    p.add_argument("image", type=Path)
    p.add_argument("query", help="text, or a photo's path (photo query)")
    p.add_argument("--out", type=Path, default=Path("heatmap.png"), help="overlay image to write (default heatmap.png)")
    p.add_argument("--method", default="auto", help="auto, grad-cam, grad-rollout, rollout or occlusion")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("describe", parents=[common], help="the vocabulary phrases that best describe a photo")
    p.add_argument("images", nargs="*", type=Path)
    p.add_argument("--top", type=int, default=8)
    p.add_argument("--vocabulary", type=Path, help="a vocabulary file (one phrase per line; default: yours, else the "
                   "shipped one)")
    p.add_argument("--vocabulary-file", action="store_true", help="print the path of your own vocabulary file "
                   "(created from the shipped one) to edit, and exit")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("tags", parents=[common], help="auto-tags: list, add, remove, apply")
    p.add_argument("action", choices=("list", "add", "remove", "apply"), nargs="?", default="list")
    p.add_argument("names", nargs="*", help="tag names (add/remove)")
    p.add_argument("--prompt", action="append", default=[], help="text describing the tag (repeatable; default: "
                   "'a photo of a NAME' and variants)")
    p.add_argument("--sensitivity", choices=("strict", "normal", "loose"), default=None)
    p.add_argument("--threshold", type=float, default=None, help="calibrated score a photo needs (default 2.5; "
                   "higher = stricter)")
    p.add_argument("--json", action="store_true")
    return ap


def open_library(args: argparse.Namespace, **kw):
    from photosearch.library import Library, default_library_dir
    from photosearch.model import load_model

    folder = args.library or default_library_dir()
    spec = args.model
    if spec is None:
        from photosearch.library.store import Store

        spec = Store(folder).get_setting("model", "default")

    def load():
        t = time.perf_counter()
        m = load_model(spec, device=args.device)
        log.debug("model %s loaded in %.2fs", m, time.perf_counter() - t)
        return m

    lib = Library(folder, load, **kw)
    if args.model is not None:
        lib.store.set_setting("model", str(Path(args.model).absolute()) if Path(args.model).is_dir() else args.model)
    return lib


class ProgressBar:
    """A one-line progress bar on stderr: count, rate and ETA."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.last = 0.0

    def __call__(self, p) -> None:
        every = 0.2 if self.tty else 5.0  # a log file gets a line every few seconds, a terminal a live bar
        if not self.enabled or (p.phase == "indexing" and time.monotonic() - self.last < every):
            return
        self.last = time.monotonic()
        if p.phase == "scanning":
            msg = "scanning folders…"
        elif p.phase == "indexing":
            frac = p.done / p.total if p.total else 1.0
            bar = "#" * int(30 * frac) + "-" * (30 - int(30 * frac))
            eta = f"{p.eta_s:5.0f}s" if p.eta_s is not None else "   ?"
            msg = f"[{bar}] {p.done}/{p.total} {p.rate:5.1f} photos/s ETA {eta} failed {p.failed}"
        else:
            msg = f"{p.phase}: {p.done} photos"
        end = "\n" if p.phase in ("done", "cancelled") or not self.tty else ""
        print(("\r" if self.tty else "") + msg.ljust(90), end=end, file=sys.stderr, flush=True)


def cmd_index(args) -> int:
    from photosearch.library import Control

    lib = open_library(args, batch_size=args.batch_size)
    with lib:
        for p in args.paths:
            lib.add_folder(p, args.exclude)
        if not lib.store.folders():
            print("No folders yet: photosearch index FOLDER...", file=sys.stderr)
            return 1
        control = Control()
        try:
            report = lib.index(args.paths or None, progress=ProgressBar(not args.quiet and not args.json), control=control)
        except KeyboardInterrupt:
            print("\ninterrupted: what was indexed is kept; run the same command to resume", file=sys.stderr)
            return 130
        if args.json:
            print(json.dumps(report.to_dict()))
            return 0
        print(f"indexed {report.indexed}, unchanged {report.unchanged}, moved {report.moved}, copies {report.copied}, "
              f"removed {report.removed}, skipped {len(report.failed)} in {report.seconds:.1f}s")
        for path, reason in report.failed[:20]:
            print(f"  skipped {path}: {reason}")
        if len(report.failed) > 20:
            print(f"  … and {len(report.failed) - 20} more (photosearch status --failures)")
        for f in report.offline:
            print(f"  folder offline, kept as it was: {f}")
        _apply_tags_quietly(lib)
    return 0


def _apply_tags_quietly(lib) -> None:
    """Newly indexed photos get the library's auto-tags (only new photos are scored)."""
    from photosearch.explain.tags import apply_tags

    try:
        apply_tags(lib)
    except (OSError, ValueError) as e:
        log.warning("auto-tags not updated: %s", e)


def _filters(args):
    from photosearch.search import Filters

    return Filters(folder=args.folder, date_from=args.date_from, date_to=args.date_to, min_score=args.min_score)


def _print_results(query: str, results, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"query": query, "results": [{"path": r.path, "score": round(r.score, 6)} for r in results]},
                         ensure_ascii=False), flush=True)
        return
    print(f"{query}:")
    if not results:
        print("  (no results)")
    for r in results:
        print(f"  {r.score:.3f}  {r.path}")


def _run_queries(args, queries: list[tuple[str, object]]) -> int:
    from photosearch.search import QueryError, Searcher

    lib = open_library(args)
    status = 0
    with lib:
        searcher = Searcher(lib)
        filters = _filters(args)
        for label, q in queries:
            try:
                results = searcher.search(q, args.limit, filters, args.sort)
            except (QueryError, OSError) as e:
                print(f"{label}: {e}", file=sys.stderr)
                status = 1
                results = []
            _print_results(label, results, args.json)
    return status


def cmd_search(args) -> int:
    queries = list(args.queries)
    if args.from_file:
        text = sys.stdin.read() if str(args.from_file) == "-" else args.from_file.read_text(encoding="utf-8")
        queries += [line.strip() for line in text.splitlines() if line.strip()]
    if not queries:
        print("give a query: photosearch search 'dog on a beach'", file=sys.stderr)
        return 2
    return _run_queries(args, [(q, q) for q in queries])


def cmd_similar(args) -> int:
    from photosearch.search import Term

    missing = [i for i in args.images if not Path(i).is_file()]
    if missing:
        print(f"no such file: {', '.join(missing)}", file=sys.stderr)
        return 1
    return _run_queries(args, [(i, [Term("image", str(Path(i).absolute()))]) for i in args.images])


def cmd_status(args) -> int:
    lib = open_library(args)
    with lib:
        model_id = lib.model.model_id
        st = lib.status(model_id)
        st["model"] = lib.model.info.name
        if args.failures or args.json:
            st["failures"] = [{"path": p, "reason": r} for p, r in lib.store.failures()]
        if args.json:
            print(json.dumps(st))
            return 0
        print(f"library {st['library']}\nmodel {st['model']} ({model_id})")
        print(f"photos {st['photos']}, indexed {st['indexed']}, failed {st['failed']}")
        for f in st["folders"]:
            print(f"  {'online ' if f['online'] else 'OFFLINE'} {f['path']}")
        for item in st.get("failures", []) if args.failures else []:
            print(f"  failed {item['path']}: {item['reason']}")
    return 0


def cmd_duplicates(args) -> int:
    from photosearch.search import near_duplicate_groups
    from photosearch.search.engine import keeper

    lib = open_library(args)
    with lib:
        groups = near_duplicate_groups(lib, args.threshold)
        if args.json:
            for g in groups:
                print(json.dumps({"group": [{"path": r.path, "score": round(r.score, 6), "size": r.size} for r in g]}))
            return 0
        print(f"{len(groups)} groups of near-duplicates")
        extra = []
        for g in groups:
            keep = keeper(g, args.keep) if args.trash else None
            print("  " + "\n    ".join(("keep  " if r is keep else "trash " if keep else "") +
                                       f"{r.path} ({r.width}x{r.height}, {r.size} bytes)" for r in g))
            extra += [r.path for r in g if keep is not None and r is not keep]
        if args.trash and not args.yes:
            print(f"would move {len(extra)} photos to the trash; add --yes to do it")
        elif args.trash and extra:
            moved, problems = lib.trash(extra)
            print(f"moved {len(moved)} photos to the trash (undo: photosearch undo-trash)")
            for p in problems:
                print(f"  not moved: {p}", file=sys.stderr)
            return 1 if problems else 0
    return 0


def cmd_undo_trash(args) -> int:
    lib = open_library(args)
    with lib:
        restored, problems = lib.undo_trash()
        print(f"restored {len(restored)} photos" if restored or not problems else "nothing restored")
        for p in restored:
            print(f"  {p}")
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        if not restored and not problems:
            print("(nothing in the trash journal)")
    return 1 if problems else 0


def cmd_explain(args) -> int:
    from photosearch.explain.heatmap import Explainer, render_overlay
    from photosearch.model.preprocess import open_image
    from photosearch.search.engine import encode_terms
    from photosearch.search.query import parse_query

    if not args.image.is_file():
        print(f"no such file: {args.image}", file=sys.stderr)
        return 1
    lib = open_library(args)
    with lib:
        model = lib.model
        vec, visual = encode_terms(model, parse_query(args.query))
        ex = Explainer(model)
        hm = ex.explain(str(args.image), vec, visual, method=args.method)
        render_overlay(open_image(str(args.image)), hm, max_side=1600).save(args.out)
        if args.json:
            print(json.dumps({"image": str(args.image), "query": args.query, "score": round(hm.score, 6),
                              "method": hm.method, "out": str(args.out), "seconds": round(hm.seconds, 3)}))
        else:
            print(f"{args.image}: score {hm.score:.3f} for {args.query!r} ({hm.method}, {hm.seconds:.2f}s) → {args.out}")
    return 0


def cmd_describe(args) -> int:
    from photosearch.explain.describe import Vocabulary, ensure_user_vocabulary

    if args.vocabulary_file:
        print(ensure_user_vocabulary())
        return 0
    if not args.images:
        print("give a photo: photosearch describe PHOTO", file=sys.stderr)
        return 2
    lib = open_library(args)
    status = 0
    with lib:
        vocab = Vocabulary.for_model(lib.model, path=args.vocabulary)
        for img in args.images:
            try:
                vec = lib.model.encode_images([str(img)])[0]
            except OSError as e:
                print(f"{img}: {e}", file=sys.stderr)
                status = 1
                continue
            top = vocab.describe(vec, args.top)
            if args.json:
                print(json.dumps({"image": str(img), "phrases": [{"phrase": p, "score": round(s, 6),
                                                                  "share": round(w, 6)} for p, s, w in top]}))
            else:
                print(f"{img}:")
                for p, s, w in top:
                    print(f"  {s:.3f}  {p}" + (f"  ({w:.0%})" if w >= 0.01 else ""))
    return status


def cmd_tags(args) -> int:
    from photosearch.explain.tags import (
        DEFAULT_THRESHOLD,
        SENSITIVITY,
        Tag,
        apply_tags,
        list_tags,
        remove_tag,
        save_tag,
        tag_counts,
    )

    lib = open_library(args)
    with lib:
        store = lib.store
        if args.action in ("add", "remove") and not args.names:
            print(f"give tag names: photosearch tags {args.action} beach receipt", file=sys.stderr)
            return 2
        if args.action == "add":
            th = args.threshold if args.threshold is not None else SENSITIVITY[args.sensitivity or "normal"]
            for n in args.names:
                save_tag(store, Tag(n, tuple(args.prompt), th))
        elif args.action == "remove":
            for n in args.names:
                remove_tag(store, n)
        if args.action in ("add", "apply"):
            report = apply_tags(lib)
            if not args.json:
                print(f"scored {report.photos} photos in {report.seconds:.2f}s")
        counts = tag_counts(store, lib.model.model_id)
        tags = list_tags(store)
        if args.json:
            print(json.dumps([{"name": t.name, "prompts": t.texts(), "threshold": t.threshold,
                               "photos": int(counts.get(t.name, 0))} for t in tags]))
        elif not tags:
            print("no tags yet: photosearch tags add beach receipt screenshot")
        else:
            for t in tags:
                extra = "" if t.threshold == DEFAULT_THRESHOLD else f", threshold {t.threshold:g}"
                term = f'tag:"{t.name}"' if " " in t.name else f"tag:{t.name}"
                print(f"  {t.name}: {counts.get(t.name, 0)} photos (search: {term}{extra})")
    return 0


def cmd_forget(args) -> int:
    lib = open_library(args)
    with lib:
        for p in args.paths:
            n = lib.forget(p)
            print(f"forgot {n} photos under {p}" if n != 1 else f"forgot {p}")
    return 0


COMMANDS = {"index": cmd_index, "search": cmd_search, "similar": cmd_similar, "status": cmd_status,
            "duplicates": cmd_duplicates, "forget": cmd_forget, "undo-trash": cmd_undo_trash,
            "explain": cmd_explain, "describe": cmd_describe, "tags": cmd_tags}


def main(argv: Sequence[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if getattr(args, "verbose", False) else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.self_test:
        from photosearch.selftest import run_self_test

        return run_self_test(args.model)
    if args.command is None:
        from photosearch.ui.app import run_app

        return run_app(args.library, args.model, None if args.device == "auto" else args.device)
    from photosearch.library import StoreError
    from photosearch.model import ModelError

    try:
        return COMMANDS[args.command](args)
    except (ModelError, StoreError, FileNotFoundError, ValueError, KeyError) as e:
        print(f"photosearch: {e}", file=sys.stderr)
        return 1
