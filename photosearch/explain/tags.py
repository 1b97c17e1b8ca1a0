"""Auto-tags: zero-shot classification of every photo into the user's tags, from stored vectors only.

A tag is a name ("beach") and the prompts that describe it (by default a few templates around the name). A
photo's raw score is the cosine between its vector and the tag's prompt vector. Raw cosines are not comparable
across tags or photos (some photos are close to every text), so the score is **calibrated against the
vocabulary**: how many standard deviations the tag stands above the photo's similarity to the ~1200 unrelated
phrases of the describe vocabulary,

    z = (v·t − v·μ) / sqrt(vᵀ C v)        μ, C: mean and covariance of the vocabulary's phrase vectors

which costs two small matrix products per photo (no re-encoding, no per-phrase scores). A photo gets the tag
when z ≥ the tag's threshold (:data:`DEFAULT_THRESHOLD`, chosen on held-out Tux Paint categories — see
bench/RESULTS.md; each tag can be made stricter or looser).
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field

import numpy as np

from photosearch.model.base import EncoderBase
from photosearch.search.query import QueryError

log = logging.getLogger(__name__)

TEMPLATES = ("a photo of a {}", "a photo of {}", "{}")
DEFAULT_THRESHOLD = 2.5  # on train-split Tux Paint categories: P 0.82 R 0.48 (held-out: P 0.79 R 0.48)
SENSITIVITY = {"strict": 3.0, "normal": DEFAULT_THRESHOLD, "loose": 2.0}
_NAME = re.compile(r"^[\w][\w .&'-]{0,39}$", re.UNICODE)


class TagError(QueryError):
    """A tag that cannot be defined (bad name, unknown tag)."""


@dataclass
class Tag:
    name: str
    prompts: tuple[str, ...] = ()  # empty: the templates around the name
    threshold: float = DEFAULT_THRESHOLD

    def texts(self) -> list[str]:
        return list(self.prompts) if self.prompts else [t.format(self.name) for t in TEMPLATES]


def check_name(name: str) -> str:
    name = " ".join(name.strip().split())
    if not _NAME.match(name) or ":" in name:
        raise TagError(f"{name!r} is not a usable tag name: 1–40 letters, digits, spaces, '.', '&', ''' or '-'")
    return name.lower()


@dataclass
class TagScorer:
    """Calibrated tag scores for photo vectors of one model."""

    mu: np.ndarray  # (D,)
    cov: np.ndarray  # (D, D)
    tag_vectors: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (D,) L2-normalised

    @classmethod
    def for_model(cls, model: EncoderBase, tags: list[Tag]) -> TagScorer:
        from photosearch.explain.describe import Vocabulary

        mu, cov = Vocabulary.for_model(model).background()
        scorer = cls(mu.astype(np.float32), cov.astype(np.float32))
        for t in tags:
            v = model.encode_texts(t.texts()).mean(0)
            scorer.tag_vectors[t.name] = (v / np.linalg.norm(v)).astype(np.float32)
        return scorer

    def scores(self, vectors: np.ndarray, names: list[str] | None = None, chunk: int = 20000) -> np.ndarray:
        """(N, T) calibrated z-scores of N photo vectors for the tags ``names`` (all, in insertion order)."""
        names = list(self.tag_vectors) if names is None else names
        tv = np.stack([self.tag_vectors[n] for n in names], 1) if names else np.zeros((len(self.mu), 0), np.float32)
        out = np.empty((len(vectors), len(names)), np.float32)
        for i in range(0, len(vectors), chunk):
            v = np.asarray(vectors[i : i + chunk], np.float32)
            base = v @ self.mu  # (n,)
            sd = np.sqrt(np.maximum(np.einsum("nd,nd->n", v @ self.cov, v), 1e-12))  # (n,)
            out[i : i + chunk] = (v @ tv - base[:, None]) / sd[:, None]
        return out


# -- persistence in the library ----------------------------------------------------------------------------
def list_tags(store) -> list[Tag]:
    rows = store.query("SELECT name, prompts, threshold FROM tags ORDER BY name")
    return [Tag(n, tuple(json.loads(p)), float(th)) for n, p, th in rows]


def get_tag(store, name: str) -> Tag:
    for t in list_tags(store):
        if t.name == name.lower():
            return t
    raise TagError(f"there is no tag {name!r}; tags: {', '.join(t.name for t in list_tags(store)) or 'none yet'}")


def save_tag(store, tag: Tag) -> Tag:
    """Add or change a tag; the next :func:`apply_tags` scores every photo again (cheap: stored vectors)."""
    tag = Tag(check_name(tag.name), tuple(p.strip() for p in tag.prompts if p.strip()), float(tag.threshold))
    with store.transaction() as db:
        db.execute("INSERT INTO tags(name, prompts, threshold) VALUES(?,?,?) ON CONFLICT(name) DO UPDATE SET "
                   "prompts=excluded.prompts, threshold=excluded.threshold",
                   (tag.name, json.dumps(list(tag.prompts)), tag.threshold))
        db.execute("DELETE FROM photo_tags WHERE tag=?", (tag.name,))
        db.execute("DELETE FROM tag_scored")
        _bump_version(db)
    return tag


def _bump_version(db) -> None:
    """Tags changed: a tagging run that read the old tags must not mark photos as scored."""
    db.execute("INSERT INTO settings(key, value) VALUES('tags_version', '1') "
               "ON CONFLICT(key) DO UPDATE SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT)")


def _version(db) -> str:
    """The tag set's version, read inside the caller's transaction."""
    row = db.execute("SELECT value FROM settings WHERE key='tags_version'").fetchone()
    return row[0] if row else "0"


def remove_tag(store, name: str) -> None:
    get_tag(store, name)
    with store.transaction() as db:
        db.execute("DELETE FROM tags WHERE name=?", (name.lower(),))  # its photo_tags rows cascade


@dataclass
class TagReport:
    photos: int  # photos scored in this run
    assigned: dict[str, int]  # tag -> photos that have it now (all, not just this run)
    seconds: float


def apply_tags(library, scorer: TagScorer | None = None) -> TagReport:
    """Score the photos of the library's current model that were not scored against the current tags yet, and
    store which tags they pass. Cheap enough to run after every indexing pass (only new photos are read)."""
    t0 = time.perf_counter()
    store = library.store
    n = 0
    for _attempt in range(3):  # the tags may change while a run scores: then score again with the new ones
        version = store.get_setting("tags_version", "0")
        tags = list_tags(store)
        if not tags:
            return TagReport(0, {}, time.perf_counter() - t0)
        model = library.model
        mid = model.model_id
        rows = store.query(
            "SELECT v.photo_id, v.embedding FROM vectors v LEFT JOIN tag_scored s "
            "ON s.model_id = v.model_id AND s.photo_id = v.photo_id "
            "WHERE v.model_id = ? AND s.photo_id IS NULL ORDER BY v.photo_id", (mid,))
        if not rows:
            break
        scorer = scorer if scorer is not None and _attempt == 0 else TagScorer.for_model(model, tags)
        ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
        vecs = np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(len(rows), -1)
        del rows
        names = [t.name for t in tags]
        z = scorer.scores(vecs, names)
        th = np.array([t.threshold for t in tags], np.float32)
        hit_rows, hit_cols = np.nonzero(z >= th[None, :])
        everything = len(ids) == store.counts(mid)["indexed"]  # a count, not every id again
        with store.transaction() as db:
            if _version(db) != version:
                continue  # tags changed meanwhile: nothing written, score again
            if everything:
                db.execute("DELETE FROM photo_tags WHERE model_id=?", (mid,))
            else:
                db.executemany("DELETE FROM photo_tags WHERE model_id=? AND photo_id=?", [(mid, int(i)) for i in ids])
            db.executemany("INSERT INTO photo_tags(photo_id, model_id, tag, score) VALUES(?,?,?,?)",
                           [(int(ids[r]), mid, names[c], float(z[r, c])) for r, c in zip(hit_rows, hit_cols)])
            db.executemany("INSERT OR IGNORE INTO tag_scored(model_id, photo_id) VALUES(?,?)",
                           [(mid, int(i)) for i in ids])
        n += len(ids)
        break
    counts = tag_counts(store, library.model.model_id)
    report = TagReport(n, {t.name: int(counts.get(t.name, 0)) for t in tags}, time.perf_counter() - t0)
    log.info("tagged %d photos in %.2fs: %s", report.photos, report.seconds, report.assigned)
    return report


def tag_counts(store, model_id: str) -> dict[str, int]:
    """How many photos carry each tag under a model (tags nobody has are absent)."""
    return {t: int(n) for t, n in store.query(
        "SELECT tag, COUNT(*) FROM photo_tags WHERE model_id=? GROUP BY tag", (model_id,))}


def tags_of(store, model_id: str, photo_id: int) -> list[tuple[str, float]]:
    return [(n, float(s)) for n, s in store.query(
        "SELECT tag, score FROM photo_tags WHERE model_id=? AND photo_id=? ORDER BY score DESC", (model_id, photo_id))]


def tagged_ids(store, model_id: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(photo ids, scores) of the photos carrying a tag, best first."""
    get_tag(store, name)
    rows = store.query("SELECT photo_id, score FROM photo_tags WHERE model_id=? AND tag=? ORDER BY score DESC",
                       (model_id, name.lower()))
    return (np.array([r[0] for r in rows], np.int64), np.array([r[1] for r in rows], np.float32))
