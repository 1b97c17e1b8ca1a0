"""Query language, in the style of rclip: terms joined by ``+`` and ``-``, weights as ``2:sunset``, photo terms.

    beach                      text
    "beach" + ./dog.jpg        text plus a photo
    2:sunset + sea - people    weighted text, a negative term
    ./photo.jpg                photo query (find similar)
    beach tag:dog -tag:screenshot   only photos auto-tagged "dog", none tagged "screenshot"
    tag:receipt                only a tag: its photos, most confident first

A term is a photo when it names an existing image file (or is given as bytes by the GUI). Quotes around a
term are removed. ``+``/``-`` only separate terms when surrounded by spaces, so "t-shirt" stays one word.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from photosearch.library.scan import is_image_name

_SPLIT = re.compile(r"\s+([+-])\s+")
_WEIGHT = re.compile(r"^(-?\d+(?:\.\d+)?):(.+)$")
_TAG = re.compile(r"(?:(?<=\s)|^)(-?)tag:(\"[^\"]+\"|'[^']+'|\S+)", re.IGNORECASE)


def split_tags(query: str) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """Take ``tag:NAME`` (and ``-tag:NAME``, ``tag:"two words"``) out of a query: (rest, wanted, excluded)."""
    wanted: list[str] = []
    excluded: list[str] = []

    def take(m: re.Match) -> str:
        name = m.group(2).strip("\"'").strip().lower()
        if name:
            (excluded if m.group(1) else wanted).append(name)
        return " "

    rest = _TAG.sub(take, query)
    return " ".join(rest.split()), tuple(wanted), tuple(excluded)


@dataclass(frozen=True)
class Term:
    kind: str  # "text" | "image"
    value: str | bytes  # text, an image path, or image bytes
    weight: float = 1.0

    def label(self) -> str:
        v = f"<{len(self.value)} bytes>" if isinstance(self.value, bytes) else str(self.value)
        return v if self.weight == 1 else f"{self.weight:g}:{v}"


class QueryError(ValueError):
    """A query that cannot be understood (empty, or a photo term that cannot be used)."""


def _term(raw: str, sign: float) -> Term:
    raw = raw.strip()
    weight = 1.0
    m = _WEIGHT.match(raw)
    if m and not os.path.exists(raw):
        weight, raw = float(m.group(1)), m.group(2).strip()
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
        raw = raw[1:-1]
    if not raw:
        raise QueryError("empty term in query")
    path = Path(raw).expanduser()
    if is_image_name(path.name) and path.is_file():
        return Term("image", str(path.absolute()), sign * weight)
    if is_image_name(path.name) and (raw.startswith((".", "/", "~")) or os.sep in raw):
        raise QueryError(f"{raw} looks like a photo but there is no such file")
    return Term("text", raw, sign * weight)


def parse_query(query: str) -> list[Term]:
    """Parse a query string into weighted terms (negative weight = subtract)."""
    query = query.strip()
    if not query:
        raise QueryError("the query is empty")
    parts = _SPLIT.split(" " + query + " ")
    terms = []
    sign = 1.0
    first = parts[0].strip()
    if first:
        terms.append(_term(first, sign))
    for i in range(1, len(parts), 2):
        sign = 1.0 if parts[i] == "+" else -1.0
        if parts[i + 1].strip():
            terms.append(_term(parts[i + 1], sign))
    if not terms:
        raise QueryError("the query is empty")
    if all(t.weight <= 0 for t in terms):
        raise QueryError("a query needs at least one positive term")
    return terms
