"""Folder watching: debounced bursts, real inotify events, and the fallback when watches are refused."""

from __future__ import annotations

import errno
import threading
import time

from photosearch.library.watch import FolderWatcher
from tests.conftest import write_photo


def wait_for(cond, timeout=10.0) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def test_burst_of_events_becomes_one_pass():
    calls = []
    w = FolderWatcher(lambda: calls.append(time.time()), quiet_s=0.5, max_delay_s=30)
    try:
        for _ in range(10_000):
            w.poke("x.jpg")
        assert wait_for(lambda: len(calls) == 1)
        time.sleep(1.0)
        assert len(calls) == 1
    finally:
        w.stop()


def test_real_file_events_trigger_a_pass(tmp_path):
    fired = threading.Event()
    w = FolderWatcher(fired.set, quiet_s=0.3)
    try:
        w.watch([str(tmp_path)])
        write_photo(tmp_path / "new.jpg", 1)
        assert fired.wait(10)
        fired.clear()
        (tmp_path / "notes.txt").write_text("not a photo")  # ignored
        assert not fired.wait(1.0)
    finally:
        w.stop()


def test_watch_limit_falls_back_to_periodic_rescans(tmp_path, monkeypatch):
    from watchdog.observers import Observer

    def refuse(self, *a, **k):
        raise OSError(errno.ENOSPC, "inotify watch limit reached")

    monkeypatch.setattr(Observer, "schedule", refuse)
    messages, calls = [], []
    w = FolderWatcher(lambda: calls.append(1), messages.append, poll_interval_s=0.5)
    try:
        w.watch([str(tmp_path), str(tmp_path / "gone")])
        assert w.polling
        assert "watch limit" in messages[0] and "offline" in messages[0] and "instead" in messages[0]
        assert wait_for(lambda: len(calls) >= 2, timeout=5)  # periodic rescans keep the index current
    finally:
        w.stop()
