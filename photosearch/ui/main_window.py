"""The main window: search bar, results grid, photo-query pane, preview, folders, live indexing status."""

from __future__ import annotations

import logging
import os
import time
from datetime import datetime

from PySide6.QtCore import QDate, QSettings, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QAction, QDesktopServices, QGuiApplication, QKeySequence, QPixmap, QShortcut
from PySide6.QtWidgets import (
    QComboBox,
    QDateEdit,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMainWindow,
    QMenu,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSlider,
    QSplitter,
    QStackedWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from photosearch.library import Library
from photosearch.library.watch import FolderWatcher
from photosearch.search import Filters, QueryError, Term, parse_query
from photosearch.search.query import split_tags
from photosearch.ui.insight import DuplicatesDialog, InsightWorker, TagsDialog, describe_text
from photosearch.ui.panes import FoldersDialog, PreviewPane, QueryPane, SettingsDialog, empty_state, plain_label
from photosearch.ui.results import ResultRole, ResultsModel, ResultsView
from photosearch.ui.workers import IndexWorker, SearchWorker, ThumbnailLoader

log = logging.getLogger(__name__)
RESULT_LIMIT = 500
PAGE_EMPTY, PAGE_RESULTS, PAGE_NONE = 0, 1, 2


class HistoryLineEdit(QLineEdit):
    """A search box with query history on the up/down arrows."""

    def __init__(self, history: list[str], parent=None):
        super().__init__(parent)
        self.history = history
        self._pos = len(history)

    def remember(self, text: str) -> None:
        text = text.strip()
        if text and (not self.history or self.history[-1] != text):
            self.history.append(text)
            del self.history[:-100]
        self._pos = len(self.history)

    def keyPressEvent(self, event) -> None:
        if event.key() == Qt.Key.Key_Up and self.history:
            self._pos = max(0, self._pos - 1)
            self.setText(self.history[self._pos])
        elif event.key() == Qt.Key.Key_Down and self.history:
            self._pos = min(len(self.history), self._pos + 1)
            self.setText(self.history[self._pos] if self._pos < len(self.history) else "")
        else:
            super().keyPressEvent(event)


class MainWindow(QMainWindow):
    status_message = Signal(str)  # thread-safe route to the status bar (watcher callbacks)

    def __init__(self, library: Library, settings: QSettings, watch: bool = True):
        super().__init__()
        self.library = library
        self.settings = settings
        self.setWindowTitle("photosearch")
        self.resize(1200, 780)
        self._request_id = 0
        self._last_search = 0.0
        self._failed_files: list[tuple[str, str]] = []
        self._closed = False
        self._tags: tuple[str, ...] = ()  # tag:NAME filters of the current query
        self._no_tags: tuple[str, ...] = ()
        self._insight_id = 0

        # workers
        self.thumbs = ThumbnailLoader(library.folder / "thumbnails")
        self.indexer = IndexWorker(library)
        self.searcher = SearchWorker(library)
        self.insight = InsightWorker(library)
        self.watcher = FolderWatcher(self.indexer.request, self.status_message.emit) if watch else None

        # search bar
        history = [h for h in (settings.value("history", []) or []) if isinstance(h, str)]
        self.search = HistoryLineEdit(history)
        self.search.setPlaceholderText("Describe a photo: \u201cdog on a beach at sunset\u201d \u2014 or drop a photo on the left")
        self.search.setClearButtonEnabled(True)
        self.sort = QComboBox()
        self.sort.addItems(["Relevance", "Date"])
        self.min_score = QSlider(Qt.Orientation.Horizontal)
        self.min_score.setRange(0, 100)
        self.min_score.setFixedWidth(110)
        self.min_score_label = QLabel("min score 0.00")
        self.folder_filter = QComboBox()
        self.date_from, self.date_to = QDateEdit(), QDateEdit()
        for d in (self.date_from, self.date_to):
            d.setCalendarPopup(True)
            d.setDisplayFormat("yyyy-MM-dd")
            d.setMinimumDate(QDate(1900, 1, 1))
            d.setSpecialValueText("any")
            d.setDate(d.minimumDate())
        folders_button = QPushButton("Folders\u2026")
        settings_button = QToolButton()
        settings_button.setText("Settings")
        bar = QHBoxLayout()
        bar.addWidget(self.search, 4)
        bar.addWidget(QLabel("Sort"))
        bar.addWidget(self.sort)
        bar.addWidget(self.min_score_label)
        bar.addWidget(self.min_score)
        bar.addWidget(self.folder_filter, 1)
        bar.addWidget(QLabel("from"))
        bar.addWidget(self.date_from)
        bar.addWidget(QLabel("to"))
        bar.addWidget(self.date_to)
        tools_button = QToolButton()
        tools_button.setText("Tools")
        tools_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        tools = QMenu(tools_button)
        tools.addAction("Auto-tags\u2026", self.edit_tags).setToolTip(
            "Define tags like beach, receipt or cat; search them with tag:NAME")
        tools.addAction("Duplicates\u2026", self.show_duplicates).setToolTip(
            "Find near-duplicate photos and move the extra copies to the trash")
        tools.addAction("Edit describe vocabulary\u2026", self.edit_vocabulary)
        tools.setToolTipsVisible(True)
        tools_button.setMenu(tools)
        self.tools_menu = tools
        self.search.setMinimumWidth(320)
        bar.addWidget(folders_button)
        bar.addWidget(tools_button)
        bar.addWidget(settings_button)

        # centre: query pane | results stack | preview
        self.query_pane = QueryPane(self.thumbs)
        self.model = ResultsModel(self.thumbs)
        self.view = ResultsView()
        self.view.setModel(self.model)
        self.stack = QStackedWidget()
        empty, add_button = empty_state("Add a folder to start.\nphotosearch indexes your photos on this computer "
                                        "and never uploads anything.", "Add a folder\u2026")
        self.none_page, _ = empty_state("")
        self.stack.addWidget(empty)
        self.stack.addWidget(self.view)
        self.stack.addWidget(self.none_page)
        self.preview = PreviewPane()
        self.splitter = QSplitter()
        self.splitter.addWidget(self.query_pane)
        self.splitter.addWidget(self.stack)
        self.splitter.addWidget(self.preview)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setSizes([220, 720, 280])

        central = QWidget()
        lay = QVBoxLayout(central)
        lay.addLayout(bar)
        lay.addWidget(self.splitter, 1)
        self.setCentralWidget(central)

        # status bar: message, progress, pause/resume, cancel
        self.message = plain_label()
        self.message.setWordWrap(False)
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(260)
        self.progress.setVisible(False)
        self.pause_button = QPushButton("Pause")
        self.cancel_button = QPushButton("Stop")
        self.problems_button = QPushButton("")
        for b in (self.pause_button, self.cancel_button, self.problems_button):
            b.setVisible(False)
        sb = self.statusBar()
        sb.addWidget(self.message, 1)
        sb.addPermanentWidget(self.problems_button)
        sb.addPermanentWidget(self.progress)
        sb.addPermanentWidget(self.pause_button)
        sb.addPermanentWidget(self.cancel_button)

        # debounce typing
        self.debounce = QTimer(self)
        self.debounce.setSingleShot(True)
        self.debounce.setInterval(300)
        self.debounce.timeout.connect(self.run_search)

        # wiring
        self.search.textChanged.connect(lambda _t: self.debounce.start())
        self.search.returnPressed.connect(self._enter)
        self.sort.currentIndexChanged.connect(lambda _i: self.run_search())
        self.min_score.valueChanged.connect(self._min_score_changed)
        self.folder_filter.currentIndexChanged.connect(lambda _i: self.run_search())
        self.date_from.dateChanged.connect(lambda _d: self.run_search())
        self.date_to.dateChanged.connect(lambda _d: self.run_search())
        folders_button.clicked.connect(self.edit_folders)
        self.preview.why.toggled.connect(self._why_toggled)
        self.insight.heatmap_ready.connect(self._heatmap_ready)
        self.insight.described.connect(self._described)
        self.insight.failed.connect(self._insight_failed)
        self.insight.tags_applied.connect(self._tags_applied)
        settings_button.clicked.connect(self.edit_settings)
        if add_button:
            add_button.clicked.connect(self.edit_folders)
        self.query_pane.photo_changed.connect(lambda _p: self.run_search())
        self.query_pane.problem.connect(self.show_message)
        self.view.selectionModel().currentChanged.connect(self._selected)
        self.view.doubleClicked.connect(lambda _i: self.preview.open_photo())
        self.view.customContextMenuRequested.connect(self._context_menu)
        self.preview.find_similar.connect(self.find_similar)
        self.thumbs.loaded.connect(self._thumb_loaded)
        self.indexer.progress.connect(self._index_progress)
        self.indexer.finished.connect(self._index_finished)
        self.indexer.failed.connect(self.show_message)
        self.indexer.state_changed.connect(self._index_state)
        self.pause_button.clicked.connect(self._toggle_pause)
        self.cancel_button.clicked.connect(self.indexer.cancel)
        self.problems_button.clicked.connect(self._show_problems)
        self.searcher.results.connect(self._results)
        self.searcher.failed.connect(self._search_failed)
        self.searcher.model_ready.connect(self._model_ready)
        self.status_message.connect(self.show_message)

        # keyboard
        QShortcut(QKeySequence.StandardKey.Find, self, activated=self.focus_search)
        QShortcut(QKeySequence.StandardKey.Paste, self, activated=self.paste)
        QShortcut(QKeySequence(Qt.Key.Key_Escape), self, activated=self.clear_query)
        for key, slot in ((Qt.Key.Key_Space, self.toggle_preview), (Qt.Key.Key_Return, self.preview.open_photo),
                          (Qt.Key.Key_Enter, self.preview.open_photo)):
            sc = QShortcut(QKeySequence(key), self.view, activated=slot)
            sc.setContext(Qt.ShortcutContext.WidgetShortcut)  # only while the grid has focus
        act = QAction("Quit", self)
        act.setShortcut(QKeySequence.StandardKey.Quit)
        act.triggered.connect(self.close)
        self.addAction(act)

        self._restore()
        self.refresh_folders()

    # -- state ---------------------------------------------------------------------------------------
    def _restore(self) -> None:
        geo = self.settings.value("geometry")
        if geo is not None:
            self.restoreGeometry(geo)
        split = self.settings.value("splitter")
        if split is not None:
            self.splitter.restoreState(split)
        last = self.settings.value("last_query", "")
        if isinstance(last, str) and last:
            self.search.blockSignals(True)
            self.search.setText(last)
            self.search.blockSignals(False)

    def start(self) -> None:
        """After the window is visible: load the model in the background, reconcile with disk, watch folders."""
        from PySide6.QtCore import QMetaObject

        QMetaObject.invokeMethod(self.searcher, "warm_up", Qt.ConnectionType.QueuedConnection)
        if self.library.store.folders():
            self.indexer.request()
        if self.search.text().strip():
            self.run_search()

    def closeEvent(self, event) -> None:
        self._closed = True  # signals still queued from the workers must not touch the closed library
        self.debounce.stop()
        self.settings.setValue("geometry", self.saveGeometry())
        self.settings.setValue("splitter", self.splitter.saveState())
        self.settings.setValue("last_query", self.search.text())
        self.settings.setValue("history", self.search.history)
        self.settings.sync()
        if self.watcher:
            self.watcher.stop()
        self.indexer.stop()
        self.searcher.stop()
        self.insight.stop()
        self.thumbs.pool.waitForDone(3000)
        self.library.close()
        super().closeEvent(event)

    def refresh_folders(self) -> None:
        folders = self.library.store.folders()
        current = self.folder_filter.currentData()
        self.folder_filter.blockSignals(True)
        self.folder_filter.clear()
        self.folder_filter.addItem("All folders", None)
        for f in folders:
            self.folder_filter.addItem(("" if f.online else "(offline) ") + f.path, f.path)
        idx = self.folder_filter.findData(current)
        self.folder_filter.setCurrentIndex(max(0, idx))
        self.folder_filter.blockSignals(False)
        if self.watcher:
            self.watcher.watch([f.path for f in folders])
        if not folders:
            self.stack.setCurrentIndex(PAGE_EMPTY)
        elif self.stack.currentIndex() == PAGE_EMPTY:
            self._show_none("Type what you remember, or drop a photo on the left.")

    def _model_ready(self, name: str) -> None:
        if not self.message.text():
            self.show_message(f"Model ready: {name}")

    def show_message(self, text: str) -> None:
        self.message.setText(text)

    def _show_none(self, text: str) -> None:
        self.none_page.label.setText(text)
        self.stack.setCurrentIndex(PAGE_NONE)

    # -- searching -----------------------------------------------------------------------------------
    def current_terms(self) -> list[Term]:
        text, self._tags, self._no_tags = split_tags(self.search.text().strip())
        terms = parse_query(text) if text.strip(" +") else []
        if self.query_pane.photo is not None:
            terms.insert(0, Term("image", self.query_pane.photo))
        return terms

    def current_filters(self) -> Filters:
        def ts(edit: QDateEdit, end: bool) -> float | None:
            d = edit.date()
            if d == edit.minimumDate():
                return None
            d = d.addDays(1) if end else d
            return datetime(d.year(), d.month(), d.day()).timestamp()

        score = self.min_score.value() / 100.0
        return Filters(folder=self.folder_filter.currentData(), date_from=ts(self.date_from, False),
                       date_to=ts(self.date_to, True), min_score=score if score > 0 else None,
                       tags=self._tags, exclude_tags=self._no_tags)

    def run_search(self) -> None:
        self.debounce.stop()
        if self._closed:
            return
        if not self.library.store.folders():
            self.stack.setCurrentIndex(PAGE_EMPTY)
            return
        try:
            terms = self.current_terms()
        except QueryError as e:
            self.show_message(str(e))
            return
        if not terms and not self._tags:
            self.model.set_results([])
            self._show_none("Type what you remember, or drop a photo on the left.")
            return
        self._request_id += 1
        self._last_search = time.monotonic()
        sort = "date" if self.sort.currentIndex() == 1 else "relevance"
        self.searcher.submit(self._request_id, terms, RESULT_LIMIT, self.current_filters(), sort)

    def _enter(self) -> None:
        self.search.remember(self.search.text())
        self.run_search()

    def _results(self, request_id: int, results: list, info: str) -> None:
        if self._closed:
            return
        if request_id != self._request_id:
            return
        self.model.set_results(results)
        if self.preview.why.isChecked() and self.preview.result is not None:
            self._request_heatmap()  # the query changed: explain the shown photo for the new one
        if results:
            self.stack.setCurrentIndex(PAGE_RESULTS)
            self.view.scrollToTop()
            self.show_message(info)
        else:
            counts = self.library.store.counts()
            hint = ("Nothing matches these filters: try widening the dates, another folder or a lower minimum score."
                    if counts["photos"] else "No photos indexed yet: they appear here as indexing progresses.")
            self._show_none("No results.\n" + hint)

    def _search_failed(self, request_id: int, message: str) -> None:
        if request_id in (0, self._request_id):
            self.show_message(message)

    def find_similar(self, path: str) -> None:
        self.query_pane.set_photo(path)

    def paste(self) -> None:
        if self.search.hasFocus() and QGuiApplication.clipboard().mimeData().hasText() \
                and not QGuiApplication.clipboard().mimeData().hasImage():
            self.search.paste()
            return
        self.query_pane.take(QGuiApplication.clipboard().mimeData())

    def focus_search(self) -> None:
        self.search.setFocus()
        self.search.selectAll()

    def clear_query(self) -> None:
        self.search.clear()
        self.query_pane.clear()

    def toggle_preview(self) -> None:
        self.preview.setVisible(not self.preview.isVisible())

    def _min_score_changed(self, v: int) -> None:
        self.min_score_label.setText(f"min score {v / 100:.2f}")
        self.debounce.start()

    # -- selection and preview ------------------------------------------------------------------------
    def _selected(self, current, _previous) -> None:
        result = current.data(ResultRole) if current.isValid() else None
        self.preview.show_result(result)
        if result is not None:
            self.thumbs.request(result.path, 512)
            self._insight_id += 1
            self.preview.describe_label.setText("Looks like: \u2026")  # the first one encodes the vocabulary
            self.insight.describe(self._insight_id, result.photo_id, result.path)
            if self.preview.why.isChecked():
                self._request_heatmap()

    # -- why this match, describe, tags, duplicates ---------------------------------------------------
    def _request_heatmap(self) -> None:
        result = self.preview.result
        if result is None:
            return
        try:
            terms = self.current_terms()
        except QueryError as e:
            self.preview.show_heatmap(None, str(e))
            return
        if not terms:
            self.preview.show_heatmap(None, "No query to explain: type one or drop a photo.")
            return
        self._insight_id += 1
        self.preview.show_heatmap(None, "Working out which parts matched\u2026")
        self.insight.explain(self._insight_id, result.path, terms)

    def _why_toggled(self, on: bool) -> None:
        if on:
            self._request_heatmap()
        else:
            self.preview.show_heatmap(None, "")

    def _heatmap_ready(self, request_id: int, image, caption: str) -> None:
        if not self._closed and request_id == self._insight_id and self.preview.why.isChecked():
            self.preview.show_heatmap(image, caption)

    def _described(self, request_id: int, top, tags) -> None:
        if not self._closed and request_id <= self._insight_id and self.preview.result is not None:
            self.preview.describe_label.setText(describe_text(top, tags))

    def _insight_failed(self, request_id: int, message: str) -> None:
        if self._closed:
            return
        if request_id == self._insight_id:
            self.preview.show_heatmap(None, message)
        elif request_id == 0:
            self.show_message(message)

    def _tags_applied(self, report) -> None:
        if not self._closed and report.photos and (self._tags or self._no_tags):
            self.run_search()

    def tags_dialog(self) -> TagsDialog:
        dlg = TagsDialog(self.library, self.insight, self)
        dlg.search_tag.connect(lambda name: self.search.setText(f'tag:"{name}"' if " " in name else f"tag:{name}"))
        return dlg

    def edit_tags(self) -> None:
        self.tags_dialog().exec()

    def edit_vocabulary(self) -> None:
        """Open the user's own describe vocabulary (a copy of the shipped one) in their text editor."""
        from photosearch.explain.describe import ensure_user_vocabulary

        try:
            path = ensure_user_vocabulary()
        except OSError as e:
            QMessageBox.warning(self, "Cannot create the vocabulary", str(e))
            return
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(path)))
        self.show_message(f"Editing {path}: one phrase per line; saved changes are used for the next photo described.")

    def show_duplicates(self) -> None:
        DuplicatesDialog(self.library, self.insight, self.thumbs, self).exec()

    def _thumb_loaded(self, path: str, size: int, image) -> None:
        if size == 512 and self.preview.result is not None and self.preview.result.path == path:
            self.preview.show_result(self.preview.result, QPixmap.fromImage(image) if not image.isNull() else None)

    def _context_menu(self, pos) -> None:
        idx = self.view.indexAt(pos)
        if not idx.isValid():
            return
        result = idx.data(ResultRole)
        menu = QMenu(self)
        menu.addAction("Find similar", lambda: self.find_similar(result.path))
        menu.addAction("Open", self.preview.open_photo)
        menu.addAction("Show in folder", self.preview.show_in_folder)
        menu.addAction("Copy path", self.preview.copy_path)
        self.view.setCurrentIndex(idx)
        menu.exec(self.view.viewport().mapToGlobal(pos))

    # -- folders, settings ----------------------------------------------------------------------------
    def edit_folders(self) -> None:
        folders = [(f.path, f.excludes, f.online) for f in self.library.store.folders()]
        dlg = FoldersDialog(folders, self)
        if dlg.exec():
            self.apply_folders(dlg.result_folders())

    def apply_folders(self, wanted: dict[str, list[str]]) -> None:
        current = {f.path: f for f in self.library.store.folders()}
        for path in set(current) - set(wanted):
            self.library.remove_folder(path)
        for path, excludes in wanted.items():
            try:
                self.library.add_folder(path, excludes)
            except (OSError, ValueError) as e:
                QMessageBox.warning(self, "Cannot add folder", str(e))
        self.refresh_folders()
        self.indexer.request()

    def edit_settings(self) -> None:
        s = self.settings
        dlg = SettingsDialog(str(self.library.store.get_setting("model", "default")), str(s.value("device", "auto")),
                             int(s.value("threads", max(1, (os.cpu_count() or 2)))), str(self.library.folder), self)
        if dlg.exec():
            self.apply_settings(dlg.values())

    def apply_settings(self, values: dict) -> None:
        s = self.settings
        s.setValue("device", values["device"])
        s.setValue("threads", values["threads"])
        s.setValue("library", values["library"])
        if values["model"] != self.library.store.get_setting("model", "default"):
            from photosearch.model import load_model

            spec, device = values["model"], values["device"]
            self.library.store.set_setting("model", spec)
            self.library.set_model(lambda: load_model(spec, device=device))
            self.show_message(f"Switching to model {spec}: its index is built in the background.")
            self.indexer.request()
            from PySide6.QtCore import QMetaObject

            QMetaObject.invokeMethod(self.searcher, "warm_up", Qt.ConnectionType.QueuedConnection)

    # -- indexing status ------------------------------------------------------------------------------
    def _index_state(self, state: str) -> None:
        if self._closed:
            return
        busy = state != "idle"
        self.progress.setVisible(busy)
        self.pause_button.setVisible(busy)
        self.cancel_button.setVisible(busy)
        self.pause_button.setText("Resume" if state == "paused" else "Pause")

    def _toggle_pause(self) -> None:
        if self.indexer.state == "paused":
            self.indexer.resume()
        else:
            self.indexer.pause()

    def _index_progress(self, p) -> None:
        if self._closed:
            return
        if p.phase == "scanning":
            self.progress.setRange(0, 0)
            self.show_message("Looking for new and changed photos\u2026")
            return
        if p.phase != "indexing" or not p.total:
            return
        self.progress.setRange(0, p.total)
        self.progress.setValue(p.done)
        eta = f", about {int(p.eta_s // 60)} min {int(p.eta_s % 60)} s left" if p.eta_s else ""
        self.show_message(f"Indexing {p.done:,} of {p.total:,} photos ({p.rate:.1f}/s{eta})")
        if self.search.text().strip() or self.query_pane.photo is not None:
            if time.monotonic() - self._last_search > 3.0:
                self.run_search()  # searching while indexing sees what is indexed so far

    def _index_finished(self, report) -> None:
        if self._closed:
            return
        self._failed_files = list(report.failed)
        parts = [f"{report.indexed:,} photos indexed" if report.indexed else "Library up to date"]
        if report.moved:
            parts.append(f"{report.moved} moved")
        if report.removed:
            parts.append(f"{report.removed} removed")
        if report.offline:
            parts.append("offline: " + ", ".join(report.offline))
        if report.cancelled:
            parts.append("stopped (resumes next time)")
        self.show_message("; ".join(parts))
        total_failed = self.library.store.counts()["failed"]
        self.problems_button.setVisible(total_failed > 0)
        self.problems_button.setText(f"{total_failed} files could not be read")
        self.refresh_folders_state()
        if report.indexed or report.copied:
            self.insight.apply_tags()  # new photos get the library's auto-tags (only they are scored)
        if self.search.text().strip() or self.query_pane.photo is not None:
            self.run_search()

    def refresh_folders_state(self) -> None:
        offline = [f.path for f in self.library.store.folders() if not f.online]
        for i in range(1, self.folder_filter.count()):
            path = self.folder_filter.itemData(i)
            self.folder_filter.setItemText(i, ("(offline) " if path in offline else "") + path)

    def _show_problems(self) -> None:
        rows = self.library.store.failures(200)
        text = "\n".join(f"{p}\n    {r}" for p, r in rows)
        box = QMessageBox(self)
        box.setWindowTitle("Files that could not be indexed")
        box.setTextFormat(Qt.TextFormat.PlainText)
        box.setText(f"{len(rows)} files were skipped. They are retried when they change.")
        box.setDetailedText(text)
        box.exec()

