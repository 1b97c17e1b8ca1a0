"""Background work for the window: indexing, searching and thumbnail decoding, reporting through Qt signals.

The UI thread never decodes a full image or runs a model: the indexer and the searcher each own a QThread,
thumbnails are decoded to QImage in a thread pool (QImageReader scales JPEGs while decoding) and cached on disk.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from pathlib import Path

from PySide6.QtCore import QMetaObject, QObject, QRunnable, Qt, QThread, QThreadPool, Signal, Slot
from PySide6.QtGui import QImage

from photosearch.library import Control, Library
from photosearch.search import Filters, QueryError, Searcher, Term

log = logging.getLogger(__name__)


class IndexWorker(QObject):
    """Runs ``Library.index`` in its own thread; requests arriving while it runs are merged into one rerun."""

    progress = Signal(object)  # Progress
    finished = Signal(object)  # IndexReport
    failed = Signal(str)
    state_changed = Signal(str)  # "idle" | "running" | "paused"

    def __init__(self, library: Library):
        super().__init__()
        self.library = library
        self.control = Control()
        self._pending = threading.Event()
        self._running = False
        self._lock = threading.Lock()
        self._thread = QThread()
        self._thread.setObjectName("indexer")
        self.moveToThread(self._thread)
        self._thread.start()

    @property
    def state(self) -> str:
        if not self._running:
            return "idle"
        return "paused" if self.control.paused else "running"

    def request(self) -> None:
        """Ask for an indexing pass (thread-safe). Several requests while busy cause a single extra pass."""
        with self._lock:
            if self._running:
                self._pending.set()
                return
            self._running = True
        QMetaObject.invokeMethod(self, "_run", Qt.ConnectionType.QueuedConnection)

    @Slot()
    def _run(self) -> None:
        while True:
            self.control.rearm()
            self.state_changed.emit("paused" if self.control.paused else "running")
            try:
                report = self.library.index(progress=self.progress.emit, control=self.control)
                self.finished.emit(report)
            except Exception as e:
                log.exception("indexing failed")
                self.failed.emit(f"Indexing stopped: {e}")
            with self._lock:
                if not self._pending.is_set() or self.control.cancelled:
                    self._pending.clear()
                    self._running = False
                    break
                self._pending.clear()
        self.state_changed.emit("idle")

    def pause(self) -> None:
        self.control.pause()
        self.state_changed.emit("paused")

    def resume(self) -> None:
        self.control.resume()
        self.state_changed.emit("running")

    def cancel(self) -> None:
        self.control.cancel()

    def stop(self) -> None:
        self.control.cancel()
        self._thread.quit()
        self._thread.wait(10000)


class SearchWorker(QObject):
    """Encodes queries and searches in its own thread; only the newest request is answered."""

    results = Signal(int, object, str)  # request id, list[Result], description
    failed = Signal(int, str)
    model_ready = Signal(str)
    _submit = Signal(int, object, int, object, str)

    def __init__(self, library: Library):
        super().__init__()
        self.library = library
        self.searcher = Searcher(library)
        self._latest = 0
        self._thread = QThread()
        self._thread.setObjectName("searcher")
        self.moveToThread(self._thread)
        self._submit.connect(self._search)
        self._thread.start()

    def submit(self, request_id: int, terms: list[Term], limit: int, filters: Filters, sort: str) -> None:
        self._latest = request_id
        self._submit.emit(request_id, terms, limit, filters, sort)

    @Slot()
    def warm_up(self) -> None:
        """Load the model in this thread (the window is already visible)."""
        try:
            m = self.library.model
            self.model_ready.emit(m.info.name)
        except Exception as e:  # noqa: BLE001
            self.failed.emit(0, f"The model could not be loaded: {e}")

    @Slot(int, object, int, object, str)
    def _search(self, request_id: int, terms: list[Term], limit: int, filters: Filters, sort: str) -> None:
        if request_id != self._latest:
            return  # superseded while waiting
        try:
            t = time.perf_counter()
            if terms:
                res = self.searcher.search(terms, limit, filters, sort)
            else:  # tag:NAME alone
                res = self.searcher.tagged(filters, limit, sort)
            n = len(res)
            self.results.emit(request_id, res, f"{n} result{'s' * (n != 1)} in {1000 * (time.perf_counter() - t):.0f} ms")
        except QueryError as e:
            self.failed.emit(request_id, str(e))
        except Exception as e:
            log.exception("search failed")
            self.failed.emit(request_id, f"Search failed: {e}")

    def stop(self) -> None:
        self._thread.quit()
        self._thread.wait(10000)


def thumbnail_cache_path(cache_dir: Path, path: str, size: int) -> Path:
    try:
        st = os.stat(path)
        stamp = f"{st.st_size}-{st.st_mtime_ns}"
    except OSError:
        stamp = "missing"
    key = hashlib.blake2b(f"{path}|{stamp}|{size}".encode(), digest_size=12).hexdigest()
    return cache_dir / key[:2] / f"{key}.jpg"


def load_thumbnail(path: str, size: int, cache_dir: Path | None) -> tuple[bytes, int, int] | None:
    """Decode a photo straight to thumbnail size with Pillow (JPEG draft mode, EXIF orientation) and cache it
    on disk. Returns RGB bytes and the size, or None. Runs in worker threads, so it makes no Qt calls."""
    from PIL import Image

    from photosearch.model.preprocess import open_image

    cached = thumbnail_cache_path(cache_dir, path, size) if cache_dir else None
    if cached is not None and cached.is_file():
        try:
            with Image.open(cached) as im:
                im = im.convert("RGB")
                return im.tobytes(), im.width, im.height
        except OSError:
            pass
    try:
        im = open_image(path, min_side=size)
    except Exception:  # noqa: BLE001 - a vanished or broken photo just gets no thumbnail
        return None
    im.thumbnail((size, size), Image.Resampling.BILINEAR)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(".tmp")
        try:
            im.save(tmp, "JPEG", quality=85)
            os.replace(tmp, cached)
        except OSError:
            pass
    return im.tobytes(), im.width, im.height


class _ThumbJob(QRunnable):
    def __init__(self, loader: ThumbnailLoader, path: str, size: int):
        super().__init__()
        self.loader, self.path, self.size = loader, path, size

    def run(self) -> None:
        try:
            raw = load_thumbnail(self.path, self.size, self.loader.cache_dir)
        except Exception:  # noqa: BLE001
            raw = None
        self.loader._raw.emit(self.path, self.size, raw)


class ThumbnailLoader(QObject):
    """Decodes thumbnails on a thread pool; ``loaded`` is delivered to the UI thread as a QImage."""

    loaded = Signal(str, int, QImage)
    _raw = Signal(str, int, object)  # from worker threads: RGB bytes + size, or None

    def __init__(self, cache_dir: Path | None, threads: int = 1):
        super().__init__()
        self.cache_dir = cache_dir
        self.pool = QThreadPool()
        self.pool.setMaxThreadCount(threads)
        self.pool.setThreadPriority(QThread.Priority.LowPriority)  # the UI thread wins the CPU while scrolling
        self._queued: set[tuple[str, int]] = set()
        self._raw.connect(self._to_qimage)  # queued: runs on the UI thread, where the loader lives

    @Slot(str, int, object)
    def _to_qimage(self, path: str, size: int, raw) -> None:
        self._queued.discard((path, size))
        img = QImage()
        if raw is not None:
            data, w, h = raw
            img = QImage(data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()
        self.loaded.emit(path, size, img)

    MAX_PENDING = 96  # about two screens of thumbnails; older requests are for photos scrolled past

    def request(self, path: str, size: int) -> None:
        if (path, size) in self._queued:
            return
        if len(self._queued) >= self.MAX_PENDING:
            self.pool.clear()  # drop queued (not started) jobs: the view asks again for what it still shows
            self._queued.clear()
        self._queued.add((path, size))
        self.pool.start(_ThumbJob(self, path, size))

    def clear_queue(self) -> None:
        self.pool.clear()
        self._queued.clear()
