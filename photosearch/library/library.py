"""A photo library: folders on disk, the SQLite store, one HNSW index per model id, and incremental indexing."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from photosearch.index import IndexCorruptError, VectorIndex
from photosearch.index.reduce import fit_projection
from photosearch.library.pipeline import Control, Decoded, Progress, ProgressCallback, RateMeter, decode_ahead
from photosearch.library.scan import FileEntry, content_hash, is_below, walk_photos
from photosearch.library.store import Folder, Store

if TYPE_CHECKING:
    from photosearch.model import EmbeddingModel


def _is_model(obj: object) -> bool:
    return hasattr(obj, "encode_pixels")

log = logging.getLogger(__name__)

INDEX_DIR = "indexes"
_THREADS = os.cpu_count() or 1  # graph building (a rebuild after a lost index file, compaction) uses every core
SAVE_EVERY_S = 20.0  # the index file is rewritten at most this often while indexing (the store commits per batch) …
SAVE_EVERY_PHOTOS = 100_000  # … per this many photos in it: a 1M-photo index (~1 GB) every 200 s, not every 20 s


def default_library_dir() -> Path:
    """$PHOTOSEARCH_LIBRARY, else the per-user data folder (platformdirs)."""
    env = os.environ.get("PHOTOSEARCH_LIBRARY")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("photosearch")) / "library"


@dataclass
class IndexReport:
    """What one indexing run did."""

    indexed: int = 0  # photos encoded now
    unchanged: int = 0  # known photos whose size and mtime did not change
    moved: int = 0  # renamed/moved photos recognised by content hash (vectors kept)
    copied: int = 0  # identical copies that reused another photo's vectors
    removed: int = 0  # photos whose files are gone
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) of files skipped this run
    offline: list[str] = field(default_factory=list)  # folders that were not reachable (their photos are kept)
    cancelled: bool = False
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {
            "indexed": self.indexed, "unchanged": self.unchanged, "moved": self.moved, "copied": self.copied,
            "removed": self.removed, "failed": [{"path": p, "reason": r} for p, r in self.failed],
            "offline": self.offline, "cancelled": self.cancelled, "seconds": round(self.seconds, 2),
        }


class ModelIndex:
    """The HNSW index of one model id, kept consistent with the store's vectors.

    From ``REDUCE_AT`` photos on, the graph holds narrower vectors (a projection fitted on a sample of the
    library, :mod:`photosearch.index.reduce`) and re-ranks its candidates with int8 codes of the full vectors:
    a 1M-photo library then needs ~1 GB for its index instead of 1.7 GB, with the same results."""

    REDUCE_AT = 100_000
    FIT_SAMPLE = 20_000

    def __init__(self, store: Store, model_id: str, dim: int):
        self.store, self.model_id, self.dim = store, model_id, dim
        self.path = store.folder / INDEX_DIR / f"{model_id}.hnsw"
        self.lock = threading.Lock()
        self.dirty = False
        self.last_save = time.monotonic()
        self._irreducible = False
        self.index = self._open()

    def _open(self) -> VectorIndex:
        index = None
        if self.path.is_file():
            try:
                index = VectorIndex.load(self.path, self.dim, threads=_THREADS)
            except IndexCorruptError as e:
                log.warning("%s; rebuilding it from the library", e)
        want = self.store.vector_ids(self.model_id)
        if index is None:  # a large library is rebuilt reduced straight away (never holding every full vector)
            projection = self._fit(want) if len(want) >= self.REDUCE_AT else None
            index = VectorIndex(self.dim, projection=projection, threads=_THREADS)
        self._reconcile(index, want)
        return index

    def _fit(self, ids: np.ndarray):
        """A projection fitted on a random sample of the library's vectors (None: reducing would not pay)."""
        rng = np.random.default_rng(0)
        sample = ids if len(ids) <= self.FIT_SAMPLE else rng.choice(ids, self.FIT_SAMPLE, replace=False)
        _, vectors = self.store.embeddings(self.model_id, np.sort(sample).tolist())
        return fit_projection(vectors) if len(vectors) else None

    def maybe_reduce(self) -> bool:
        """Rebuild the graph reduced once the library has grown past REDUCE_AT; returns whether it did."""
        if self.index.reduced or len(self.index) < self.REDUCE_AT or self._irreducible:
            return False
        projection = self._fit(self.index.ids())
        if projection is None:  # this model's vectors fill too many directions: decided for this session
            self._irreducible = True
            return False
        log.info("library passed %d photos: rebuilding index %s with %d-d graph vectors", self.REDUCE_AT,
                 self.model_id, projection.shape[1])
        self.index.compact(projection=projection)
        return True

    def _reconcile(self, index: VectorIndex, want: np.ndarray) -> None:
        """Make the index hold exactly the store's vectors for this model, ``want`` (their ids, sorted): after a
        crash or a lost file."""
        have = index.ids()
        extra = np.setdiff1d(have, want, assume_unique=True)
        missing = np.setdiff1d(want, have, assume_unique=True)
        if len(extra):
            index.remove(extra.tolist())
        for i in range(0, len(missing), 4096):
            ids, vecs = self.store.embeddings(self.model_id, missing[i : i + 4096].tolist())
            if len(ids):
                index.add(ids, vecs)
        if len(extra) or len(missing):
            log.info("index %s reconciled with the library: +%d, -%d", self.model_id, len(missing), len(extra))
            self.dirty = True

    def add(self, ids: Sequence[int], vectors: np.ndarray) -> None:
        if len(ids):
            self.index.add(np.asarray(ids, np.int64), vectors)
            self.dirty = True

    def remove(self, ids: Iterable[int]) -> None:
        ids = list(ids)
        if ids and self.index.remove(ids):
            self.dirty = True

    def save(self, force: bool = False) -> None:
        with self.lock:
            if not self.dirty and not force:
                return
            if not self.maybe_reduce():
                self.index.maybe_compact()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.index.save(self.path)
            self.dirty = False
            self.last_save = time.monotonic()

    @property
    def save_interval(self) -> float:
        """Seconds between index saves while indexing: longer for bigger files (a crash loses nothing either way:
        the index is reconciled with the store when it is opened)."""
        return SAVE_EVERY_S * max(1.0, len(self.index) / SAVE_EVERY_PHOTOS)

    def save_if_due(self) -> None:
        if self.dirty and time.monotonic() - self.last_save > self.save_interval:
            self.save()


