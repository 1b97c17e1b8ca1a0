"""The window's "why did this match" features, driven like a user: heatmap toggle, description, tags, duplicates."""

from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")

from PIL import Image
from PySide6.QtWidgets import QApplication

from photosearch.ui.insight import DuplicatesDialog
from photosearch.ui.main_window import PAGE_RESULTS
from tests.test_gui import ARTIFACTS, add_photos, open_window, screenshot


@pytest.fixture
def window(qtbot, tmp_path, tiny_checkpoint, monkeypatch):
    monkeypatch.setenv("PHOTOSEARCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PHOTOSEARCH_CONFIG", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    vocab = tmp_path / "config" / "vocabulary.txt"
    vocab.parent.mkdir(parents=True)
    vocab.write_text("a red car\na dog\nthe sea\na tree\na house\n")
    yield from open_window(qtbot, tmp_path, tiny_checkpoint)


def test_heatmap_toggle_and_description(window, qtbot, tmp_path):
    add_photos(window, qtbot, tmp_path / "photos", 6)
    qtbot.keyClicks(window.search, "a red car")
    qtbot.waitUntil(lambda: window.model.rowCount() == 6, timeout=10000)
    window.view.setCurrentIndex(window.model.index(0))
    qtbot.waitUntil(lambda: window.preview.describe_label.text().startswith("Looks like: ")
                    and "\u2026" not in window.preview.describe_label.text(), timeout=15000)
    phrases = window.preview.describe_label.text()[len("Looks like: "):].split(" \u00b7 ")
    assert len(phrases) == 5 and set(phrases) == {"a red car", "a dog", "the sea", "a tree", "a house"}
    window.preview.why.setChecked(True)
    qtbot.waitUntil(lambda: window.preview._heatmap is not None, timeout=30000)
    assert window.preview.heat_caption.text().startswith("Heatmap: Grad-CAM")
    shown = window.preview.image.pixmap().toImage()
    assert not shown.isNull()
    screenshot(window, "20-heatmap-preview", qtbot)
    # a new query explains the same photo again; switching off shows the plain photo
    first = window.preview._heatmap
    window.search.setText("the sea")
    window.run_search()
    qtbot.waitUntil(lambda: window.preview._heatmap is not None and window.preview._heatmap is not first,
                    timeout=30000)
    window.preview.why.setChecked(False)
    assert window.preview._heatmap is None and window.preview.heat_caption.text() == ""


def test_tags_dialog_tags_photos_and_tag_search(window, qtbot, tmp_path, monkeypatch):
    add_photos(window, qtbot, tmp_path / "photos", 6)
    dlg = window.tags_dialog()
    dlg.show()
    dlg.name.setText("sky")
    dlg.sensitivity.setCurrentText("loose")
    dlg.add()
    store = window.library.store
    qtbot.waitUntil(lambda: store.query("SELECT COUNT(*) FROM tag_scored")[0][0] == 6, timeout=30000)
    qtbot.waitUntil(lambda: dlg.status.text().startswith("Tags up to date: 6 photos scored"), timeout=10000)
    n_tagged = store.query("SELECT COUNT(*) FROM photo_tags WHERE tag='sky'")[0][0]
    assert dlg.list.count() == 1 and dlg.list.item(0).text().startswith(f"sky  ({n_tagged} photos)")
    dlg.name.setText("bad:name")
    from PySide6.QtWidgets import QMessageBox

    shown = []
    monkeypatch.setattr(QMessageBox, "warning", lambda *a, **k: shown.append(a[2]))  # no modal box in a test
    dlg.add()
    assert shown and "not a usable tag name" in shown[0]
    dlg.list.setCurrentRow(0)
    dlg._search()
    assert window.search.text() == "tag:sky"
    window.run_search()
    qtbot.waitUntil(lambda: window.stack.currentIndex() == PAGE_RESULTS or "No results" in
                    window.none_page.label.text(), timeout=10000)
    assert window.model.rowCount() == n_tagged
    dlg.grab().save(str(ARTIFACTS / "21-tags-dialog.png"))
    dlg.close()
    # new photos indexed while the app runs get the tag too
    window.search.setText("tag:nosuch")
    window.run_search()
    qtbot.waitUntil(lambda: "no tag 'nosuch'" in window.message.text(), timeout=10000)


def test_duplicates_dialog_trash_and_undo(window, qtbot, tmp_path):
    photos = tmp_path / "photos"
    paths = add_photos(window, qtbot, photos, 4)
    Image.open(paths[0]).resize((100, 75)).save(photos / "photo00 small.jpg")
    Image.open(paths[1]).save(photos / "photo01 copy.png")
    window.indexer.request()
    qtbot.waitUntil(lambda: window.library.store.counts()["photos"] == 6, timeout=30000)
    qtbot.waitUntil(lambda: window.indexer.state == "idle", timeout=30000)
    dlg = DuplicatesDialog(window.library, window.insight, window.thumbs, window)
    dlg.show()
    qtbot.waitUntil(lambda: dlg.summary.text().startswith("2 groups"), timeout=20000)
    assert sorted(len(g) for g in dlg.groups) == [2, 2]
    plan = dlg.planned()
    assert str(photos / "photo00 small.jpg") in plan and str(paths[0]) not in plan  # the largest is kept
    QApplication.processEvents()
    qtbot.wait(500)
    dlg.grab().save(str(ARTIFACTS / "22-duplicates-dialog.png"))
    dlg.trash_others()
    qtbot.waitUntil(lambda: dlg.summary.text().startswith("Moved 2 photos"), timeout=20000)
    assert not (photos / "photo00 small.jpg").exists() and dlg.undo_button.isEnabled()
    assert window.library.store.counts()["photos"] == 4
    dlg.worker.undo_trash()
    qtbot.waitUntil(lambda: dlg.summary.text().startswith("Put 2 photos back"), timeout=30000)
    assert (photos / "photo00 small.jpg").exists() and (photos / "photo01 copy.png").exists()
    qtbot.waitUntil(lambda: window.library.store.counts()["photos"] == 6, timeout=30000)
    dlg.close()


def test_exported_model_is_offered_in_settings_and_searched_with(window, qtbot, tmp_path, tiny_checkpoint,
                                                                  monkeypatch):
    """A model exported by `python -m training export` (into the user models folder) shows up in Settings;
    picking it builds its own index and searches with it."""
    import shutil

    from photosearch.ui.panes import SettingsDialog

    models = tmp_path / "models"
    shutil.copytree(tiny_checkpoint, models / "my-model")
    monkeypatch.setenv("PHOTOSEARCH_MODELS", str(models))
    add_photos(window, qtbot, tmp_path / "photos", 4)
    old_id = window.library.model.model_id
    dlg = SettingsDialog("default", "cpu", 1, str(window.library.folder), window)
    i = dlg.model_combo.findData("my-model")
    assert i > 0 and str(models / "my-model") in dlg.model_combo.itemText(i)
    dlg.model_combo.setCurrentIndex(i)
    values = dlg.values()
    assert values["model"] == "my-model"
    window.apply_settings(values)
    assert window.library.store.get_setting("model") == "my-model"
    qtbot.waitUntil(lambda: window.library.model.info.path == str(models / "my-model"), timeout=30000)
    qtbot.waitUntil(lambda: window.library.store.counts(window.library.model.model_id)["indexed"] >= 4,
                    timeout=30000)
    assert window.library.model.model_id == old_id  # same weights, so the same id: its index is reused
    window.search.setText("a red car")
    window.run_search()
    qtbot.waitUntil(lambda: window.model.rowCount() == 4, timeout=10000)
    again = SettingsDialog("my-model", "cpu", 1, str(window.library.folder), window)
    assert again.model_combo.currentData() == "my-model"


def test_duplicates_dialog_shows_many_groups_a_page_at_a_time(window, qtbot):
    from photosearch.search.engine import Result

    dlg = DuplicatesDialog(window.library, window.insight, window.thumbs, window)
    window.insight.duplicates_found.disconnect(dlg.show_groups)  # the empty library's own answer must not interfere
    groups = [[Result(f"/nowhere/g{n}-{i}.jpg", 1.0, 10 * n + i, width=100 + i, height=100, size=1000)
               for i in range(2)] for n in range(95)]
    dlg.show_groups(groups, 0.1)
    assert len(dlg.choices) == DuplicatesDialog.PAGE and not dlg.more_button.isHidden()
    assert len(dlg.planned()) == DuplicatesDialog.PAGE  # only what is shown is acted on
    dlg.more_button.click()
    dlg.more_button.click()
    assert len(dlg.choices) == 95 and dlg.more_button.isHidden()
    assert all(p.endswith("-0.jpg") for p in dlg.planned())  # the larger (…-1) of each pair is kept
    assert dlg.summary.text().startswith("95 groups, 95 photos that could go")
    dlg.close()
