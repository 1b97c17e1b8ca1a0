"""Image–caption datasets for training and evaluation, checked rather than trusted.

Formats (``load_caption_data(fmt, annotations, images)``; ``fmt="auto"`` detects them from the name or contents):

- ``coco``: MS-COCO ``captions_*.json``; ``file_name`` looked up under ``images`` (default: a sibling folder named
  after the split, e.g. ``annotations/captions_val2017.json`` → ``val2017/``).
- ``flickr8k``: ``Flickr8k.token.txt`` (``IMAGE#N<TAB>caption``); ``split`` train/dev(=val)/test reads the official
  ``Flickr_8k.{train,dev,test}Images.txt`` lists next to it.
- ``flickr30k``: ``results.csv`` (``image_name| comment_number| comment``) or ``results_20130124.token``.
- ``karpathy``: ``dataset_{coco,flickr8k,flickr30k}.json``; image = ``filepath/filename``; ``split`` filters the
  ``split`` field (train/val/test/restval, combined with ``+``: ``train+restval``).
- ``csv`` / ``tsv`` / ``jsonl``: image path + caption, column names configurable; several rows per image are
  grouped; JSONL rows may carry ``"captions": [...]``; an optional ``split`` column/key is filtered by ``split``.
- ``sidecar``: a folder of images with ``X.txt`` next to ``X.jpg``, one caption per non-empty line.
- ``tuxpaint``: the Debian Tux Paint stamps (:mod:`training.data.tuxpaint`).

Relative image paths are looked up under ``images`` first, then next to the annotation file. Images named by the
annotations but absent are counted, listed and logged; above ``max_missing_fraction`` loading fails with a
:class:`DatasetError` that says how many, which, and where it looked. Captions are whitespace-normalised, empty ones
dropped and identical ones per image de-duplicated.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from photosearch.library.scan import is_image_name, is_skipped_name
from photosearch.model.errors import ImageDecodeError
from photosearch.model.preprocess import open_image

logger = logging.getLogger(__name__)

FORMATS = ("coco", "flickr8k", "flickr30k", "karpathy", "csv", "tsv", "jsonl", "sidecar", "tuxpaint")
KARPATHY_SPLITS = ("train", "val", "test", "restval")
_EXAMPLES = 5  # how many missing/unreadable paths an error or warning names


class DatasetError(ValueError):
    """A dataset that cannot be used as given: the message names the file (and line) and what is wrong."""


@dataclass(frozen=True)
class CaptionedPhoto:
    """One image and all of its captions (non-empty, whitespace-normalised, distinct)."""

    image: Path
    captions: tuple[str, ...]


@dataclass
class CaptionData:
    """A loaded dataset: the usable images, and what the annotations named but could not be used."""

    name: str
    items: list[CaptionedPhoto]
    missing: list[Path] = field(default_factory=list)
    unreadable: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # other things worth knowing (empty captions dropped, ...)

    @property
    def num_captions(self) -> int:
        return sum(len(it.captions) for it in self.items)

    def summary(self) -> str:
        n, c = len(self.items), self.num_captions
        per = f" ({c / n:.2f} per image)" if n else ""
        return (f"{self.name}: {n} images, {c} captions{per}, {len(self.missing)} missing, "
                f"{len(self.unreadable)} unreadable")

    def split(self, fraction: float, seed: int = 0) -> tuple[CaptionData, CaptionData]:
        """Deterministic split by image into (rest, held_out): ``held_out`` has ``round(fraction * N)`` images —
        the same convention as :func:`training.data.tuxpaint.split_by_image` (items ordered by path, permuted by
        ``seed``). Both parts keep the original order; missing/unreadable lists stay with this object only."""
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction must be in [0, 1], got {fraction}")
        order = sorted(range(len(self.items)), key=lambda i: self.items[i].image.as_posix())
        perm = np.random.default_rng(seed).permutation(len(order))
        n_held = round(fraction * len(order))
        held = {order[j] for j in perm[:n_held]}
        rest_items = [it for i, it in enumerate(self.items) if i not in held]
        held_items = [it for i, it in enumerate(self.items) if i in held]
        return (CaptionData(f"{self.name}/train", rest_items), CaptionData(f"{self.name}/held-out", held_items))


# --- small helpers ------------------------------------------------------------------------------------------------


def _clean(text: Any) -> str:
    return " ".join(str(text).split())


def _read_text(path: Path) -> str:
    """UTF-8 text (a BOM tolerated); a clear error for a missing file or other encodings."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"{path}: annotation file not found") from None
    except IsADirectoryError:
        raise DatasetError(f"{path}: is a folder, expected an annotation file for this format") from None
    except OSError as e:
        raise DatasetError(f"{path}: cannot be read ({e.strerror or e})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DatasetError(f"{path}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); "
                           "save the file as UTF-8") from None


