"""Turn queries into ranked results: text, photos, weighted combinations, filters, sort orders, duplicates."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np

from photosearch.library import Library
from photosearch.model.vectors import l2_normalize, visual_space
from photosearch.search.query import QueryError, Term, parse_query, split_tags

log = logging.getLogger(__name__)

PHOTO_CANDIDATES = 256  # shared-space neighbours re-ranked by visual similarity for a photo query
DUPLICATE_THRESHOLD = 0.92  # visual cosine from which two photos are near-duplicates (CLI, window, benchmarks)


@dataclass
class Result:
    path: str
    score: float  # cosine similarity
    photo_id: int
    taken_at: float | None = None
    width: int | None = None
    height: int | None = None
    camera: str | None = None
    size: int | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["score"] = round(float(self.score), 6)
        return d


@dataclass
class Filters:
    folder: str | None = None  # only photos below this folder
    date_from: float | None = None  # Unix time, inclusive (date taken, else file time)
    date_to: float | None = None  # Unix time, exclusive
    min_score: float | None = None
    tags: tuple[str, ...] = ()  # only photos auto-tagged with all of these (photosearch.explain.tags)
    exclude_tags: tuple[str, ...] = ()  # and none of these

    def sql(self) -> tuple[str, list]:
        where, args = [], []
        if self.folder:
            f = os.path.abspath(os.path.expanduser(self.folder)).rstrip(os.sep)
            where.append("(path = ? OR path LIKE ?)")
            args += [f, f + os.sep + "%"]
        date = "COALESCE(taken_at, mtime_ns / 1e9)"
        if self.date_from is not None:
            where.append(f"{date} >= ?")
            args.append(self.date_from)
        if self.date_to is not None:
            where.append(f"{date} < ?")
            args.append(self.date_to)
        return " AND ".join(where), args


def encode_terms(model, terms: Sequence[Term]) -> tuple[np.ndarray, np.ndarray | None]:
    """Weighted sum of term vectors (D,) normalised, and the visual vector of a single-photo query."""
    texts = [t for t in terms if t.kind == "text"]
    images = [t for t in terms if t.kind == "image"]
    vec = np.zeros(model.embed_dim, np.float32)
    if texts:
        vec += (np.array([t.weight for t in texts], np.float32)[:, None] * model.encode_texts([t.value for t in texts])).sum(0)
    visual = None
    if images:
        pixels = np.stack([model.preprocess(t.value) for t in images])
        emb, vis = model.encode_pixels(pixels)
        vec += (np.array([t.weight for t in images], np.float32)[:, None] * emb).sum(0)
        if len(images) == 1 and not texts and images[0].weight > 0:
            visual = vis[0]
    if not np.any(vec):
        raise QueryError("the query's terms cancel out")
    return l2_normalize(vec), visual


class Searcher:
    """Queries against one library with its current model."""

    def __init__(self, library: Library):
        self.library = library

    @property
    def model(self):
        return self.library.model

    def encode_terms(self, terms: Sequence[Term]) -> tuple[np.ndarray, np.ndarray | None]:
        return encode_terms(self.model, terms)

    def _allowed(self, filters: Filters | None) -> np.ndarray | None:
        if filters is None:
            return None
        where, args = filters.sql()
        if filters.tags or filters.exclude_tags:
            from photosearch.explain.tags import get_tag

            mid = self.library.index_for().model_id
            clauses = [where] if where else []
            for names, op in ((filters.tags, "IN"), (filters.exclude_tags, "NOT IN")):
                for name in names:
                    get_tag(self.library.store, name)  # an unknown tag is an error, not an empty result
                    clauses.append(f"id {op} (SELECT photo_id FROM photo_tags WHERE model_id=? AND tag=?)")
                    args += [mid, name.lower()]
            where = " AND ".join(clauses)
        if not where:
            return None
        rows = self.library.store.query(f"SELECT id FROM photos WHERE {where}", args)
        return np.array([r[0] for r in rows], np.int64)

    def search(self, query: str | Sequence[Term], limit: int = 20, filters: Filters | None = None,
               sort: str = "relevance") -> list[Result]:
        """Ranked results for a query string (see :mod:`photosearch.search.query`) or parsed terms.
        ``tag:NAME`` / ``-tag:NAME`` in a query string become tag filters; a query of tags alone lists the
        tagged photos, most confident first."""
        if isinstance(query, str):
            query, wanted, excluded = split_tags(query)
            if wanted or excluded:
                base = filters or Filters()
                filters = replace(base, tags=(*base.tags, *wanted), exclude_tags=(*base.exclude_tags, *excluded))
                if not query.strip(" +"):
                    return self.tagged(filters, limit, sort)
        terms = parse_query(query) if isinstance(query, str) else list(query)
        vec, visual = self.encode_terms(terms)
        return self.search_vector(vec, visual, limit, filters, sort)

    def tagged(self, filters: Filters, limit: int = 20, sort: str = "relevance") -> list[Result]:
        """Photos passing tag (and other) filters without a query: by tag confidence (or date)."""
        if not filters.tags:
            raise QueryError("a query needs text, a photo or a tag:NAME (excluding tags alone selects nothing)")
        from photosearch.explain.tags import tagged_ids

        mid = self.library.index_for().model_id
        ids, scores = tagged_ids(self.library.store, mid, filters.tags[0])
        allowed = self._allowed(filters)
        if allowed is not None:
            keep = np.isin(ids, allowed)
            ids, scores = ids[keep], scores[keep]
        want = limit if sort == "relevance" else len(ids)  # scores are tag confidences: min_score (a cosine) not applied
        return self._results(ids[:want], scores[:want], limit, sort)

    def similar(self, image: str | bytes, limit: int = 20, filters: Filters | None = None,
                sort: str = "relevance") -> list[Result]:
        return self.search([Term("image", image)], limit, filters, sort)

    def search_vector(self, vec: np.ndarray, visual: np.ndarray | None = None, limit: int = 20,
                      filters: Filters | None = None, sort: str = "relevance") -> list[Result]:
        mi = self.library.index_for()
        allowed = self._allowed(filters)
        if allowed is not None and len(allowed) == 0:
            return []
        want = limit if sort == "relevance" else max(limit, 1000)
        ids = None
        if visual is not None:
            # photo query: re-rank shared-space candidates by the image tower's own (visual) similarity, which
            # finds edited copies of a photo far more reliably than the narrow text-aligned space (the visual
            # cosines decide, so a reduced index need not re-rank the candidates first)
            cand = mi.index.search(vec, max(want, PHOTO_CANDIDATES), allowed=allowed, rerank=False)[0][0]
            vid, vvecs = self.library.store.embeddings(mi.model_id, cand.tolist(), visual=True)
            if len(cand) and len(vid) == len(cand):
                order = {int(i): n for n, i in enumerate(vid)}
                kind = self.model.info.kind
                vs = visual_space(vvecs, kind) @ visual_space(visual, kind)
                scores = np.array([vs[order[int(i)]] for i in cand], np.float32)
                rank = np.argsort(-scores, kind="stable")
                ids, scores = cand[rank], scores[rank]
        if ids is None:  # a text query, or candidates without visual vectors: shared-space cosines
            ids, scores = mi.index.search(vec, want, allowed=allowed)
            ids, scores = ids[0], scores[0]
        if filters and filters.min_score is not None:
            keep = scores >= filters.min_score
            ids, scores = ids[keep], scores[keep]
        return self._results(ids[:want], scores[:want], limit, sort)

    def _results(self, ids: np.ndarray, scores: np.ndarray, limit: int, sort: str) -> list[Result]:
        photos = self.library.store.get_photos(ids.tolist())
        results = []
        for i, s in zip(ids.tolist(), scores.tolist()):
            p = photos.get(i)
            if p is None:  # forgotten between search and lookup
                continue
            results.append(Result(p.path, float(s), p.id, p.taken_at, p.width, p.height, p.camera, p.size))
        if sort == "date":
            results.sort(key=lambda r: -(r.taken_at or 0.0))
        elif sort != "relevance":
            raise ValueError(f"unknown sort order {sort!r} (relevance or date)")
        return results[:limit]


def near_duplicate_groups(library: Library, threshold: float = DUPLICATE_THRESHOLD, neighbours: int = 8,
                          threads: int | None = None) -> list[list[Result]]:
    """Groups of near-duplicate photos (burst shots, edited copies, resized exports): photos whose visual
    vectors have cosine ≥ ``threshold``, found among each photo's nearest shared-space neighbours.

    One batched graph search for all photos (all cores, a small ef: near-duplicates are each other's closest
    neighbours), then the visual cosines of the candidate pairs in vectorised chunks."""
    mi = library.index_for()
    store = library.store
    ids, vis = store.embeddings(mi.model_id, visual=True)  # ordered by photo id
    if len(ids) < 2:
        return []
    eids, emb = store.embeddings(mi.model_id)
    if not np.array_equal(eids, ids):  # a photo without a visual vector: keep the photos that have both
        common = np.intersect1d(ids, eids)
        vis, emb = vis[np.isin(ids, common)], emb[np.isin(eids, common)]
        ids = common
    vis = l2_normalize(vis).astype(np.float32)
    k = min(neighbours + 1, len(ids))
    nb_ids, _ = mi.index.search(emb, k, ef=max(32, 2 * k), threads=threads or os.cpu_count() or 1,
                               rerank=False)  # only the ids are used: the visual vectors decide
    pos = np.searchsorted(ids, nb_ids)  # neighbour ids → rows (the index may hold ids the query set lacks)
    pos = np.minimum(pos, len(ids) - 1)
    valid = ids[pos] == nb_ids
    rows = np.broadcast_to(np.arange(len(ids))[:, None], pos.shape)
    a, b = rows[valid], pos[valid]
    keep = a < b  # each unordered pair once (also drops the photo itself)
    a, b = a[keep], b[keep]
    close = np.zeros(len(a), bool)
    for s in range(0, len(a), 50_000):  # bounded memory: 50k pairs × visual width
        close[s : s + 50_000] = np.einsum("nd,nd->n", vis[a[s : s + 50_000]], vis[b[s : s + 50_000]]) >= threshold
    parent = list(range(len(ids)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for x, y in zip(a[close].tolist(), b[close].tolist()):
        parent[find(x)] = find(y)
    groups: dict[int, list[int]] = {}
    for n in {int(v) for v in a[close]} | {int(v) for v in b[close]}:
        groups.setdefault(find(n), []).append(n)
    members_all = sorted({m for g in groups.values() for m in g})
    photos = store.get_photos([int(ids[m]) for m in members_all])
    out = []
    for members in groups.values():
        if len(members) < 2:
            continue
        members.sort()
        first = members[0]
        grp = []
        for m in members:
            p = photos.get(int(ids[m]))
            if p is not None:
                grp.append(Result(p.path, float(vis[first] @ vis[m]), p.id, p.taken_at, p.width, p.height, p.camera,
                                  p.size))
        if len(grp) >= 2:
            out.append(sorted(grp, key=lambda r: r.path))
    return sorted(out, key=lambda g: (-len(g), g[0].path))


KEEP_RULES = ("largest", "newest", "oldest", "first")


def keeper(group: Sequence[Result], rule: str) -> Result:
    """The photo of a near-duplicate group that stays: largest (pixels, then bytes), newest/oldest (date taken,
    else file time), or first (by path)."""
    if rule == "largest":
        return max(group, key=lambda r: ((r.width or 0) * (r.height or 0), r.size or 0, r.path))
    if rule in ("newest", "oldest"):

        def when(r):
            if r.taken_at is not None:
                return r.taken_at
            try:
                return os.stat(r.path).st_mtime
            except OSError:
                return 0.0

        pick = max if rule == "newest" else min
        return pick(group, key=when)
    return min(group, key=lambda r: r.path)
