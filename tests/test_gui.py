"""The real window on the offscreen platform, driven like a user: type, drop, paste, watch folders, pause."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import QByteArray, QMimeData, QPointF, QSettings, Qt, QUrl
from PySide6.QtGui import QDropEvent, QGuiApplication, QImage

from photosearch.library import Library
from photosearch.model import load_model
from photosearch.ui.main_window import PAGE_EMPTY, PAGE_NONE, PAGE_RESULTS, MainWindow
from photosearch.ui.results import ResultRole
from tests.conftest import write_photo

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


def screenshot(window, name: str, qtbot=None) -> None:
    if qtbot is not None and window.model.rowCount():  # let the visible thumbnails arrive first
        want = min(window.model.rowCount(), 6)
        qtbot.waitUntil(lambda: len(window.model._pixmaps) >= want, timeout=15000)
    ARTIFACTS.mkdir(exist_ok=True)
    window.grab().save(str(ARTIFACTS / f"{name}.png"))


@pytest.fixture
def window(qtbot, tmp_path, tiny_checkpoint):
    yield from open_window(qtbot, tmp_path, tiny_checkpoint)


def open_window(qtbot, tmp_path: Path, checkpoint: Path):
    """The real window on a library in tmp_path with a tiny model, shown and started; closed afterwards."""
    lib = Library(tmp_path / "lib", lambda: load_model(checkpoint, device="cpu", image_backend="torch"))
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    w = MainWindow(lib, settings)
    if w.watcher:
        w.watcher.quiet_s = 0.3
    qtbot.addWidget(w)
    w.resize(1200, 780)
    w.show()
    w.start()
    yield w
    w.close()


def add_photos(window, qtbot, folder: Path, n: int = 12) -> list[Path]:
    paths = [write_photo(folder / f"photo{i:02d}.jpg", i, size=(200, 150)) for i in range(n)]
    window.apply_folders({str(folder): []})
    qtbot.waitUntil(lambda: window.library.store.counts(window.library.model.model_id)["indexed"] >= n, timeout=30000)
    qtbot.waitUntil(lambda: window.indexer.state == "idle", timeout=30000)
    return paths


def results_paths(window) -> list[str]:
    return [window.model.index(i).data(ResultRole).path for i in range(window.model.rowCount())]


def test_first_run_then_typing_shows_results(window, qtbot, tmp_path):
    assert window.stack.currentIndex() == PAGE_EMPTY
    screenshot(window, "01-first-run")
    add_photos(window, qtbot, tmp_path / "photos")
    qtbot.keyClicks(window.search, "a red car")
    qtbot.waitUntil(lambda: window.model.rowCount() == 12, timeout=10000)
    assert window.stack.currentIndex() == PAGE_RESULTS
    window.view.setCurrentIndex(window.model.index(0))
    qtbot.waitUntil(lambda: window.preview.result is not None)
    assert window.preview.info.text().startswith("photo")
    screenshot(window, "02-text-results", qtbot)
    qtbot.keyClick(window.search, Qt.Key.Key_Return)
    assert window.search.history[-1] == "a red car"


def drop(window, mime: QMimeData) -> None:
    pane = window.query_pane
    ev = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                    Qt.KeyboardModifier.NoModifier)
    pane.dropEvent(ev)


def test_drop_file_url_and_raw_image_data(window, qtbot, tmp_path):
    paths = add_photos(window, qtbot, tmp_path / "photos")
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(paths[5]))])
    drop(window, mime)
    qtbot.waitUntil(lambda: window.model.rowCount() > 0 and results_paths(window)[0] == str(paths[5]), timeout=10000)
    screenshot(window, "03-dropped-photo", qtbot)
    window.query_pane.clear()
    raw = QMimeData()
    raw.setData("image/png", QByteArray(open(write_photo(tmp_path / "x.png", 7, size=(200, 150)), "rb").read()))
    drop(window, raw)
    qtbot.waitUntil(lambda: window.model.rowCount() > 0 and results_paths(window)[0] == str(paths[7]), timeout=10000)
    # photo + text combine
    window.search.setText("at night")
    qtbot.waitUntil(lambda: "results" in window.message.text(), timeout=10000)


def test_paste_image_and_bad_drops(window, qtbot, tmp_path):
    paths = add_photos(window, qtbot, tmp_path / "photos")
    QGuiApplication.clipboard().setImage(QImage(str(paths[3])))
    window.view.setFocus()
    window.paste()
    qtbot.waitUntil(lambda: window.model.rowCount() > 0 and results_paths(window)[0] == str(paths[3]), timeout=10000)
    text_file = tmp_path / "notes.txt"
    text_file.write_text("hello")
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(text_file))])
    drop(window, mime)
    assert "not an image" in window.message.text()
    web = QMimeData()
    web.setUrls([QUrl("https://example.com/cat.jpg")])
    drop(window, web)
    assert "never downloads" in window.message.text()


def test_watched_folder_add_delete_and_corrupt_file(window, qtbot, tmp_path):
    folder = tmp_path / "photos"
    add_photos(window, qtbot, folder, n=4)
    window.search.setText("photo")
    qtbot.waitUntil(lambda: window.model.rowCount() == 4, timeout=10000)
    new = write_photo(tmp_path / "incoming.jpg", 42, size=(200, 150))
    shutil.move(new, folder / "new.jpg")
    qtbot.waitUntil(lambda: str(folder / "new.jpg") in results_paths(window), timeout=15000)
    (folder / "new.jpg").unlink()
    qtbot.waitUntil(lambda: str(folder / "new.jpg") not in results_paths(window), timeout=15000)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    qtbot.waitUntil(lambda: window.problems_button.isVisible(), timeout=15000)
    assert "1 files could not be read" in window.problems_button.text()
    assert window.model.rowCount() == 4
    screenshot(window, "04-watched-folder", qtbot)


def test_pause_resume_changes_worker_state(window, qtbot, tmp_path):
    folder = tmp_path / "many"
    for i in range(150):
        write_photo(folder / f"p{i:03d}.png", i, size=(64, 48))
    window.library.batch_size = 4
    window.apply_folders({str(folder): []})
    qtbot.waitUntil(lambda: window.indexer.state == "running", timeout=10000)
    window.pause_button.click()
    assert window.indexer.state == "paused" and window.pause_button.text() == "Resume"
    qtbot.wait(300)
    n = window.library.store.counts()["photos"]
    qtbot.wait(500)
    assert window.library.store.counts()["photos"] <= n + 4  # at most the batch in flight
    window.pause_button.click()
    assert window.indexer.state == "running"
    qtbot.waitUntil(lambda: window.indexer.state == "idle", timeout=60000)
    assert window.library.store.counts()["photos"] == 150


def test_file_names_render_as_plain_text(window, qtbot, tmp_path):
    folder = tmp_path / "odd"
    write_photo(folder / "<b>bold<img src=x>.jpg", 1, size=(120, 90))
    window.apply_folders({str(folder): []})
    qtbot.waitUntil(lambda: window.library.store.counts()["photos"] == 1, timeout=20000)
    window.search.setText("anything")
    qtbot.waitUntil(lambda: window.model.rowCount() == 1, timeout=10000)
    idx = window.model.index(0)
    assert idx.data(Qt.ItemDataRole.DisplayRole) == "<b>bold<img src=x>.jpg"
    assert "&lt;b&gt;" in idx.data(Qt.ItemDataRole.ToolTipRole)
    window.view.setCurrentIndex(idx)
    assert window.preview.info.textFormat() == Qt.TextFormat.PlainText
    assert "<b>bold<img src=x>.jpg" in window.preview.info.text()
    screenshot(window, "05-odd-name")


def test_no_results_state(window, qtbot, tmp_path):
    add_photos(window, qtbot, tmp_path / "photos", n=3)
    window.min_score.setValue(100)
    window.search.setText("anything")
    qtbot.waitUntil(lambda: window.stack.currentIndex() == PAGE_NONE and "No results" in window.none_page.label.text(),
                    timeout=10000)
    screenshot(window, "06-no-results")


def test_vanished_folder_is_marked_offline(window, qtbot, tmp_path):
    folder = tmp_path / "drive"
    add_photos(window, qtbot, folder, n=3)
    shutil.move(folder, tmp_path / "unplugged")
    window.indexer.request()
    qtbot.waitUntil(lambda: "(offline)" in window.folder_filter.itemText(1), timeout=15000)
    assert window.library.store.counts(window.library.model.model_id)["indexed"] == 3
    assert os.path.isdir(tmp_path / "unplugged")


def test_window_state_and_last_query_are_remembered(qtbot, tmp_path, tiny_checkpoint):
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)

    def open_window():
        lib = Library(tmp_path / "lib", lambda: load_model(tiny_checkpoint, device="cpu", image_backend="torch"))
        w = MainWindow(lib, settings, watch=False)
        qtbot.addWidget(w)
        w.show()
        return w

    w = open_window()
    w.resize(1000, 640)
    w.splitter.setSizes([150, 600, 250])
    size = (w.width(), w.height())
    w.search.setText("sunset at the beach")
    w.search.remember("sunset at the beach")
    sizes = w.splitter.sizes()
    w.close()
    w2 = open_window()
    assert w2.search.text() == "sunset at the beach"
    assert w2.search.history[-1] == "sunset at the beach"
    # (the offscreen platform clamps restored sizes to its virtual screen, so check what was stored)
    assert settings.value("geometry") is not None and size[1] == w2.height()
    assert (w2.splitter.sizes()[0], w2.splitter.sizes()[2]) == (sizes[0], sizes[2])  # side panes kept
    w2.close()


def test_thumbnails_of_any_shape_share_one_square_cell(window, qtbot, tmp_path):
    """The grid lays every item out like the first (uniform sizes); a tall photo after a wide one must not be
    drawn over its file name, so every thumbnail is centred on the same square."""
    from photosearch.ui.results import THUMB

    folder = tmp_path / "shapes"
    shapes = [(200, 150), (90, 300), (300, 300), (400, 60)]
    for i, size in enumerate(shapes):
        write_photo(folder / f"s{i}.jpg", i, size=size)
    window.apply_folders({str(folder): []})
    qtbot.waitUntil(lambda: window.library.store.counts(window.library.model.model_id)["indexed"] >= 4, timeout=30000)
    qtbot.waitUntil(lambda: window.indexer.state == "idle", timeout=30000)
    window.search.setText("photo")
    qtbot.waitUntil(lambda: window.model.rowCount() == 4, timeout=10000)
    for i in range(4):
        window.model.index(i).data(Qt.ItemDataRole.DecorationRole)  # asks for the thumbnail
    qtbot.waitUntil(lambda: len(window.model._pixmaps) == 4, timeout=10000)
    sizes = {(pm.width(), pm.height()) for pm in window.model._pixmaps.values()}
    assert sizes == {(THUMB, THUMB)}
    screenshot(window, "23-mixed-shapes")