def _lines(text: str) -> list[str]:
    """Physical lines (\\n or \\r\\n) without their ending; unlike str.splitlines, U+2028 etc. stay in the line."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [ln.removesuffix("\r") for ln in lines]


def _load_json(path: Path) -> Any:
    text = _read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}:{e.lineno}: invalid JSON ({e.msg}, column {e.colno})") from None


def _brief(obj: Any, width: int = 80) -> str:
    s = repr(obj)
    return s if len(s) <= width else s[: width - 3] + "..."


def _split_names(split: str) -> list[str]:
    return [s.strip() for s in re.split(r"[+,]", split) if s.strip()]


def _hint(path: Path, fmt: str) -> str:
    """' (it looks like a 'karpathy' file: ...)' when the contents suggest another format than ``fmt``."""
    try:
        guess = detect_format(path)
    except DatasetError:
        return ""
    return f" (it looks like a '{guess}' file: pass fmt='{guess}' or 'auto')" if guess != fmt else ""


class _Resolver:
    """Looks relative image paths up under a list of base folders (first hit wins); directory listings are cached,
    so checking 100k images costs one listing per folder rather than 100k stats."""

    def __init__(self, bases: Iterable[tuple[Path, str]]):
        self.bases: list[tuple[Path, str]] = []
        seen = set()
        for base, why in bases:
            if base not in seen:
                seen.add(base)
                self.bases.append((base, why))
        self._listing: dict[Path, set[str]] = {}

    def exists(self, p: Path) -> bool:
        names = self._listing.get(p.parent)
        if names is None:
            try:
                with os.scandir(p.parent) as it:
                    names = {e.name for e in it if e.is_file()}
            except OSError:
                names = set()
            self._listing[p.parent] = names
        return p.name in names or p.is_file()  # is_file(): case-insensitive file systems

    def resolve(self, rel: str) -> tuple[Path, bool]:
        p = Path(rel).expanduser()
        if p.is_absolute():
            return p, self.exists(p)
        for base, _ in self.bases:
            if self.exists(base / p):
                return base / p, True
        return self.bases[0][0] / p, False

    def describe(self) -> str:
        return "; ".join(f"{b} ({why})" for b, why in self.bases)


def _bases(annotations: Path, images: Path | None, guesses: Sequence[Path] = ()) -> _Resolver:
    """``images`` (required to exist when given) then the existing guessed folders, then the annotation folder."""
    bases: list[tuple[Path, str]] = []
    if images is not None:
        if not images.is_dir():
            raise DatasetError(f"images folder not found: {images}")
        bases.append((images, "images folder"))
    bases += [(g, "default images folder") for g in guesses if g.is_dir()]
    ann_dir = annotations if annotations.is_dir() else annotations.parent
    bases.append((ann_dir, "annotation file's folder"))
    return _Resolver(bases)


# --- format detection ---------------------------------------------------------------------------------------------

_TOKEN_LINE = re.compile(r"^[^\t#]+#\d+\t")


def _first_line(path: Path) -> str:
    try:
        with path.open("rb") as f:
            head = f.read(65536)
    except OSError as e:
        raise DatasetError(f"{path}: cannot be read ({e.strerror or e})") from None
    text = head.decode("utf-8-sig", errors="replace")
    for line in text.split("\n"):
        if line.strip():
            return line.rstrip("\r")
    return ""


def detect_format(annotations: Path | str) -> str:
    """The format of ``annotations`` (one of FORMATS), from its name and, where that is not enough, its contents."""
    path = Path(annotations)
    if path.is_dir():
        from training.data.tuxpaint import STAMPS_SUBDIR

        where = path.resolve().as_posix() + "/"
        if (path / STAMPS_SUBDIR).is_dir() or "/tuxpaint/stamps/" in where or "/tuxpaint-stamps-default/" in where:
            return "tuxpaint"
        files = [p for p in path.rglob("*") if p.is_file() and not is_skipped_name(p.name)]
        stems = {p.with_suffix("") for p in files if p.suffix.lower() == ".txt"}
        if any(is_image_name(p.name) and p.with_suffix("") in stems for p in files):
            return "sidecar"
        if any(is_image_name(p.name) and p.parent != path for p in files):
            raise DatasetError(f"{path}: a folder of images in sub-folders without .txt captions — that is a class "
                               "folder for zero-shot evaluation (load_class_folder / 'data check classes'), "
                               "not caption data")
        raise DatasetError(f"{path}: a folder without images that have .txt captions next to them (sidecar format)")
    if not path.is_file():
        raise DatasetError(f"{path}: annotation file not found")
    name = path.name.lower()
    if re.fullmatch(r"captions_.*\.json", name):
        return "coco"
    if re.fullmatch(r"dataset_.*\.json", name):
        return "karpathy"
    if name.endswith((".token", ".token.txt")):
        return "flickr30k" if ("30k" in name or name.startswith("results")) else "flickr8k"
    first = _first_line(path)
    if "|" in first and "image_name" in first.lower():
        return "flickr30k"
    if name.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    if name.endswith(".tsv"):
        return "tsv"
    if name.endswith(".csv"):
        return "csv"
    if name.endswith(".json"):
        obj = _load_json(path)
        if isinstance(obj, list):
            return "jsonl"
        if isinstance(obj, dict) and isinstance(obj.get("images"), list):
            if "annotations" in obj:
                return "coco"
            if any(isinstance(im, dict) and "sentences" in im for im in obj["images"][:10]):
                return "karpathy"
        raise DatasetError(f"{path}: JSON that is neither COCO captions ('images' + 'annotations'), a Karpathy split "
                           "file ('images' with 'sentences') nor a list of {image, caption} records")
    if _TOKEN_LINE.match(first):
        return "flickr8k"
    if "\t" in first:
        return "tsv"
    if "," in first:
        return "csv"
    raise DatasetError(f"{path}: cannot tell the format from its name or first line ({_brief(first)}); "
                       f"pass one of {', '.join(FORMATS)}")


# --- parsers: each returns (name, [(relative image path, [raw captions])], resolver) ---------------------------------

Entries = list[tuple[str, list[str]]]


def _group(pairs: Iterable[tuple[str, str]]) -> Entries:
    groups: dict[str, list[str]] = {}
    for rel, cap in pairs:
        rel = rel.strip()
        key = PurePosixPath(rel.replace("\\", "/")).as_posix() if os.sep == "/" else rel  # Windows-written paths
        groups.setdefault(key, []).append(cap)
    return list(groups.items())


def _no_split(fmt: str, split: str | None, what: str) -> None:
    if split is not None:
        raise DatasetError(f"format '{fmt}' has no split to select ({what}); use the Karpathy split file "
                           "(fmt='karpathy') or CaptionData.split(fraction)")


def _parse_coco(path: Path, images: Path | None, split: str | None) -> tuple[str, Entries, _Resolver, list[str]]:
    _no_split("coco", split, "each captions_*.json file is one split")
    obj = _load_json(path)
    if not isinstance(obj, dict) or not isinstance(obj.get("images"), list) or "annotations" not in obj:
        keys = sorted(obj)[:10] if isinstance(obj, dict) else type(obj).__name__
        raise DatasetError(f"{path}: not a COCO captions file: expected keys 'images' and 'annotations', found "
                           f"{keys}{_hint(path, 'coco')}")
    id_to_file: dict[Any, str] = {}
    for i, im in enumerate(obj["images"]):
        if not isinstance(im, dict) or "id" not in im or not isinstance(im.get("file_name"), str):
            raise DatasetError(f"{path}: images[{i}] has no 'id' and 'file_name': {_brief(im)}")
        id_to_file[im["id"]] = im["file_name"]
    caps: dict[Any, list[str]] = {}
    for i, ann in enumerate(obj["annotations"]):
        if not isinstance(ann, dict) or "image_id" not in ann or "caption" not in ann:
            what = " — this looks like an object-detection 'instances' file" if isinstance(ann, dict) and (
                "bbox" in ann or "category_id" in ann) else ""
            raise DatasetError(f"{path}: annotations[{i}] has no 'image_id' and 'caption': {_brief(ann)}{what}")
        if ann["image_id"] not in id_to_file:
            raise DatasetError(f"{path}: annotations[{i}] refers to image_id {ann['image_id']!r}, which is not "
                               "listed in 'images'")
        if not isinstance(ann["caption"], str):
            raise DatasetError(f"{path}: annotations[{i}] caption is not a string: {_brief(ann['caption'])}")
        caps.setdefault(ann["image_id"], []).append(ann["caption"])
    notes = []
    uncaptioned = len(id_to_file) - len(caps)
    if uncaptioned:
        notes.append(f"{uncaptioned} images listed without any caption annotation (not used)")
    entries = _group((id_to_file[i], c) for i in id_to_file for c in caps.get(i, ()))
    stem = path.stem
    split_name = stem.removeprefix("captions_")
    guesses = [path.parent.parent / split_name, path.parent / split_name, path.parent / "images" / split_name]
    if images is not None:
        guesses = [images / split_name] + guesses  # COCO root given instead of its val2017/ folder
    return f"coco:{split_name}", entries, _bases(path, images, guesses), notes


def _parse_token(path: Path, text: str) -> list[tuple[str, str]]:
    """Flickr ``IMAGE#N<TAB>caption`` lines."""
    pairs = []
    for n, line in enumerate(_lines(text), 1):
        if not line.strip():
            continue
        key, tab, caption = line.partition("\t")
        if not tab or not key.strip():
            raise DatasetError(f"{path}:{n}: expected 'IMAGE#N<TAB>caption', got {_brief(line)}"
                               f"{_hint(path, 'flickr8k') if n == 1 else ''}")
        pairs.append((re.sub(r"#\d+$", "", key.strip()), caption))
    return pairs


