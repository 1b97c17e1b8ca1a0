"""The indexing pipeline: decode in worker threads while the model encodes, commit in small batches.

Decode workers read each file once (content hash + JPEG draft decode + EXIF + preprocessing); the calling
thread encodes batches and commits each batch in one SQLite transaction, then adds it to the in-memory index.
Progress goes to a callback; pause and cancel are honoured between batches. A file that fails is recorded
with its reason and skipped; it never stops the run.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import numpy as np

from photosearch.library.scan import FileEntry, read_metadata
from photosearch.model.errors import ImageDecodeError

if TYPE_CHECKING:
    from photosearch.model import EmbeddingModel
from photosearch.model.preprocess import open_image, resize_crop, to_array

log = logging.getLogger(__name__)


@dataclass
class Progress:
    phase: str  # "scanning" | "indexing" | "done" | "cancelled"
    done: int = 0
    total: int = 0
    rate: float = 0.0  # photos per second over the run so far
    eta_s: float | None = None
    current: str = ""
    failed: int = 0


ProgressCallback = Callable[[Progress], None]


class Control:
    """Pause / resume / cancel for a running job; checked between batches."""

    def __init__(self) -> None:
        self._run = threading.Event()
        self._run.set()
        self._cancel = threading.Event()

    def pause(self) -> None:
        self._run.clear()

    def resume(self) -> None:
        self._run.set()

    def cancel(self) -> None:
        self._cancel.set()
        self._run.set()

    def rearm(self) -> None:
        """Clear a previous cancel so the same control can drive the next job (pause state is kept)."""
        self._cancel.clear()

    @property
    def paused(self) -> bool:
        return not self._run.is_set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def checkpoint(self) -> bool:
        """Block while paused; False when the job should stop."""
        self._run.wait()
        return not self._cancel.is_set()


@dataclass
class Decoded:
    entry: FileEntry
    content_hash: str | None = None
    pixels: np.ndarray | None = None  # (3, H, W) float32
    meta: dict = field(default_factory=dict)
    error: str | None = None


def decode_file(entry: FileEntry, model: EmbeddingModel, want_pixels: bool = True) -> Decoded:
    """Read a file once: hash its bytes, decode (draft mode), read metadata and preprocess. Never raises."""
    import hashlib

    out = Decoded(entry)
    try:
        with open(entry.path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        out.error = "vanished before it could be read"
        return out
    except PermissionError:
        out.error = "permission denied"
        return out
    except OSError as e:
        out.error = f"cannot read: {e.strerror or e}"
        return out
    out.content_hash = hashlib.blake2b(data, digest_size=16).hexdigest()
    if not data:
        out.error = "empty file (0 bytes)"
        return out
    if not want_pixels:
        return out
    cfg = model.preprocess_config
    try:
        im = open_image(data, min_side=cfg.resize or cfg.size, background=tuple(cfg.background))
        from PIL import Image

        with Image.open(io.BytesIO(data)) as header:
            out.meta = read_metadata(header)
        out.pixels = to_array(resize_crop(im, cfg), cfg)
    except ImageDecodeError as e:
        out.error = str(e).replace("<" + f"{len(data)} bytes of image data" + ">", "file")
    except Exception as e:  # noqa: BLE001 - one bad file must never stop a run
        out.error = f"cannot be decoded ({type(e).__name__}: {e})"
    return out


def decode_ahead(
    entries: Iterable[FileEntry], model: EmbeddingModel, workers: int, lookahead: int
) -> Iterator[Decoded]:
    """Decode in a thread pool, yielding results in input order with at most ``lookahead`` in flight."""
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="decode")
    pending: deque[Future] = deque()
    try:
        it = iter(entries)
        for entry in it:
            pending.append(pool.submit(decode_file, entry, model))
            if len(pending) >= lookahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for f in pending:
            f.cancel()
        pool.shutdown(wait=False, cancel_futures=True)


class RateMeter:
    def __init__(self, total: int):
        self.total = total
        self.start = time.perf_counter()

    def progress(self, phase: str, done: int, current: str = "", failed: int = 0) -> Progress:
        elapsed = max(time.perf_counter() - self.start, 1e-6)
        rate = done / elapsed
        eta = (self.total - done) / rate if rate > 0 else None
        return Progress(phase, done, self.total, rate, eta, current, failed)