class Library:
    """Folders, photos and vectors of one library folder, indexed with one model at a time.

    ``model`` may be a loaded :class:`EmbeddingModel` or a zero-argument callable that loads it on first use
    (so opening a library and reading its status never waits for a model).
    """

    def __init__(self, folder: str | Path, model: EmbeddingModel | Callable[[], EmbeddingModel],
                 decode_workers: int | None = None, batch_size: int = 32):
        self.folder = Path(folder).expanduser()
        self.store = Store(self.folder)
        self._model = model if _is_model(model) else None
        self._load_model = None if _is_model(model) else model
        self._indexes: dict[str, ModelIndex] = {}
        self._model_lock = threading.Lock()
        self._index_lock = threading.Lock()
        # two decoders even on 2 cores: decoding releases the GIL and overlaps the encoder (12-MP JPEGs on 2 cores:
        # 27.0 photos/s with 2, 16.5 with 1 — bench/RESULTS.md)
        self.decode_workers = decode_workers or max(2, min(4, (os.cpu_count() or 2) - 1))
        self.batch_size = batch_size

    # -- model and index ---------------------------------------------------------------------------------
    @property
    def model(self) -> EmbeddingModel:
        with self._model_lock:
            if self._model is None:
                self._model = self._load_model()
            return self._model

    def set_model(self, model: EmbeddingModel | Callable[[], EmbeddingModel]) -> None:
        """Switch models; the next index() builds (or updates) that model's own index. Other indexes are kept."""
        with self._model_lock:
            self._model = model if _is_model(model) else None
            self._load_model = None if _is_model(model) else model

    @property
    def model_loaded(self) -> bool:
        return self._model is not None

    def index_for(self, model: EmbeddingModel | None = None) -> ModelIndex:
        model = model or self.model
        with self._index_lock:
            mi = self._indexes.get(model.model_id)
            if mi is None:
                self.store.register_model(model.model_id, model.info.name, model.info.path, model.embed_dim,
                                          model.info.visual_dim)
                mi = self._indexes[model.model_id] = ModelIndex(self.store, model.model_id, model.embed_dim)
            return mi

    def close(self) -> None:
        for mi in self._indexes.values():
            mi.save()
        self.store.close()

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- folders -----------------------------------------------------------------------------------------
    def add_folder(self, path: str | Path, excludes: Iterable[str] = ()) -> Folder:
        p = Path(path).expanduser().absolute()
        if not p.is_dir():
            raise FileNotFoundError(f"{p} is not a folder")
        if p == self.folder or self.folder in p.parents:
            raise ValueError(f"{p} is inside the library folder itself")
        return self.store.add_folder(str(p), excludes)

    def remove_folder(self, path: str | Path) -> int:
        p = str(Path(path).expanduser().absolute())
        for f in self.store.folders():
            if f.path == p:
                ids = self.store.remove_folder(f.id)
                for mi in self._indexes.values():
                    mi.remove(ids)
                    mi.save()
                return len(ids)
        raise KeyError(f"{p} is not one of the library's folders")

    def forget(self, path: str | Path) -> int:
        """Forget one photo, or every photo below a folder (also removes a watched folder with that path)."""
        p = str(Path(path).expanduser().absolute())
        if any(f.path == p for f in self.store.folders()):
            return self.remove_folder(p)
        rows = self.store.query("SELECT id FROM photos WHERE path=? OR path LIKE ?", (p, p.rstrip(os.sep) + os.sep + "%"))
        return self._forget_ids([r[0] for r in rows])

    def _forget_ids(self, ids: list[int]) -> int:
        self.store.delete_photos(ids)
        for mi in self._indexes.values():
            mi.remove(ids)
            mi.save()
        return len(ids)

    def trash(self, paths: Sequence[str | Path]) -> tuple[list, list[str]]:
        """Move photos to the system trash (never delete) and forget them; undo with :meth:`undo_trash`.
        Returns (moved :class:`~photosearch.library.trash.Trashed` entries, problems)."""
        from photosearch.library.trash import move_to_trash

        moved, problems = move_to_trash(list(paths), self.folder)
        ids = []
        for t in moved:
            p = self.store.photo_by_path(t.original)
            if p is not None:
                ids.append(p.id)
        self._forget_ids(ids)
        return moved, problems

    def undo_trash(self) -> tuple[list[str], list[str]]:
        """Bring the last photos moved to the trash back and index them again. Returns (restored, problems)."""
        from photosearch.library.trash import undo

        restored, problems = undo(self.folder)
        if restored:
            folders = {f.path for f in self.store.folders() if any(is_below(r, f.path) for r in restored)}
            if folders:
                self.index(sorted(folders))
        return restored, problems

    # -- indexing ----------------------------------------------------------------------------------------
    def scan(self, folders: Sequence[Folder] | None = None, report: IndexReport | None = None
             ) -> tuple[list[tuple[Folder, FileEntry]], dict[int, tuple[str, Folder]], IndexReport]:
        """Compare disk with the store. Returns (new or changed files, vanished photos id → (path, folder), report)."""
        report = report or IndexReport()
        todo: list[tuple[Folder, FileEntry]] = []
        vanished: dict[int, tuple[str, Folder]] = {}
        for folder in folders if folders is not None else self.store.folders():
            if not os.path.isdir(folder.path):
                self.store.set_folder_state(folder.id, online=False)
                report.offline.append(folder.path)
                log.warning("folder %s is not reachable; its photos are kept", folder.path)
                continue
            known = self.store.photo_stats(folder.id)
            seen: set[str] = set()
            for entry in walk_photos(folder.path, folder.excludes, on_error=lambda p, r: report.failed.append((p, r))):
                seen.add(entry.path)
                k = known.get(entry.path)
                if k is not None and k[1] == entry.size and k[2] == entry.mtime_ns:
                    report.unchanged += 1
                else:
                    todo.append((folder, entry))
            for path, (pid, _, _) in known.items():
                if path not in seen:
                    vanished[pid] = (path, folder)
            self.store.set_folder_state(folder.id, online=True, scanned=True)
        return todo, vanished, report

    def index(self, folders: Sequence[str | Path] | None = None, progress: ProgressCallback | None = None,
              control: Control | None = None) -> IndexReport:
        """Bring the library up to date with disk for the current model: scan, recognise moves and copies by
        content hash, encode what is new or changed, drop what is gone. Resumable at any point."""
        t0 = time.perf_counter()
        control = control or Control()
        emit = progress or (lambda p: None)
        emit(Progress("scanning"))
        chosen = None
        if folders is not None:
            wanted = {str(Path(f).expanduser().absolute()) for f in folders}
            chosen = [f for f in self.store.folders() if f.path in wanted]
        todo, vanished, report = self.scan(chosen)
        model = self.model
        mi = self.index_for(model)
        todo = self._match_moves(todo, vanished, mi, report)
        if vanished:
            ids = list(vanished)
            self.store.delete_photos(ids)
            for other in self._indexes.values():
                other.remove(ids)
            report.removed = len(ids)
        # photos known to the store but without a vector for this model (new model, or a crash mid-batch)
        pending_paths = {e.path for _, e in todo}
        folders_by_id = {f.id: f for f in self.store.folders()}
        for ph in self.store.photos_missing_vectors(model.model_id):
            if ph.path not in pending_paths and ph.folder_id in folders_by_id and os.path.exists(ph.path):
                todo.append((folders_by_id[ph.folder_id], FileEntry(ph.path, ph.size, ph.mtime_ns)))
        self._encode_all(todo, model, mi, report, emit, control)
        mi.save()
        report.seconds = time.perf_counter() - t0
        emit(Progress("cancelled" if report.cancelled else "done", report.indexed, len(todo)))
        return report

    def _match_moves(self, todo: list[tuple[Folder, FileEntry]], vanished: dict[int, tuple[str, Folder]],
                     mi: ModelIndex, report: IndexReport) -> list[tuple[Folder, FileEntry]]:
        """A new file whose content equals a vanished photo's is that photo, moved: keep its id and vectors."""
        if not vanished or not todo:
            return todo
        by_hash: dict[tuple[str, int], int] = {}
        for ph in self.store.get_photos(list(vanished)).values():
            if ph.content_hash:
                by_hash.setdefault((ph.content_hash, ph.size), ph.id)
        if not by_hash:
            return todo
        sizes = {size for _, size in by_hash}
        rest = []
        for folder, entry in todo:
            pid = None
            if entry.size in sizes and self.store.photo_by_path(entry.path) is None:
                try:
                    pid = by_hash.pop((content_hash(entry.path), entry.size), None)
                except OSError:
                    pid = None
            if pid is None:
                rest.append((folder, entry))
                continue
            with self.store.transaction() as db:
                self.store.move_photo(db, pid, entry.path, folder.id, entry.mtime_ns)
            del vanished[pid]
            report.moved += 1
        return rest

    def _encode_all(self, todo: list[tuple[Folder, FileEntry]], model: EmbeddingModel, mi: ModelIndex,
                    report: IndexReport, emit: ProgressCallback, control: Control) -> None:
        meter = RateMeter(len(todo))
        folder_of = {e.path: f for f, e in todo}
        batch: list[Decoded] = []
        done = 0
        stream = decode_ahead((e for _, e in todo), model, self.decode_workers, lookahead=2 * self.batch_size)
        try:
            for item in stream:
                batch.append(item)
                if len(batch) >= self.batch_size:
                    done += self._commit_batch(batch, folder_of, model, mi, report)
                    batch = []
                    emit(meter.progress("indexing", done, item.entry.path, len(report.failed)))
                    mi.save_if_due()
                    if not control.checkpoint():
                        report.cancelled = True
                        return
            if batch:
                done += self._commit_batch(batch, folder_of, model, mi, report)
                emit(meter.progress("indexing", done, batch[-1].entry.path, len(report.failed)))
        finally:
            stream.close()

    def _commit_batch(self, batch: list[Decoded], folder_of: dict[str, Folder], model: EmbeddingModel,
                      mi: ModelIndex, report: IndexReport) -> int:
        """Encode the decodable photos of a batch and commit the whole batch in one transaction."""
        good = [d for d in batch if d.error is None and d.pixels is not None]
        # an identical copy of a photo that already has vectors needs no encoding
        copies: dict[int, int] = {}
        to_encode = []
        for d in good:
            src = next((p for p in self.store.photos_by_hash(d.content_hash)
                        if p.path != d.entry.path and self.store.has_vector(model.model_id, p.id)), None)
            if src is not None:
                copies[id(d)] = src.id
            else:
                to_encode.append(d)
        emb = vis = None
        if to_encode:
            emb, vis = model.encode_pixels(np.stack([d.pixels for d in to_encode]))
        added_ids, added_vecs = [], []
        with self.store.transaction() as db:
            for d in batch:
                if d.error is not None:
                    self.store.upsert_photo(db, d.entry.path, folder_of[d.entry.path].id, d.entry.size,
                                            d.entry.mtime_ns, d.content_hash, {}, d.error)
                    db.execute("DELETE FROM vectors WHERE photo_id=(SELECT id FROM photos WHERE path=?)", (d.entry.path,))
                    report.failed.append((d.entry.path, d.error))
            for d in good:
                pid = self.store.upsert_photo(db, d.entry.path, folder_of[d.entry.path].id, d.entry.size,
                                              d.entry.mtime_ns, d.content_hash, d.meta, None)
                if id(d) in copies:
                    self.store.copy_vectors(db, copies[id(d)], pid)
                    report.copied += 1
                    ids, vecs = self.store.embeddings(model.model_id, [copies[id(d)]])
                    added_ids.append(pid)
                    added_vecs.append(vecs[0])
            for j, d in enumerate(to_encode):
                pid = self.store.photo_by_path_in(db, d.entry.path)
                self.store.put_vectors(db, model.model_id, pid, emb[j], vis[j])
                added_ids.append(pid)
                added_vecs.append(emb[j])
        report.indexed += len(to_encode)
        failed_ids = [r[0] for r in self.store.query(
            f"SELECT id FROM photos WHERE error IS NOT NULL AND path IN ({','.join('?' * len(batch))})",
            [d.entry.path for d in batch])]
        mi.remove(failed_ids)
        if added_ids:
            mi.add(added_ids, np.stack(added_vecs))
        return len(batch)

    # -- status ------------------------------------------------------------------------------------------
    def status(self, model_id: str | None = None) -> dict:
        c = self.store.counts(model_id)
        c["folders"] = [{"path": f.path, "online": f.online, "last_scan": f.last_scan} for f in self.store.folders()]
        c["library"] = str(self.folder)
        if model_id:
            c["model_id"] = model_id
        return c