def _flickr8k_guesses(path: Path) -> list[Path]:
    names = ("Flicker8k_Dataset", "Flickr8k_Dataset", "Flickr8k_Dataset/Flicker8k_Dataset", "Images", "images")
    return [d / n for d in (path.parent, path.parent.parent) for n in names]


def _parse_flickr8k(path: Path, images: Path | None, split: str | None) -> tuple[str, Entries, _Resolver, list[str]]:
    pairs = _parse_token(path, _read_text(path))
    name = "flickr8k"
    if split is not None:
        wanted: set[str] = set()
        for s in _split_names(split):
            part = {"val": "dev"}.get(s, s)
            if part not in ("train", "dev", "test"):
                raise DatasetError(f"flickr8k split {s!r}: expected train, dev (or val) or test")
            lst = path.parent / f"Flickr_8k.{part}Images.txt"
            if not lst.is_file():
                raise DatasetError(f"flickr8k split {s!r} needs {lst} (from Flickr8k_text.zip), which is not there; "
                                   "or use the Karpathy split file dataset_flickr8k.json (fmt='karpathy')")
            wanted |= {ln.strip() for ln in _lines(_read_text(lst)) if ln.strip()}
        pairs = [(rel, c) for rel, c in pairs if rel in wanted]
        name += f":{split}"
    return name, _group(pairs), _bases(path, images, _flickr8k_guesses(path)), []


_QUIRK = re.compile(r"^\s*(\d+)\s+(\S.*)$")  # "img.jpg| 4 A dog runs ..." (one known row of results.csv)


