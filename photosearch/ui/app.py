"""Start the desktop app: the window shows at once; the model loads in the background."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def settings_path() -> Path:
    from photosearch import config_dir

    return config_dir() / "settings.ini"


def run_app(library_dir: Path | None = None, model: str | None = None, device: str | None = None,
            argv: list[str] | None = None) -> int:
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication, QMessageBox

    from photosearch.library import StoreError, default_library_dir
    from photosearch.ui.main_window import MainWindow

    app = QApplication.instance() or QApplication(argv or sys.argv[:1])
    app.setApplicationName("photosearch")
    app.setOrganizationName("photosearch")
    from photosearch.model import resources_dir

    icon = resources_dir() / "icons" / "photosearch.png"
    if icon.is_file():
        from PySide6.QtGui import QIcon

        app.setWindowIcon(QIcon(str(icon)))
    settings = QSettings(str(settings_path()), QSettings.Format.IniFormat)
    folder = library_dir or (Path(str(settings.value("library"))) if settings.value("library") else None) \
        or default_library_dir()
    device = device or str(settings.value("device", "auto"))
    threads = settings.value("threads")
    if threads:
        try:
            # ONNX Runtime sessions (the default, torch-free path) read this when they are created
            os.environ["PHOTOSEARCH_THREADS"] = str(int(threads))
            from photosearch.model import torch_available

            if torch_available():
                import torch

                torch.set_num_threads(int(threads))
        except (ImportError, ValueError):
            pass
    try:
        library = make_library(folder, model, device)
    except StoreError as e:
        QMessageBox.critical(None, "photosearch", str(e))
        return 1
    window = MainWindow(library, settings)
    window.show()
    if os.environ.get("PHOTOSEARCH_PROBE"):
        _install_probe(app, window)
    window.start()
    return app.exec()


def _install_probe(app, window) -> None:
    """Start-up timing for bench/bench_ui.py: prints when the window is visible and when the first results of
    $PHOTOSEARCH_PROBE_QUERY arrive (then quits)."""
    import time

    app.processEvents()
    print(f"probe window-visible {time.time():.3f}", flush=True)
    query = os.environ.get("PHOTOSEARCH_PROBE_QUERY")
    if not query:
        return

    from PySide6.QtCore import QObject, Slot

    class Probe(QObject):  # lives on the UI thread, so the results signal is delivered there (queued)
        @Slot(int, object, str)
        def done(self, _rid, results, _info) -> None:
            print(f"probe first-result {time.time():.3f} {len(results)}", flush=True)
            window.close()
            app.quit()

    window._probe = Probe()
    window.searcher.results.connect(window._probe.done)
    window.search.setText(query)
    window.run_search()


def make_library(folder: Path, model: str | None, device: str):
    from photosearch.library import Library
    from photosearch.library.store import Store
    from photosearch.model import load_model

    spec = model
    if spec is None:
        store = Store(folder)
        spec = store.get_setting("model", "default")
        store.close()
    lib = Library(folder, lambda: load_model(spec, device=device))
    if model is not None:
        lib.store.set_setting("model", str(Path(model).absolute()) if os.path.isdir(model) else model)
    return lib
