"""Vector index over hnswlib: inner product on L2-normalised float32 vectors, labels are int64 photo ids.

The SQLite store is the source of truth; this index is a derived artifact that is saved atomically and rebuilt
when it cannot be loaded. Facts about hnswlib 0.8.0 this module relies on (checked in tests/test_index.py):

- ``get_ids_list()`` and ``get_current_count()`` include labels marked deleted, and nothing in the API says which
  labels are deleted, so the live/deleted state is kept here (sorted label array + mask) and saved in the meta.
- ``add_items`` with an existing live label replaces its vector in place; with a deleted label (and
  ``allow_replace_deleted=False``, which is used here) it also undeletes it. ``mark_deleted`` raises RuntimeError
  on unknown or already deleted labels, ``unmark_deleted`` on live ones, ``get_items`` on deleted or unknown ones.
- ``add_items`` past ``max_elements`` raises after adding part of the batch, so capacity is grown beforehand.
- ``knn_query`` raises RuntimeError when it cannot collect k results (k > live count, strict filter, empty index).
- ``load_index`` accepts a file built for another dimension without complaint; ``set_ef`` is not saved.
- ``get_items`` builds Python float lists (~40 µs per 256-d vector), so exact search over a subset is only cheap
  for small subsets.

A large library's index may be *reduced* (:mod:`photosearch.index.reduce`): the graph holds ``v @ P`` for an
orthonormal (D, d) projection saved beside it and proposes a pool of candidates, which int8 copies of the full
vectors (one scale per vector, kept in memory and saved beside the graph) re-rank: scores are cosines to within
~1e-3. Callers see the same D-dimensional API either way. (The store's float32 vectors are not used to re-rank:
reading a few hundred random rows of a multi-GB SQLite file costs tens of milliseconds where the page cache is
small.)
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import struct
import tempfile
import threading
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hnswlib
import numpy as np

from photosearch.index.exact import exact_search

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_GET_CHUNK = 4096  # get_items builds Python lists: fetch vectors in chunks to bound that memory
_EXACT_MIN = 512  # allowed sets up to this size are searched exactly ...
_EXACT_SQRT = 3.0  # ... and up to this * sqrt(live): get_items cost (∝ n) vs filtered-graph cost (∝ live / n)
_NORM_TOL = 1e-2  # float16 round trips stay well inside this
_POOL_MIN = 64  # a reduced index re-ranks k + max(k, this) graph candidates by their full vectors


class _Codes:
    """int8 copies of full vectors in slots, one float32 scale each (|error| per component ≤ scale / 2)."""

    def __init__(self, dim: int, capacity: int = 1024) -> None:
        self.codes = np.zeros((max(1, capacity), dim), np.int8)
        self.scales = np.zeros(max(1, capacity), np.float32)
        self.n = 0  # slots in use

    def write(self, slots: np.ndarray, vectors: np.ndarray) -> None:
        scale = np.abs(vectors).max(axis=1) / 127.0
        scale[scale == 0] = 1.0
        self.codes[slots] = np.rint(vectors / scale[:, None]).astype(np.int8)
        self.scales[slots] = scale

    def append(self, vectors: np.ndarray) -> np.ndarray:
        """New slots holding vectors."""
        need = self.n + len(vectors)
        if need > len(self.scales):
            grown = max(need, len(self.scales) * 3 // 2 + 1)
            codes = np.zeros((grown, self.codes.shape[1]), np.int8)
            codes[: self.n] = self.codes[: self.n]
            scales = np.zeros(grown, np.float32)
            scales[: self.n] = self.scales[: self.n]
            self.codes, self.scales = codes, scales
        slots = np.arange(self.n, need, dtype=np.int64)
        self.write(slots, vectors)
        self.n = need
        return slots

    def get(self, slots: np.ndarray) -> np.ndarray:
        return self.codes[slots].astype(np.float32) * self.scales[slots, None]


class IndexCorruptError(Exception):
    """An index file (or its meta sidecar) cannot be loaded; it will be rebuilt from the library."""


class RWLock:
    """Many readers or one writer. Readers carry a mode (here: the hnswlib ef) and share only with the same mode
    (or mode None, which shares with any); waiting writers go first."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0  # active readers
        self._moded = 0  # active readers with a mode
        self._mode: Any = None  # the mode of the active moded readers
        self._writer = False
        self._writers_waiting = 0
        self._blocked = 0  # readers waiting because another mode is active

    def _may_read(self, mode: Any, blocked: bool) -> bool:
        if self._writer or self._writers_waiting:
            return False
        if mode is None or self._moded == 0:
            return True
        return mode == self._mode and (blocked or self._blocked == 0)  # let a blocked other mode in eventually

    @contextmanager
    def read(self, mode: Any = None) -> Iterator[None]:
        with self._cond:
            blocked = False
            while not self._may_read(mode, blocked):
                if not blocked and mode is not None and self._moded and mode != self._mode:
                    blocked = True
                    self._blocked += 1
                self._cond.wait()
            self._blocked -= blocked
            self._readers += 1
            if mode is not None:
                self._moded += 1
                self._mode = mode
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._moded -= mode is not None
                if self._readers == 0 or self._moded == 0:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            self._cond.wait_for(lambda: not self._writer and self._readers == 0)
            self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