def _parse_flickr30k(path: Path, images: Path | None, split: str | None) -> tuple[str, Entries, _Resolver, list[str]]:
    _no_split("flickr30k", split, "Flickr30k has no official split file")
    text = _read_text(path)
    lines = _lines(text)
    first_n = next((i for i, ln in enumerate(lines) if ln.strip()), None)
    if first_n is None:
        raise DatasetError(f"{path}: empty file")
    header = [h.strip().lower() for h in lines[first_n].split("|")]
    notes, quirks = [], []
    if _TOKEN_LINE.match(lines[first_n]):
        pairs = _parse_token(path, text)
    elif header[:1] == ["image_name"] and len(header) == 3:
        pairs = []
        for n, line in enumerate(lines[first_n + 1:], first_n + 2):
            if not line.strip():
                continue
            parts = line.split("|", 2)
            if len(parts) == 2 and _QUIRK.match(parts[1]):
                parts = [parts[0], *_QUIRK.match(parts[1]).groups()]
                quirks.append(n)
            if len(parts) != 3 or not parts[0].strip():
                raise DatasetError(f"{path}:{n}: expected 'image_name| comment_number| comment', got {_brief(line)}")
            pairs.append((parts[0].strip(), parts[2]))
    else:
        raise DatasetError(f"{path}: expected the Flickr30k header 'image_name| comment_number| comment' or "
                           f"'IMAGE#N<TAB>caption' lines, got {_brief(lines[first_n])}{_hint(path, 'flickr30k')}")
    if quirks:
        notes.append(f"{len(quirks)} rows without '|' after the comment number, read as number + comment "
                     f"({path.name}:{', '.join(map(str, quirks[:_EXAMPLES]))})")
    guesses = [path.parent / "flickr30k_images", path.parent / "flickr30k-images", path.parent / "Images",
               path.parent.parent / "flickr30k-images", path.parent.parent / "flickr30k_images"]
    return "flickr30k", _group(pairs), _bases(path, images, guesses), notes


def _parse_karpathy(path: Path, images: Path | None, split: str | None) -> tuple[str, Entries, _Resolver, list[str]]:
    obj = _load_json(path)
    if not isinstance(obj, dict) or not isinstance(obj.get("images"), list):
        keys = sorted(obj)[:10] if isinstance(obj, dict) else type(obj).__name__
        raise DatasetError(f"{path}: not a Karpathy split file: expected a list under 'images', found "
                           f"{keys}{_hint(path, 'karpathy')}")
    dataset = str(obj.get("dataset") or path.stem.removeprefix("dataset_"))
    records = []
    counts: dict[str, int] = {}
    for i, im in enumerate(obj["images"]):
        if not isinstance(im, dict) or not isinstance(im.get("filename"), str) or not isinstance(
                im.get("sentences"), list):
            raise DatasetError(f"{path}: images[{i}] has no 'filename' and 'sentences' list: {_brief(im)}"
                               f"{_hint(path, 'karpathy') if i == 0 else ''}")
        sp = str(im.get("split", ""))
        counts[sp] = counts.get(sp, 0) + 1
        rel = f"{im['filepath']}/{im['filename']}" if im.get("filepath") else im["filename"]
        caps = []
        for j, s in enumerate(im["sentences"]):
            if isinstance(s, dict) and isinstance(s.get("raw"), str):
                caps.append(s["raw"])
            elif isinstance(s, dict) and isinstance(s.get("tokens"), list):
                caps.append(" ".join(map(str, s["tokens"])))
            else:
                raise DatasetError(f"{path}: images[{i}].sentences[{j}] has no 'raw' text or 'tokens': {_brief(s)}")
        records.append((sp, rel, caps))
    name = f"karpathy-{dataset}"
    if split is not None:
        wanted = set(_split_names(split))
        unknown = wanted - set(counts)
        if unknown:
            have = ", ".join(f"{k} ({v} images)" for k, v in sorted(counts.items()))
            raise DatasetError(f"{path}: no images with split {', '.join(sorted(unknown))}; the file has: {have}")
        records = [r for r in records if r[0] in wanted]
        name += f":{split}"
    pairs = [(rel, c) for _, rel, caps in records for c in caps]
    # COCO entries carry a filepath (val2014/...) relative to the COCO root: also look one level above IMAGES, for
    # when IMAGES is the val2014/ folder itself
    guesses = [*([images.parent] if images is not None else []), path.parent, path.parent.parent,
               *_flickr8k_guesses(path), path.parent / "flickr30k-images", path.parent / "flickr30k_images",
               path.parent / "coco", path.parent.parent / "coco"]
    return name, _group(pairs), _bases(path, images, guesses), []


def _find_column(header: list[str], wanted: str) -> int | None:
    for i, h in enumerate(header):
        if h == wanted:
            return i
    low = wanted.strip().lower()
    for i, h in enumerate(header):
        if h.strip().lower() == low:
            return i
    return None


