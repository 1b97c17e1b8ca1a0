"""Live folder watching with watchdog: events are hints that trigger a cheap incremental rescan.

Events are debounced (a burst of 10,000 copied files becomes one pass, started once the burst has been quiet
for ``quiet_s``), a folder that disappears is reported (its photos are kept), and when the system refuses more
watches (Linux inotify limit) or an observer dies, watching falls back to periodic rescans and says so.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Callable, Iterable

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from photosearch.library.scan import is_image_name, is_skipped_name

log = logging.getLogger(__name__)


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: FolderWatcher):
        self.watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write") or (event.is_directory and event.event_type == "modified"):
            return  # a folder's own "modified" accompanies changes inside it, which are handled on their own
        paths = [event.src_path] + ([event.dest_path] if getattr(event, "dest_path", "") else [])
        for p in paths:
            p = os.fsdecode(p)
            name = os.path.basename(p)
            if event.is_directory or (is_image_name(name) and not is_skipped_name(name)):
                self.watcher.poke(p)
                return


class FolderWatcher:
    """Watch folders; call ``on_change()`` (from a background thread) after changes settle.

    ``on_status(message)`` reports degraded modes (polling fallback, offline folders)."""

    def __init__(self, on_change: Callable[[], None], on_status: Callable[[str], None] | None = None,
                 quiet_s: float = 1.0, max_delay_s: float = 10.0, poll_interval_s: float = 300.0):
        self.on_change = on_change
        self.on_status = on_status or (lambda m: None)
        self.quiet_s, self.max_delay_s, self.poll_interval_s = quiet_s, max_delay_s, poll_interval_s
        self.observer: Observer | None = None
        self.polling = False
        self._folders: list[str] = []
        self._first_event = 0.0
        self._last_event = 0.0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="watch-debounce", daemon=True)
        self._thread.start()

    def watch(self, folders: Iterable[str]) -> None:
        """(Re)start watching exactly these folders."""
        self._stop_observer()
        self._folders = [f for f in folders]
        self.polling = False
        observer = Observer()
        handler = _Handler(self)
        problems = []
        for f in self._folders:
            if not os.path.isdir(f):
                problems.append(f"{f} is offline")
                continue
            try:
                observer.schedule(handler, f, recursive=True)
            except OSError as e:  # inotify watch limit (ENOSPC), permission…
                self.polling = True
                problems.append(f"cannot watch {f} ({e.strerror or e})")
        try:
            observer.start()
        except OSError as e:
            self.polling = True
            problems.append(f"file watching unavailable ({e.strerror or e})")
        self.observer = observer
        if self.polling:
            problems.append(f"checking for changes every {int(self.poll_interval_s // 60)} min instead")
        if problems:
            self.on_status("; ".join(problems))

    def poke(self, path: str = "") -> None:
        now = time.monotonic()
        with self._lock:
            if not self._first_event:
                self._first_event = now
            self._last_event = now
        self._wake.set()

    def _loop(self) -> None:
        last_poll = time.monotonic()
        while not self._stop.is_set():
            self._wake.wait(timeout=0.25)
            self._wake.clear()
            now = time.monotonic()
            fire = False
            with self._lock:
                if self._first_event and (now - self._last_event >= self.quiet_s
                                          or now - self._first_event >= self.max_delay_s):
                    fire = True
                    self._first_event = 0.0
            if self.observer is not None and self._folders and not self.observer.is_alive() and not self.polling:
                self.polling = True
                self.on_status("file watching stopped; checking for changes periodically instead")
            if not fire and (self.polling or not self._folders) and now - last_poll >= self.poll_interval_s:
                fire = bool(self._folders)
            if fire:
                last_poll = now
                try:
                    self.on_change()
                except Exception:  # noqa: BLE001 - a failing callback must not kill the watcher
                    log.exception("change callback failed")

    def _stop_observer(self) -> None:
        if self.observer is not None:
            try:
                self.observer.stop()
                self.observer.join(timeout=5)
            except Exception:  # noqa: BLE001
                pass
            self.observer = None

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._stop_observer()
        self._thread.join(timeout=5)