class _Graph:
    """One hnswlib index plus which of its labels are live, and — for a reduced graph — int8 codes of each label's
    full vector (``slots`` runs parallel to ``labels``). Not thread-safe: VectorIndex locks around it."""

    def __init__(self, index: hnswlib.Index, labels: np.ndarray, dead: np.ndarray, codes: _Codes | None = None,
                 slots: np.ndarray | None = None) -> None:
        self.index = index
        self.labels = labels  # (L,) int64, sorted: every label in the graph, deleted ones included
        self.dead = dead  # (L,) bool
        self.n_dead = int(dead.sum())
        self.codes = codes
        self.slots = slots if slots is not None else np.empty(0, np.int64)  # (L,) rows of codes

    @classmethod
    def empty(cls, dim: int, M: int, ef_construction: int, capacity: int, full_dim: int | None = None) -> _Graph:
        """``full_dim``: the graph is reduced and keeps int8 codes of full vectors this wide."""
        index = hnswlib.Index(space="ip", dim=dim)
        index.init_index(max_elements=max(1, capacity), ef_construction=ef_construction, M=M)
        codes = None if full_dim is None else _Codes(full_dim, capacity)
        return cls(index, np.empty(0, np.int64), np.empty(0, bool), codes)

    @property
    def n_live(self) -> int:
        return len(self.labels) - self.n_dead

    def locate(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Positions of ids in labels, whether each is known, and whether each is live."""
        pos = np.searchsorted(self.labels, ids)
        known = pos < len(self.labels)
        known[known] = self.labels[pos[known]] == ids[known]
        live = known.copy()
        live[known] = ~self.dead[pos[known]]
        return pos, known, live

    def upsert(self, ids: np.ndarray, vectors: np.ndarray, threads: int, full: np.ndarray | None = None) -> None:
        """Add or replace unique ids (growing capacity first); deleted ids come back with the new vector.
        ``full``: the full vectors, which a reduced graph keeps as int8 codes."""
        pos, known, live = self.locate(ids)
        new = ~known
        need = self.index.element_count + int(new.sum())
        cap = self.index.get_max_elements()
        if need > cap:
            grown = max(need, cap * 3 // 2 + 1)
            log.debug("growing hnswlib index capacity %d -> %d", cap, grown)
            self.index.resize_index(grown)
        restored = known & ~live
        for label in ids[restored].tolist():
            self.index.unmark_deleted(label)
        self.index.add_items(vectors, ids, num_threads=threads)
        self.dead[pos[restored]] = False
        self.n_dead -= int(restored.sum())
        if self.codes is not None:
            if full is None:
                raise ValueError("a reduced graph needs the full vectors too")
            self.codes.write(self.slots[pos[known]], full[known])
            self.slots = np.insert(self.slots, pos[new], self.codes.append(full[new]))
        self.labels = np.insert(self.labels, pos[new], ids[new])
        self.dead = np.insert(self.dead, pos[new], False)

    def delete(self, ids: np.ndarray) -> int:
        pos, _, live = self.locate(ids)
        for label in ids[live].tolist():
            self.index.mark_deleted(label)
        self.dead[pos[live]] = True
        self.n_dead += int(live.sum())
        return int(live.sum())

    def live_ids(self) -> np.ndarray:
        return self.labels[~self.dead]

    def full(self, ids: np.ndarray) -> np.ndarray:
        """Full vectors of live ids, (n, D) float32: the graph's own, or the int8 codes' of a reduced graph."""
        if self.codes is None:
            return self.get(ids)
        return self.codes.get(self.slots[self.locate(ids)[0]])

    def get(self, ids: np.ndarray) -> np.ndarray:
        """Vectors of live ids as the graph holds them, (n, graph dim) float32."""
        out = np.empty((len(ids), self.index.dim), np.float32)
        for start in range(0, len(ids), _GET_CHUNK):
            chunk = ids[start : start + _GET_CHUNK]
            out[start : start + len(chunk)] = self.index.get_items(chunk, return_type="numpy")
        return out


def _as_ids(ids: Iterable[int]) -> np.ndarray:
    """Validated 1-D int64 id array from an array or any iterable of ints."""
    arr = ids if isinstance(ids, np.ndarray) else np.asarray(list(ids))
    if arr.size == 0:
        return np.empty(0, np.int64)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"ids must be a 1-D array of integers, got shape {arr.shape} dtype {arr.dtype}")
    if arr.min() < 0:
        raise ValueError("ids must be non-negative (SQLite row ids)")
    return arr.astype(np.int64, copy=False)


def _fsync_dir(folder: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, write: Any) -> None:
    """Call write(tmp_path) on `path.tmp-XXXX` in the same folder, fsync it, then replace path with it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".tmp-")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _read_header(path: Path) -> tuple[int, int, int]:
    """(dim, M, element count) from an hnswlib 0.8 file header; hnswlib itself does not check dim on load."""
    with open(path, "rb") as f:
        head = f.read(96)
    if len(head) < 96:
        raise IndexCorruptError(f"index {path} is truncated; it will be rebuilt from the library")
    count, _, label_offset, data_offset = struct.unpack_from("<4Q", head, 16)
    (m,) = struct.unpack_from("<Q", head, 72)
    return (label_offset - data_offset) // 4, m, count