def _parse_table(path: Path, images: Path | None, split: str | None, fmt: str, image_column: str,
                 caption_column: str) -> tuple[str, Entries, _Resolver, list[str]]:
    text = _read_text(path)
    if not text.strip():
        raise DatasetError(f"{path}: empty file")
    delimiters = ["\t"] if fmt == "tsv" else [",", ";", "\t", "|"]
    header: list[str] = []
    for delim in delimiters:
        quoting = csv.QUOTE_NONE if delim == "\t" else csv.QUOTE_MINIMAL
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delim, quoting=quoting, strict=True)
        try:
            header = [h.strip() for h in next(reader)]
        except csv.Error as e:
            raise DatasetError(f"{path}:{reader.line_num}: {e}") from None
        ic, cc = _find_column(header, image_column), _find_column(header, caption_column)
        if ic is not None and cc is not None:
            break
    else:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiters[0])
        header = [h.strip() for h in next(reader)]
        absent = [c for c in (image_column, caption_column) if _find_column(header, c) is None]
        raise DatasetError(
            f"{path}: no column named {' or '.join(map(repr, absent))}; the columns are {header} "
            f"(set image_column / caption_column, or --image-column / --caption-column){_hint(path, fmt)}")
    sc = None
    if split is not None:
        sc = _find_column(header, "split")
        if sc is None:
            raise DatasetError(f"{path}: split {split!r} asked for, but there is no 'split' column (columns: {header})")
    wanted = set(_split_names(split)) if split is not None else None
    pairs = []
    try:
        for row in reader:
            n = reader.line_num
            if not any(f.strip() for f in row):
                continue
            if len(row) != len(header):
                hint = " (a caption containing the delimiter must be quoted)" if len(row) > len(header) else ""
                raise DatasetError(f"{path}:{n}: {len(row)} fields, but the header has {len(header)} "
                                   f"({', '.join(header)}){hint}: {_brief(row)}")
            if not row[ic].strip():
                raise DatasetError(f"{path}:{n}: empty {header[ic]!r} (image path)")
            if wanted is not None and row[sc].strip() not in wanted:
                continue
            pairs.append((row[ic], row[cc]))
    except csv.Error as e:
        raise DatasetError(f"{path}:{reader.line_num}: {e}") from None
    name = f"{fmt}:{path.stem}" + (f":{split}" if split is not None else "")
    return name, _group(pairs), _bases(path, images), []


def _parse_jsonl(path: Path, images: Path | None, split: str | None, image_column: str,
                 caption_column: str) -> tuple[str, Entries, _Resolver, list[str]]:
    text = _read_text(path)
    if text.lstrip().startswith("["):  # a JSON array of the same records
        obj = _load_json(path)
        records = [(f"{path}: [{i}]", r) for i, r in enumerate(obj)]
    else:
        records = []
        for n, line in enumerate(_lines(text), 1):
            if not line.strip():
                continue
            try:
                records.append((f"{path}:{n}:", json.loads(line)))
            except json.JSONDecodeError as e:
                raise DatasetError(f"{path}:{n}: invalid JSON ({e.msg}, column {e.colno}){_hint(path, 'jsonl')}") \
                    from None
    plural = [caption_column + "s"] if not caption_column.endswith("s") else []
    pairs = []
    for where, rec in records:
        if not isinstance(rec, dict):
            raise DatasetError(f"{where} expected an object {{\"{image_column}\": ..., \"{caption_column}\": ...}}, "
                               f"got {_brief(rec)}")
        if not isinstance(rec.get(image_column), str) or not rec[image_column].strip():
            raise DatasetError(f"{where} no {image_column!r} path (keys: {sorted(rec)}); set image_column")
        if split is not None:
            if "split" not in rec:
                raise DatasetError(f"{where} split {split!r} asked for, but the record has no 'split' key")
            if str(rec["split"]) not in _split_names(split):
                continue
        key = next((k for k in (caption_column, *plural) if k in rec), None)
        if key is None:
            raise DatasetError(f"{where} no {' or '.join(map(repr, [caption_column, *plural]))} "
                               f"(keys: {sorted(rec)}); set caption_column")
        value = rec[key]
        caps = [value] if isinstance(value, str) else value
        if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
            raise DatasetError(f"{where} {key!r} must be a string or a list of strings, got {_brief(value)}")
        pairs += [(rec[image_column], c) for c in caps]
    name = f"jsonl:{path.stem}" + (f":{split}" if split is not None else "")
    return name, _group(pairs), _bases(path, images), []


def _parse_sidecar(root: Path, images: Path | None, split: str | None) -> tuple[str, Entries, _Resolver, list[str]]:
    _no_split("sidecar", split, "a folder of images")
    if images is not None and images != root:
        raise DatasetError(f"sidecar format: the captions sit next to the images in {root}; do not pass another "
                           f"images folder ({images})")
    if not root.is_dir():
        raise DatasetError(f"{root}: sidecar format needs a folder of images with .txt captions next to them")
    files = sorted(p for p in root.rglob("*") if p.is_file()
                   and not any(is_skipped_name(part) for part in p.relative_to(root).parts))
    txts = {p.with_suffix(""): p for p in files if p.suffix.lower() == ".txt"}
    pairs, uncaptioned, used = [], 0, set()
    for p in files:
        if not is_image_name(p.name):
            continue
        txt = txts.get(p.with_suffix(""))
        if txt is None:
            uncaptioned += 1
            continue
        used.add(txt)
        rel = p.relative_to(root).as_posix()
        caps = [ln for ln in _lines(_read_text(txt)) if ln.strip()] or [""]
        pairs += [(rel, c) for c in caps]
    notes = []
    if uncaptioned:
        notes.append(f"{uncaptioned} images without a .txt caption next to them (not used)")
    orphans = len(txts) - len(used)
    if orphans:
        notes.append(f"{orphans} .txt files without an image of the same name (ignored)")
    return f"sidecar:{root.name}", _group(pairs), _bases(root, None), notes


