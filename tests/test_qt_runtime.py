"""Guards against Qt-binding regressions the app cannot survive."""

from __future__ import annotations

import sys

from PySide6.QtCore import QObject, Signal


class _Emitter(QObject):
    fired = Signal(int)


def test_signal_emit_keeps_reference_counts(qapp):
    """PySide6 6.12.0 dropped a reference to ``True`` on every ``Signal.emit`` (the app aborted after a few
    hundred thumbnails); the pinned version must not."""
    e = _Emitter()
    got = []
    e.fired.connect(got.append)
    before = sys.getrefcount(True)
    for i in range(5000):
        e.fired.emit(i)
    assert len(got) == 5000
    assert abs(sys.getrefcount(True) - before) < 50