class VectorIndex:
    """Thread-safe cosine-similarity index of photo vectors keyed by int64 photo id."""

    def __init__(
        self,
        dim: int,
        *,
        M: int = 16,
        ef_construction: int = 200,
        ef_search: int = 384,  # text queries lie outside the photos' cloud: a narrower ef misses ~10% of their top 10
        capacity: int = 1024,
        threads: int = 1,
        projection: np.ndarray | None = None,
    ) -> None:
        """``projection`` (dim, d) with orthonormal columns makes a reduced index: the graph holds d-dim vectors
        and int8 codes of the full ones re-rank its candidates."""
        if dim < 1 or M < 2 or ef_construction < 1 or ef_search < 1 or capacity < 1 or threads < 1:
            raise ValueError("dim, ef_construction, ef_search, capacity and threads must be >= 1 and M >= 2")
        self.dim, self.M, self.ef_construction = dim, M, ef_construction
        self.ef_search, self.capacity, self.threads = ef_search, capacity, threads
        self.projection = self._check_projection(projection)
        self._g = _Graph.empty(self.graph_dim, M, ef_construction, capacity, None if projection is None else dim)
        self._lock = RWLock()
        self._save_lock = threading.Lock()  # saves only read the graph but must not interleave their two files
        self._compact_lock = threading.Lock()
        self._dirty: set[int] | None = None  # ids touched while a compaction builds aside

    def _check_projection(self, projection: np.ndarray | None) -> np.ndarray | None:
        if projection is None:
            return None
        p = np.ascontiguousarray(projection, dtype=np.float32)
        if p.ndim != 2 or p.shape[0] != self.dim or not 1 <= p.shape[1] < self.dim:
            raise ValueError(f"projection must have shape ({self.dim}, d) with d < {self.dim}, got {p.shape}")
        if not np.allclose(p.T @ p, np.eye(p.shape[1]), atol=1e-3):
            raise ValueError("projection columns must be orthonormal")
        return p

    @property
    def graph_dim(self) -> int:
        """Width of the vectors the graph holds: d when reduced, else dim."""
        return self.dim if self.projection is None else self.projection.shape[1]

    @property
    def reduced(self) -> bool:
        return self.projection is not None

    def _to_graph(self, vectors: np.ndarray, projection: np.ndarray | None) -> np.ndarray:
        return vectors if projection is None else np.ascontiguousarray(vectors @ projection, dtype=np.float32)

    # ---- persistence -------------------------------------------------------------------------------------------

    @staticmethod
    def projection_path(path: Path) -> Path:
        return Path(path).with_suffix(".proj.npy")

    @staticmethod
    def codes_path(path: Path) -> Path:
        return Path(path).with_suffix(".codes.npz")

    @staticmethod
    def meta_path(path: Path) -> Path:
        return Path(path).with_suffix(".json")

    def save(self, path: Path) -> None:
        """Write the index to `path` and its meta to `path.with_suffix('.json')`, each atomically, meta last."""
        path = Path(path)
        with self._save_lock, self._lock.read():
            g, projection = self._g, self.projection
            proj_meta = None
            if projection is not None:  # written before the graph; the meta (last) names its hash
                buf = io.BytesIO()
                np.save(buf, projection)
                blob = buf.getvalue()
                _write_atomic(self.projection_path(path), lambda tmp: Path(tmp).write_bytes(blob))

                def write_codes(tmp: str) -> None:
                    with open(tmp, "wb") as f:
                        np.savez(f, labels=g.labels, slots=g.slots, codes=g.codes.codes[: g.codes.n],
                                 scales=g.codes.scales[: g.codes.n])

                _write_atomic(self.codes_path(path), write_codes)
                proj_meta = {"dim": projection.shape[1], "sha256": hashlib.sha256(blob).hexdigest(),
                             "codes_bytes": self.codes_path(path).stat().st_size}
            _write_atomic(path, lambda tmp: g.index.save_index(str(tmp)))
            meta = {
                "format": FORMAT_VERSION,
                "dim": self.dim,
                "projection": proj_meta,
                "M": self.M,
                "ef_construction": self.ef_construction,
                "count": g.n_live,
                "elements": len(g.labels),
                "bytes": path.stat().st_size,
                "deleted": g.labels[g.dead].tolist(),
            }
            data = json.dumps(meta, separators=(",", ":")).encode()
            _write_atomic(self.meta_path(path), lambda tmp: Path(tmp).write_bytes(data))
        log.info("saved index %s: %d live vectors, %d deleted", path, meta["count"], len(meta["deleted"]))

    @classmethod
    def load(cls, path: Path, dim: int, **kw: Any) -> VectorIndex:
        """Load an index saved by save(); M, ef_construction and a projection (with its codes) come from the
        files, the rest from kw.

        Raises IndexCorruptError when the file or its meta is missing, garbled, or for another dimension."""
        path = Path(path)

        def corrupt(why: str) -> IndexCorruptError:
            return IndexCorruptError(f"index {path} {why}; it will be rebuilt from the library")

        try:
            meta = json.loads(cls.meta_path(path).read_bytes())
            fmt, mdim, m, efc = int(meta["format"]), int(meta["dim"]), int(meta["M"]), int(meta["ef_construction"])
            count, elements, size = int(meta["count"]), int(meta["elements"]), int(meta["bytes"])
            deleted = np.asarray(meta["deleted"], dtype=np.int64).reshape(-1)
            proj_meta = meta.get("projection")
        except (OSError, ValueError, TypeError, KeyError) as e:
            raise corrupt(f"has a missing or unreadable meta file ({e})") from e
        if fmt != FORMAT_VERSION:
            raise corrupt(f"has format {fmt}, expected {FORMAT_VERSION}")
        if mdim != dim:
            raise corrupt(f"holds {mdim}-d vectors, expected {dim}-d")
        try:
            actual = path.stat().st_size
        except OSError as e:
            raise corrupt(f"cannot be read ({e})") from e
        if actual != size:
            raise corrupt(f"is {actual} bytes, its meta says {size} (interrupted save?)")
        projection = None
        if proj_meta:
            try:
                blob = cls.projection_path(path).read_bytes()
                if hashlib.sha256(blob).hexdigest() != proj_meta["sha256"]:
                    raise ValueError("its hash differs from the meta's")
                projection = np.load(io.BytesIO(blob), allow_pickle=False)
                if projection.shape != (dim, int(proj_meta["dim"])):
                    raise ValueError(f"shape {projection.shape}")
            except (OSError, ValueError, TypeError, KeyError) as e:
                raise corrupt(f"has a missing or damaged projection file ({e})") from e
        gdim = dim if projection is None else projection.shape[1]
        if _read_header(path) != (gdim, m, elements):
            raise corrupt(f"header does not match its meta (dim={gdim}, M={m}, {elements} elements)")
        try:
            self = cls(dim, **{**kw, "M": m, "ef_construction": efc, "projection": projection})
        except ValueError as e:
            raise corrupt(f"cannot be opened reduced ({e})") from e
        index = hnswlib.Index(space="ip", dim=gdim)
        try:
            index.load_index(str(path), max_elements=max(self.capacity, math.ceil(elements * 1.25)))
        except (RuntimeError, MemoryError) as e:
            raise corrupt(f"cannot be loaded ({e})") from e
        labels = np.sort(np.asarray(index.get_ids_list(), dtype=np.int64))
        dead = np.isin(labels, deleted)
        if len(labels) != elements or dead.sum() != len(deleted) or elements - len(deleted) != count:
            raise corrupt("does not match its meta (element or deleted counts differ)")
        codes, slots = None, None
        if projection is not None:
            codes, slots = cls._load_codes(cls.codes_path(path), labels, dim, proj_meta, corrupt)
        self._g = _Graph(index, labels, dead, codes, slots)
        log.info("loaded index %s: %d live vectors, %d deleted", path, count, len(deleted))
        return self

    @staticmethod
    def _load_codes(path: Path, labels: np.ndarray, dim: int, meta: dict, corrupt: Any) -> tuple[_Codes, np.ndarray]:
        try:
            if path.stat().st_size != int(meta["codes_bytes"]):
                raise ValueError("its size differs from the meta's")
            with np.load(path, allow_pickle=False) as z:
                saved, slots, codes, scales = z["labels"], z["slots"], z["codes"], z["scales"]
        except (OSError, ValueError, TypeError, KeyError, EOFError, zipfile.BadZipFile) as e:
            raise corrupt(f"has a missing or damaged codes file ({e})") from e
        n = len(scales)
        if (not np.array_equal(saved, labels) or len(slots) != len(labels) or codes.shape != (n, dim)
                or codes.dtype != np.int8 or (len(slots) and (slots.min() < 0 or slots.max() >= n))):
            raise corrupt("has a codes file that does not match the graph")
        c = _Codes(dim, 0)
        c.codes, c.scales, c.n = codes, scales.astype(np.float32), n
        return c, slots.astype(np.int64)

    # ---- writes ------------------------------------------------------------------------------------------------

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Upsert: new ids are added, present ids get their vector replaced, removed ids come back."""
        ids = _as_ids(ids)
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape != (len(ids), self.dim):
            raise ValueError(f"vectors must have shape ({len(ids)}, {self.dim}), got {vectors.shape}")
        if not np.issubdtype(vectors.dtype, np.floating):
            raise ValueError(f"vectors must be floating point, got {vectors.dtype}")
        if len(ids) == 0:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if not np.isfinite(vectors).all():
            raise ValueError("vectors contain NaN or infinity")
        if np.abs(np.linalg.norm(vectors, axis=1) - 1).max() > _NORM_TOL:
            raise ValueError("vectors must be L2-normalised")
        ids, last = np.unique(ids[::-1], return_index=True)  # a repeated id keeps its last vector
        vectors = vectors[len(vectors) - 1 - last]
        with self._lock.write():
            self._g.upsert(ids, self._to_graph(vectors, self.projection), self.threads, full=vectors)
            if self._dirty is not None:
                self._dirty.update(ids.tolist())

    def remove(self, ids: Iterable[int]) -> int:
        """Mark ids deleted (unknown or already removed ids are ignored); returns how many were removed."""
        ids = np.unique(_as_ids(ids))
        with self._lock.write():
            removed = self._g.delete(ids)
            if self._dirty is not None:
                self._dirty.update(ids.tolist())
        return removed

    def compact(self, projection: np.ndarray | None = None) -> None:
        """Rebuild from the live items with the same parameters, dropping deleted slots. With ``projection``
        (only for an index that is not reduced yet), the new graph holds the projected vectors and int8 codes of
        the full ones: the index becomes reduced.

        The new graph is built aside while searches and writes go on; writes made meanwhile are replayed onto it
        under the write lock before the swap. Needs memory for both graphs while it runs."""
        with self._compact_lock:
            if projection is not None:
                if self.reduced:
                    raise ValueError("the index is already reduced; build a new one to change its projection")
                projection = self._check_projection(projection)
            target = self.projection if projection is None else projection  # the new graph's projection
            with self._lock.write():
                self._dirty = set()
            try:
                with self._lock.read():
                    ids = self._g.live_ids()
                gdim = self.dim if target is None else target.shape[1]
                capacity = max(self.capacity, math.ceil(len(ids) * 1.25))
                fresh = _Graph.empty(gdim, self.M, self.ef_construction, capacity,
                                     None if target is None else self.dim)

                def move(chunk: np.ndarray) -> None:  # old graph -> fresh, projecting when the index becomes reduced
                    vectors = self._g.get(chunk)  # as the old graph holds them (read once: get_items is slow)
                    if projection is not None:  # the old graph held the full vectors
                        full, vectors = vectors, vectors @ projection
                    else:  # same space; a reduced graph's codes move along
                        full = None if self._g.codes is None else self._g.full(chunk)
                    fresh.upsert(chunk, np.ascontiguousarray(vectors, np.float32), self.threads, full=full)

                for start in range(0, len(ids), 65536):  # chunks bound the extra memory to 65536 vectors
                    chunk = ids[start : start + 65536]
                    with self._lock.read():  # ids removed since the snapshot are in _dirty: replayed below
                        move(chunk[self._g.locate(chunk)[2]])
                with self._lock.write():
                    dirty = np.array(sorted(self._dirty), dtype=np.int64)
                    _, _, live = self._g.locate(dirty)
                    fresh.delete(dirty[~live])
                    if live.any():
                        move(dirty[live])
                    before, self._g, self.projection = self._g, fresh, target
                log.info("compacted index%s: %d live, %d deleted slots dropped",
                         f" into {gdim} dimensions" if projection is not None else "", fresh.n_live, before.n_dead)
            finally:
                with self._lock.write():
                    self._dirty = None

    def maybe_compact(self, threshold: float = 0.3) -> bool:
        """Compact when more than `threshold` of the slots are deleted; returns whether it did."""
        if self.deleted_fraction <= threshold:
            return False
        self.compact()
        return True

    # ---- reads -------------------------------------------------------------------------------------------------

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None, ef: int | None = None,
        threads: int | None = None, rerank: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k live ids by cosine similarity: ids (Q, k') int64 and scores (Q, k') float32, best first.

        k' = min(k, number of candidates). With `allowed`, only those ids can be returned: a small allowed set is
        searched exactly, a large one through the graph with a filter and a raised ef. ``threads``: for large
        query batches (default: the index's own setting). A reduced index re-ranks a pool of graph candidates
        by their full vectors; ``rerank=False`` skips that and returns the graph's approximate scores (for
        callers that only want neighbour ids of many queries)."""
        q = np.asarray(queries)
        if q.ndim == 1:
            q = q[None, :]
        if q.ndim != 2 or q.shape[1] != self.dim or not np.issubdtype(q.dtype, np.floating):
            raise ValueError(f"queries must be float arrays of shape ({self.dim},) or (Q, {self.dim}), got {q.shape}")
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        norms = np.linalg.norm(q, axis=1, keepdims=True)
        if not np.isfinite(q).all() or (norms == 0).any():
            raise ValueError("queries must be finite and non-zero")
        q = np.ascontiguousarray(q / norms, dtype=np.float32)  # (Q, D)
        k = int(k)
        pool = k + max(k, _POOL_MIN) if self.reduced and rerank else k
        if ef is None:
            ef = max(self.ef_search * (2 if allowed is not None else 1), 2 * k)
        ef = max(ef, pool)
        allowed_ids = None if allowed is None else np.unique(_as_ids(allowed))
        with self._lock.read(mode=ef):
            g, projection = self._g, self.projection
            if allowed_ids is None:
                candidates = None
                n = g.n_live
            else:
                candidates = allowed_ids[g.locate(allowed_ids)[2]]
                n = len(candidates)
            kk = min(k, n)
            if kk == 0:
                return np.empty((len(q), 0), np.int64), np.empty((len(q), 0), np.float32)
            if candidates is not None and n <= max(_EXACT_MIN, _EXACT_SQRT * math.sqrt(g.n_live)):
                return self._exact(g, candidates, q, kk)
            if g.index.ef != ef:
                g.index.set_ef(ef)  # every concurrent reader in this mode wants the same ef
            filt = None if candidates is None else set(candidates.tolist()).__contains__
            try:
                labels, dist = g.index.knn_query(self._to_graph(q, projection), k=min(pool, n),
                                                 num_threads=threads or self.threads, filter=filt)
            except RuntimeError as e:  # the graph walk found fewer than requested
                log.warning("hnswlib search failed (%s); falling back to exact search over %d vectors", e, n)
                return self._exact(g, g.live_ids() if candidates is None else candidates, q, kk)
            labels = labels.astype(np.int64)
            if projection is not None and rerank:
                return self._rerank(g, labels, q, kk)
        return labels[:, :kk], (1.0 - dist[:, :kk]).astype(np.float32)

    def _exact(self, g: _Graph, ids: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Brute-force top-k over ids (full vectors: the graph's own, or a reduced graph's codes)."""
        out_ids, scores = exact_search(g.full(ids), ids, q, k)
        return out_ids, np.clip(scores, -1.0, 1.0)

    @staticmethod
    def _rerank(g: _Graph, labels: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Cosines of each row's graph candidates by their full vectors (int8 codes), top k of them."""
        slots = g.slots[np.searchsorted(g.labels, labels)]  # (Q, P): every candidate is a known label
        scores = np.empty(labels.shape, np.float32)
        for s in range(0, len(q), 256):  # bounded memory: 256 queries × pool × D
            sl = slots[s : s + 256]
            dots = np.einsum("qpd,qd->qp", g.codes.codes[sl].astype(np.float32), q[s : s + 256])
            scores[s : s + 256] = np.clip(dots * g.codes.scales[sl], -1.0, 1.0)  # int8 rounding may pass ±1
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(labels, order, axis=1), np.take_along_axis(scores, order, axis=1)

    def ids(self) -> np.ndarray:
        """Live ids, int64, sorted."""
        with self._lock.read():
            return self._g.live_ids()

    def __len__(self) -> int:
        return self._g.n_live

    def __contains__(self, id: object) -> bool:
        if not isinstance(id, (int, np.integer)) or id < 0:
            return False
        with self._lock.read():
            return bool(self._g.locate(np.array([id], np.int64))[2][0])

    def vectors(self, ids: Iterable[int]) -> np.ndarray:
        """Stored float32 vectors of live ids, (n, D); KeyError names ids that are not in the index."""
        ids = _as_ids(ids)
        with self._lock.read():
            live = self._g.locate(ids)[2]
            if not live.all():
                raise KeyError(f"ids not in the index: {ids[~live][:10].tolist()}")
            return self._g.full(ids)

    @property
    def deleted_fraction(self) -> float:
        """Share of graph slots held by deleted ids."""
        g = self._g
        return g.n_dead / len(g.labels) if len(g.labels) else 0.0

    def __repr__(self) -> str:
        reduced = f", graph_dim={self.graph_dim}" if self.reduced else ""
        return f"VectorIndex(dim={self.dim}{reduced}, live={len(self)}, deleted_fraction={self.deleted_fraction:.2f})"