# --- loading ------------------------------------------------------------------------------------------------------


def _decodes(path: Path) -> str | None:
    """None if ``path`` decodes (JPEGs at reduced scale), else the reason."""
    try:
        open_image(path, min_side=64)
        return None
    except ImageDecodeError as e:
        return str(e)
    except Exception as e:  # noqa: BLE001 - any decoder failure makes the file unusable
        return f"{path}: {type(e).__name__}: {e}"


def _verify(paths: Sequence[Path]) -> list[str | None]:
    if not paths:
        return []
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        return list(pool.map(_decodes, paths))


def _first(paths: Sequence[Path]) -> str:
    more = f", ... ({len(paths) - _EXAMPLES} more)" if len(paths) > _EXAMPLES else ""
    return ", ".join(str(p) for p in paths[:_EXAMPLES]) + more


def load_caption_data(
    fmt: str,
    annotations: Path | str | None,
    images: Path | str | None = None,
    *,
    split: str | None = None,
    image_column: str = "image",
    caption_column: str = "caption",
    max_missing_fraction: float = 0.01,
    verify_images: bool = False,
    limit: int | None = None,
) -> CaptionData:
    """Load a captioned-image dataset (see the module docstring for the formats) and check it.

    Only images that exist (and decode, with ``verify_images``) are kept. When more than ``max_missing_fraction``
    of the images named by the annotations are missing or unreadable, a :class:`DatasetError` says how many, which
    (the first few) and where they were looked for; a smaller share is logged as a warning. ``limit`` keeps the
    first ``limit`` captioned images in annotation order (before existence checks). ``annotations`` may be None
    only for ``tuxpaint`` (the Debian package is fetched).
    """
    if fmt != "auto" and fmt not in FORMATS:
        raise DatasetError(f"unknown dataset format {fmt!r}; expected 'auto' or one of {', '.join(FORMATS)}")
    if not 0.0 <= max_missing_fraction <= 1.0:
        raise ValueError(f"max_missing_fraction must be in [0, 1], got {max_missing_fraction}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    if annotations is None:
        if fmt != "tuxpaint":
            raise DatasetError(f"format {fmt!r} needs an annotation file or folder")
        return _load_tuxpaint(None, split, limit)
    ann = Path(annotations).expanduser()
    img = Path(images).expanduser() if images is not None else None
    if fmt == "auto":
        fmt = detect_format(ann)
        logger.info("%s: detected format %r", ann, fmt)
    if fmt == "tuxpaint":
        return _load_tuxpaint(ann, split, limit)
    if fmt == "coco":
        name, entries, resolver, notes = _parse_coco(ann, img, split)
    elif fmt == "flickr8k":
        name, entries, resolver, notes = _parse_flickr8k(ann, img, split)
    elif fmt == "flickr30k":
        name, entries, resolver, notes = _parse_flickr30k(ann, img, split)
    elif fmt == "karpathy":
        name, entries, resolver, notes = _parse_karpathy(ann, img, split)
    elif fmt in ("csv", "tsv"):
        name, entries, resolver, notes = _parse_table(ann, img, split, fmt, image_column, caption_column)
    elif fmt == "jsonl":
        name, entries, resolver, notes = _parse_jsonl(ann, img, split, image_column, caption_column)
    else:
        name, entries, resolver, notes = _parse_sidecar(ann, img, split)
    return _assemble(name, ann, entries, resolver, notes, max_missing_fraction, verify_images, limit)


def _assemble(name: str, ann: Path, entries: Entries, resolver: _Resolver, notes: list[str],
              max_missing_fraction: float, verify_images: bool, limit: int | None) -> CaptionData:
    cleaned: list[tuple[str, tuple[str, ...]]] = []
    empty = dup = no_caption = 0
    for rel, raw in entries:
        caps: dict[str, None] = {}
        for c in raw:
            c = _clean(c)
            if not c:
                empty += 1
            elif c in caps:
                dup += 1
            else:
                caps[c] = None
        if caps:
            cleaned.append((rel, tuple(caps)))
        else:
            no_caption += 1
    if empty:
        notes.append(f"{empty} empty captions dropped")
    if dup:
        notes.append(f"{dup} duplicate captions of the same image dropped")
    if no_caption:
        notes.append(f"{no_caption} images with only empty captions (not used)")
    if limit is not None and limit < len(cleaned):
        notes.append(f"limited to the first {limit} of {len(cleaned)} captioned images")
        cleaned = cleaned[:limit]
    if not cleaned:
        raise DatasetError(f"{ann}: no captioned images in this dataset"
                           + (f" ({'; '.join(notes)})" if notes else ""))
    items, missing = [], []
    for rel, caps in cleaned:
        path, ok = resolver.resolve(rel)
        if ok:
            items.append(CaptionedPhoto(path, caps))
        else:
            missing.append(path)
    unreadable: list[Path] = []
    if verify_images:
        reasons = _verify([it.image for it in items])
        bad = [(it, r) for it, r in zip(items, reasons) if r is not None]
        for _, reason in bad[:_EXAMPLES]:
            logger.warning("%s: unreadable image: %s", name, reason)
        unreadable = [it.image for it, _ in bad]
        bad_set = set(unreadable)
        items = [it for it in items if it.image not in bad_set]
    total = len(cleaned)
    lost = len(missing) + len(unreadable)
    if lost / total > max_missing_fraction:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (first: {_first(missing)}; looked in {resolver.describe()})")
        if unreadable:
            parts.append(f"{len(unreadable)} unreadable (first: {_first(unreadable)})")
        raise DatasetError(
            f"{ann}: {lost} of {total} images named by the annotations ({100 * lost / total:.1f}%) cannot be used, "
            f"more than the {100 * max_missing_fraction:g}% allowed: {'; '.join(parts)}. Pass the folder that "
            "holds the images (images= / IMAGES), or allow more with max_missing_fraction / --max-missing-fraction")
    data = CaptionData(name, items, missing, unreadable, notes)
    if missing:
        logger.warning("%s: %d of %d images missing, skipped (first: %s; looked in %s)", name, len(missing), total,
                       _first(missing), resolver.describe())
    if unreadable:
        logger.warning("%s: %d of %d images unreadable, skipped (first: %s)", name, len(unreadable), total,
                       _first(unreadable))
    for note in notes:
        logger.info("%s: %s", name, note)
    logger.info("%s", data.summary())
    return data


def _load_tuxpaint(root: Path | None, split: str | None, limit: int | None) -> CaptionData:
    from training.data.tuxpaint import load_tuxpaint

    _no_split("tuxpaint", split, "use CaptionData.split(0.3) for the held-out stamps")
    try:
        stamps = load_tuxpaint(root)
    except FileNotFoundError as e:
        raise DatasetError(str(e)) from None
    if not stamps:
        raise DatasetError(f"{root}: no captioned Tux Paint stamps found")
    items = [CaptionedPhoto(s.path, s.captions) for s in stamps]
    notes = []
    if limit is not None and limit < len(items):
        notes.append(f"limited to the first {limit} of {len(items)} stamps")
        items = items[:limit]
    data = CaptionData("tuxpaint", items, [], [], notes)
    logger.info("%s", data.summary())
    return data


# --- training and evaluation views --------------------------------------------------------------------------------


class TrainPairs(Dataset):
    """Training view of a :class:`CaptionData`: item ``i`` is (transform(image i), one of its captions).

    The caption is a deterministic function of (seed, epoch, i): for an image with ``n`` captions, each run of
    ``n`` consecutive epochs (0..n-1, n..2n-1, ...) uses each caption exactly once, in an order drawn from
    (seed, i, epoch // n). Call :meth:`set_epoch` before each epoch (with DataLoader workers, either do not use
    ``persistent_workers`` or recreate the loader, so workers see the new epoch).

    An image that cannot be decoded at training time is logged once and replaced by the next readable item
    (index i+1, i+2, ... wrapping around), so an epoch never crashes on one corrupt file.
    """

    def __init__(self, data: CaptionData, transform: Callable[[Image.Image], Any], seed: int = 0):
        if not data.items:
            raise DatasetError(f"{data.name}: no images to train on")
        self.data = data
        self.items = data.items
        self.transform = transform
        self.seed = int(seed)
        self.epoch = 0
        self.bad: set[int] = set()  # indices found unreadable (in this process)

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)

    def caption_index(self, i: int, epoch: int | None = None) -> int:
        """Which caption of image ``i`` is used in ``epoch`` (default: the current one)."""
        epoch = self.epoch if epoch is None else epoch
        n = len(self.items[i].captions)
        if n == 1:
            return 0
        cycle, pos = divmod(epoch, n)
        rng = np.random.default_rng([self.seed & 0xFFFFFFFF, i, cycle])
        return int(rng.permutation(n)[pos])

    def __getitem__(self, i: int) -> tuple[Any, str]:
        n = len(self.items)
        i = int(i)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {i} out of range for {n} items")
        for step in range(n):
            j = (i + step) % n
            if j in self.bad:
                continue
            item = self.items[j]
            try:
                im = open_image(item.image)
            except (ImageDecodeError, OSError) as e:
                self.bad.add(j)
                logger.warning("%s: skipping unreadable training image (substituting the next one; logged once): %s",
                               self.data.name, e)
                continue
            return self.transform(im), item.captions[self.caption_index(j)]
        raise DatasetError(f"{self.data.name}: none of the {n} images can be decoded")


def eval_lists(data: CaptionData) -> tuple[list[Path], list[str], np.ndarray]:
    """(images, captions, caption_to_image): every caption of every image, flattened in item order, and for each
    caption the index of its image — the input of :func:`training.evaluate.caption_recall`, where every caption
    is a text→image query and an image→text query hits when any of the image's captions ranks in the top k."""
    images = [it.image for it in data.items]
    captions = [c for it in data.items for c in it.captions]
    caption_to_image = np.repeat(np.arange(len(images), dtype=np.int64), [len(it.captions) for it in data.items])
    return images, captions, caption_to_image


# --- class folders (zero-shot classification) ---------------------------------------------------------------------

_WNID = re.compile(r"^n\d{8}[-_ ]+")  # ImageNet / Stanford Dogs: n02099601-golden_retriever
_NUMBERED = re.compile(r"^\d+\.(?=\D)")  # CUB-200: 001.Black_footed_Albatross


def readable_class_name(folder: str) -> str:
    """'golden_retriever' → 'golden retriever'; WordNet ids ('n02099601-') and 'NNN.' prefixes removed."""
    name = _NUMBERED.sub("", _WNID.sub("", folder))
    name = " ".join(name.replace("_", " ").split())
    return name or folder


@dataclass
class ClassFolder:
    """Images sorted into one folder per class: ``items`` are (path, class index), ``classes`` readable names."""

    classes: list[str]
    items: list[tuple[Path, int]]
    folders: list[str] = field(default_factory=list)  # the folder name of each class
    unreadable: list[Path] = field(default_factory=list)

    @property
    def paths(self) -> list[Path]:
        return [p for p, _ in self.items]

    @property
    def labels(self) -> np.ndarray:
        return np.array([c for _, c in self.items], dtype=np.int64)

    def summary(self) -> str:
        return (f"{len(self.classes)} classes, {len(self.items)} images, {len(self.unreadable)} unreadable")


def load_class_folder(root: Path | str, *, verify_images: bool = False) -> ClassFolder:
    """``root/<class>/**/<images>``: one class per sub-folder (sorted by name); images in nested folders count for
    their top-level class. Empty class folders are kept (as distractor classes) with a warning."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"class folder not found: {root}")
    folders = sorted(d.name for d in root.iterdir() if d.is_dir() and not is_skipped_name(d.name))
    if not folders:
        raise DatasetError(f"{root}: no class sub-folders (expected {root}/<class name>/<images>)")
    classes = [readable_class_name(f) for f in folders]
    seen: dict[str, str] = {}
    for f, c in zip(folders, classes):
        if c in seen:
            raise DatasetError(f"{root}: folders {seen[c]!r} and {f!r} both read as class {c!r}")
        seen[c] = f
    items: list[tuple[Path, int]] = []
    for label, f in enumerate(folders):
        found = sorted(p for p in (root / f).rglob("*") if p.is_file() and is_image_name(p.name)
                       and not any(is_skipped_name(part) for part in p.relative_to(root).parts))
        if not found:
            logger.warning("%s: class folder %r has no images", root, f)
        items += [(p, label) for p in found]
    loose = [p for p in root.iterdir() if p.is_file() and is_image_name(p.name)]
    if loose:
        logger.warning("%s: %d images directly in the root folder belong to no class (ignored)", root, len(loose))
    if not items:
        raise DatasetError(f"{root}: no images in any of the {len(folders)} class folders")
    unreadable: list[Path] = []
    if verify_images:
        reasons = _verify([p for p, _ in items])
        unreadable = [p for (p, _), r in zip(items, reasons) if r is not None]
        if unreadable:
            logger.warning("%s: %d unreadable images skipped (first: %s)", root, len(unreadable), _first(unreadable))
        bad = set(unreadable)
        items = [it for it in items if it[0] not in bad]
    return ClassFolder(classes, items, folders, unreadable)


# --- command line -------------------------------------------------------------------------------------------------


def main_check(argv: Sequence[str] | None = None) -> int:
    """``data check FMT ANNOTATIONS [IMAGES]``: load a dataset, print its summary, what is missing and examples.
    Exit status 0 when it loads, 1 when it does not (the reason on stderr)."""
    parser = argparse.ArgumentParser(
        prog="python -m training data check",
        description="Check a captioned-image dataset (or, with FMT 'classes', a class folder for zero-shot "
                    "evaluation): counts, missing and unreadable images, examples.")
    parser.add_argument("fmt", choices=("auto", *FORMATS, "classes"), metavar="FMT",
                        help=f"auto, classes or one of: {', '.join(FORMATS)}")
    parser.add_argument("annotations", type=Path, metavar="ANNOTATIONS",
                        help="annotation file (or folder: sidecar, tuxpaint, classes)")
    parser.add_argument("images", type=Path, nargs="?", metavar="IMAGES", help="folder the image paths are under")
    parser.add_argument("--split", help="e.g. test, or train+restval (karpathy, flickr8k, csv/jsonl 'split' column)")
    parser.add_argument("--image-column", default="image")
    parser.add_argument("--caption-column", default="caption")
    parser.add_argument("--max-missing-fraction", type=float, default=0.01)
    parser.add_argument("--verify", action="store_true", help="decode every image (slower)")
    parser.add_argument("--limit", type=int, help="check only the first N images")
    parser.add_argument("--examples", type=int, default=3, help="how many example images to print")
    args = parser.parse_args(argv)
    try:
        if args.fmt == "classes":
            cf = load_class_folder(args.annotations, verify_images=args.verify)
            print(f"{args.annotations}: {cf.summary()}")
            counts = np.bincount(cf.labels, minlength=len(cf.classes))
            for name, folder, n in zip(cf.classes, cf.folders, counts):
                print(f"  {name!r} ({folder}/): {n} images")
            for p in cf.unreadable[:10]:
                print(f"  unreadable: {p}")
            return 0
        data = load_caption_data(
            args.fmt, args.annotations, args.images, split=args.split, image_column=args.image_column,
            caption_column=args.caption_column, max_missing_fraction=args.max_missing_fraction,
            verify_images=args.verify, limit=args.limit)
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(data.summary())
    for note in data.notes:
        print(f"  note: {note}")
    for label, paths in (("missing", data.missing), ("unreadable", data.unreadable)):
        for p in paths[:10]:
            print(f"  {label}: {p}")
        if len(paths) > 10:
            print(f"  ... and {len(paths) - 10} more {label}")
    for it in data.items[: max(0, args.examples)]:
        print(f"  {it.image}")
        for c in it.captions:
            print(f"    - {c}")
    return 0
