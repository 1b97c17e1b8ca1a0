"""Why did this match? Heatmaps, describe-this-photo, auto-tags and duplicates in the window.

All model work runs in :class:`InsightWorker`'s own thread; the dialogs only show results and send requests.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import datetime

from PySide6.QtCore import QObject, Qt, QThread, Signal, Slot
from PySide6.QtGui import QImage, QPixmap
from PySide6.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QRadioButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from photosearch.library import Library
from photosearch.search import Term
from photosearch.search.engine import DUPLICATE_THRESHOLD

log = logging.getLogger(__name__)


class InsightWorker(QObject):
    """Heatmaps, descriptions, tagging and duplicate grouping in one background thread."""

    heatmap_ready = Signal(int, object, str)  # request id, QImage overlay, caption
    described = Signal(int, object, object)  # request id, [(phrase, score, share)], [(tag, score)]
    tags_applied = Signal(object)  # TagReport
    duplicates_found = Signal(object, float)  # groups, seconds
    trashed = Signal(object, object)  # moved, problems
    restored = Signal(object, object)  # restored paths, problems
    failed = Signal(int, str)

    _explain = Signal(int, str, object, str)
    _describe = Signal(int, int, str)
    _apply = Signal()
    _dups = Signal(float)
    _trash = Signal(object)
    _undo = Signal()

    def __init__(self, library: Library):
        super().__init__()
        self.library = library
        self._explainer = None
        self._explainer_model = None
        self._vocab = None
        self._latest = {"explain": 0, "describe": 0}
        self._thread = QThread()
        self._thread.setObjectName("insight")
        self.moveToThread(self._thread)
        self._explain.connect(self._do_explain)
        self._describe.connect(self._do_describe)
        self._apply.connect(self._do_apply)
        self._dups.connect(self._do_duplicates)
        self._trash.connect(self._do_trash)
        self._undo.connect(self._do_undo)
        self._thread.start()

    # -- requests (any thread) -----------------------------------------------------------------------------
    def explain(self, request_id: int, path: str, terms: list[Term], method: str = "auto") -> None:
        self._latest["explain"] = request_id
        self._explain.emit(request_id, path, terms, method)

    def describe(self, request_id: int, photo_id: int, path: str) -> None:
        self._latest["describe"] = request_id
        self._describe.emit(request_id, photo_id, path)

    def apply_tags(self) -> None:
        self._apply.emit()

    def find_duplicates(self, threshold: float) -> None:
        self._dups.emit(threshold)

    def trash(self, paths: list[str]) -> None:
        self._trash.emit(paths)

    def undo_trash(self) -> None:
        self._undo.emit()

    def stop(self) -> None:
        self._thread.quit()
        self._thread.wait(10000)

    # -- work (worker thread) ------------------------------------------------------------------------------
    def explainer(self):
        from photosearch.explain.heatmap import Explainer

        model = self.library.model
        if self._explainer is None or self._explainer_model is not model:
            self._explainer = Explainer(model)  # loads a torch image tower on first use when the model is ONNX-only
            self._explainer_model = model
        return self._explainer

    def vocabulary(self):
        from photosearch.explain.describe import Vocabulary, vocabulary_path

        model = self.library.model
        path = vocabulary_path()
        stamp = (model.model_id, str(path), path.stat().st_mtime_ns if path.is_file() else 0)
        if self._vocab is None or self._vocab[0] != stamp:
            self._vocab = (stamp, Vocabulary.for_model(model, path=path))
        return self._vocab[1]

    @Slot(int, str, object, str)
    def _do_explain(self, request_id: int, path: str, terms: list[Term], method: str) -> None:
        if request_id != self._latest["explain"]:
            return
        try:
            from photosearch.explain.heatmap import render_overlay
            from photosearch.model.preprocess import open_image
            from photosearch.search.engine import encode_terms

            vec, visual = encode_terms(self.library.model, terms)
            hm = self.explainer().explain(path, vec, visual, method)
            if request_id != self._latest["explain"]:
                return
            overlay = render_overlay(open_image(path, min_side=512), hm, max_side=1024)
            img = QImage(overlay.tobytes(), overlay.width, overlay.height, 3 * overlay.width,
                         QImage.Format.Format_RGB888).copy()
            kind = {"grad-cam": "Grad-CAM", "grad-rollout": "attention rollout (gradient-weighted)",
                    "rollout": "attention rollout", "occlusion": "occlusion"}.get(hm.method, hm.method)
            self.heatmap_ready.emit(request_id, img, f"Heatmap: {kind}, {hm.seconds:.2f} s — bright = drove the match")
        except Exception as e:
            log.exception("heatmap failed")
            self.failed.emit(request_id, f"No heatmap: {e}")

    @Slot(int, int, str)
    def _do_describe(self, request_id: int, photo_id: int, path: str) -> None:
        if request_id != self._latest["describe"]:
            return
        try:
            from photosearch.explain.tags import tags_of

            model = self.library.model
            _, vecs = self.library.store.embeddings(model.model_id, [photo_id])
            vec = vecs[0] if len(vecs) else model.encode_images([path])[0]  # stored vector: no re-encoding
            top = self.vocabulary().describe(vec, 5)
            tags = tags_of(self.library.store, model.model_id, photo_id)
            if request_id == self._latest["describe"]:
                self.described.emit(request_id, top, tags)
        except Exception as e:  # noqa: BLE001
            log.warning("describe failed: %s", e)
            self.failed.emit(-request_id, f"No description: {e}")

    @Slot()
    def _do_apply(self) -> None:
        try:
            from photosearch.explain.tags import apply_tags

            self.tags_applied.emit(apply_tags(self.library))
        except Exception as e:
            log.exception("tagging failed")
            self.failed.emit(0, f"Auto-tags not updated: {e}")

    @Slot(float)
    def _do_duplicates(self, threshold: float) -> None:
        try:
            from photosearch.search import near_duplicate_groups

            t = time.perf_counter()
            groups = near_duplicate_groups(self.library, threshold)
            self.duplicates_found.emit(groups, time.perf_counter() - t)
        except Exception as e:
            log.exception("duplicate search failed")
            self.failed.emit(0, f"Duplicates not found: {e}")

    @Slot(object)
    def _do_trash(self, paths: list[str]) -> None:
        moved, problems = self.library.trash(paths)
        self.trashed.emit(moved, problems)

    @Slot()
    def _do_undo(self) -> None:
        restored, problems = self.library.undo_trash()
        self.restored.emit(restored, problems)


def _fmt_when(ts: float | None, path: str) -> str:
    if ts is None:
        try:
            ts = os.stat(path).st_mtime
        except OSError:
            return "date unknown"
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


class TagsDialog(QDialog):
    """The user's auto-tags: add (name, optional description, strictness), remove, search one."""

    search_tag = Signal(str)

    def __init__(self, library: Library, worker: InsightWorker, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Auto-tags")
        self.resize(520, 460)
        self.library = library
        self.worker = worker
        self.list = QListWidget()
        self.name = QLineEdit()
        self.name.setPlaceholderText("e.g. beach, receipt, screenshot, cat")
        self.prompt = QLineEdit()
        self.prompt.setPlaceholderText("optional: describe it, e.g. \u201ca paper shop receipt\u201d")
        self.sensitivity = QComboBox()
        self.sensitivity.addItems(["normal", "strict", "loose"])
        add = QPushButton("Add tag")
        add.clicked.connect(self.add)
        self.name.returnPressed.connect(self.add)
        remove = QPushButton("Remove")
        remove.clicked.connect(self.remove)
        show = QPushButton("Show photos")
        show.clicked.connect(self._search)
        self.list.itemDoubleClicked.connect(lambda _item: self._search())
        self.status = QLabel("")
        self.status.setTextFormat(Qt.TextFormat.PlainText)
        self.status.setWordWrap(True)
        form = QFormLayout()
        form.addRow("Tag", self.name)
        form.addRow("Description", self.prompt)
        form.addRow("Strictness", self.sensitivity)
        row = QHBoxLayout()
        row.addWidget(add)
        row.addStretch(1)
        row.addWidget(show)
        row.addWidget(remove)
        intro = QLabel("Every photo gets the tags it clearly shows (zero-shot, from the stored vectors — nothing is "
                       "re-encoded). Search a tag with tag:NAME, exclude one with -tag:NAME.")
        intro.setWordWrap(True)
        intro.setTextFormat(Qt.TextFormat.PlainText)
        box = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        box.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addWidget(intro)
        lay.addWidget(self.list, 1)
        lay.addLayout(form)
        lay.addLayout(row)
        lay.addWidget(self.status)
        lay.addWidget(box)
        worker.tags_applied.connect(self._applied)
        self.refresh()

    def refresh(self) -> None:
        from photosearch.explain.tags import list_tags, tag_counts

        try:
            mid = self.library.model.model_id
        except Exception:  # noqa: BLE001 - no model yet: counts unknown
            mid = ""
        counts = tag_counts(self.library.store, mid)
        self.list.clear()
        for t in list_tags(self.library.store):
            desc = "" if not t.prompts else f" \u2014 \u201c{'; '.join(t.prompts)}\u201d"
            item = QListWidgetItem(f"{t.name}  ({counts.get(t.name, 0):,} photos){desc}")
            item.setData(Qt.ItemDataRole.UserRole, t.name)
            self.list.addItem(item)

    def add(self) -> None:
        from photosearch.explain.tags import SENSITIVITY, Tag, TagError, save_tag

        try:
            tag = save_tag(self.library.store, Tag(self.name.text(), (self.prompt.text(),) if self.prompt.text().strip()
                                                   else (), SENSITIVITY[self.sensitivity.currentText()]))
        except TagError as e:
            QMessageBox.warning(self, "Cannot add tag", str(e))
            return
        self.name.clear()
        self.prompt.clear()
        self.status.setText(f"Tagging photos with \u201c{tag.name}\u201d\u2026")
        self.refresh()
        self.worker.apply_tags()

    def remove(self) -> None:
        from photosearch.explain.tags import remove_tag

        item = self.list.currentItem()
        if item is not None:
            remove_tag(self.library.store, item.data(Qt.ItemDataRole.UserRole))
            self.refresh()

    def _search(self) -> None:
        item = self.list.currentItem()
        if item is not None:
            self.search_tag.emit(item.data(Qt.ItemDataRole.UserRole))

    def _applied(self, report) -> None:
        if report.photos:
            self.status.setText(f"Tags up to date: {report.photos:,} photos scored in {report.seconds:.1f} s.")
        self.refresh()


class DuplicatesDialog(QDialog):
    """Groups of near-duplicates side by side; the user picks which to keep, the rest go to the trash."""

    THUMB = 150

    def __init__(self, library: Library, worker: InsightWorker, thumbs, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Duplicates")
        self.resize(900, 640)
        self.library = library
        self.worker = worker
        self.thumbs = thumbs
        self.groups: list = []
        self._notice = ""  # what the last move/undo did, shown above the refreshed groups
        self.choices: list[QButtonGroup] = []
        self._labels: dict[str, list[QLabel]] = {}
        self.threshold = QDoubleSpinBox()
        self.threshold.setRange(0.80, 0.999)
        self.threshold.setSingleStep(0.01)
        self.threshold.setDecimals(3)
        self.threshold.setValue(DUPLICATE_THRESHOLD)
        self.threshold.setToolTip("How alike two photos must look (visual similarity); higher = only near-identical")
        find = QPushButton("Find again")
        find.clicked.connect(self.find)
        self.summary = QLabel("Looking for near-duplicates\u2026")
        self.summary.setTextFormat(Qt.TextFormat.PlainText)
        self.summary.setWordWrap(True)
        top = QHBoxLayout()
        top.addWidget(self.summary, 1)
        top.addWidget(QLabel("similarity \u2265"))
        top.addWidget(self.threshold)
        top.addWidget(find)
        self.area = QScrollArea()
        self.area.setWidgetResizable(True)
        self.trash_button = QPushButton("Move the others to the trash")
        self.trash_button.setToolTip("In every group, all photos except the one marked Keep go to the system trash "
                                     "(nothing is deleted; Undo puts them back)")
        self.trash_button.clicked.connect(self.trash_others)
        self.undo_button = QPushButton("Undo last move")
        self.undo_button.clicked.connect(self.worker.undo_trash)
        from photosearch.library.trash import last_batch

        self.undo_button.setEnabled(bool(last_batch(library.folder)))
        close = QPushButton("Close")
        close.clicked.connect(self.accept)
        bottom = QHBoxLayout()
        bottom.addWidget(self.undo_button)
        bottom.addStretch(1)
        bottom.addWidget(self.trash_button)
        bottom.addWidget(close)
        lay = QVBoxLayout(self)
        lay.addLayout(top)
        lay.addWidget(self.area, 1)
        lay.addLayout(bottom)
        worker.duplicates_found.connect(self.show_groups)
        worker.trashed.connect(self._trashed)
        worker.restored.connect(self._restored)
        thumbs.loaded.connect(self._thumb)
        self.find()

    def find(self) -> None:
        self.summary.setText((self._notice + "\n" if self._notice else "") + "Looking for near-duplicates\u2026")
        self.trash_button.setEnabled(False)
        self.worker.find_duplicates(float(self.threshold.value()))

    PAGE = 40  # groups built at a time: thousands of groups must not freeze the window

    def show_groups(self, groups, seconds: float) -> None:
        self.groups = groups
        self.choices = []
        self._labels = {}
        inner = QWidget()
        self._groups_layout = QVBoxLayout(inner)
        self.more_button = QPushButton("")
        self.more_button.clicked.connect(self._show_more)
        self._groups_layout.addWidget(self.more_button)
        self._groups_layout.addStretch(1)
        self.area.setWidget(inner)
        self._show_more()
        extra = sum(len(g) - 1 for g in groups)
        text = (f"{len(groups):,} groups, {extra:,} photos that could go ({seconds:.1f} s). The largest of each "
                "group is marked Keep \u2014 change it if you like; only the groups shown are acted on." if groups
                else f"No near-duplicates found ({seconds:.1f} s).")
        self.summary.setText(f"{self._notice}\n{text}" if self._notice else text)
        self._notice = ""
        self.trash_button.setEnabled(bool(groups))

    def _show_more(self) -> None:
        """Build the next page of groups (widgets and thumbnail requests only for what is shown)."""
        from photosearch.search.engine import keeper

        start = len(self.choices)
        for n in range(start, min(start + self.PAGE, len(self.groups))):
            g = self.groups[n]
            box = QGroupBox(f"Group {n + 1}: {len(g)} photos")
            h = QHBoxLayout(box)
            choice = QButtonGroup(box)
            keep = keeper(g, "largest")
            for i, r in enumerate(g):
                cell = QFrame()
                cv = QVBoxLayout(cell)
                pic = QLabel("\u2026")
                pic.setFixedSize(self.THUMB, self.THUMB)
                pic.setAlignment(Qt.AlignmentFlag.AlignCenter)
                self._labels.setdefault(r.path, []).append(pic)
                self.thumbs.request(r.path, self.THUMB)
                size = f"{r.width} \u00d7 {r.height}" if r.width else "size unknown"
                mb = f", {r.size / 1e6:.1f} MB" if r.size else ""
                info = QLabel(f"{os.path.basename(r.path)}\n{size}{mb}\n{_fmt_when(r.taken_at, r.path)}")
                info.setTextFormat(Qt.TextFormat.PlainText)
                info.setToolTip(r.path)
                radio = QRadioButton("Keep")
                radio.setChecked(r is keep)
                choice.addButton(radio, i)
                cv.addWidget(pic)
                cv.addWidget(info)
                cv.addWidget(radio)
                h.addWidget(cell)
            h.addStretch(1)
            self.choices.append(choice)
            self._groups_layout.insertWidget(self._groups_layout.count() - 2, box)  # before the button
        left = len(self.groups) - len(self.choices)
        self.more_button.setVisible(left > 0)
        self.more_button.setText(f"Show {min(left, self.PAGE)} more groups ({left:,} not shown)")

    def planned(self) -> list[str]:
        """The photos to move: in every group shown, all but the one marked Keep."""
        out = []
        for g, choice in zip(self.groups, self.choices):
            keep = choice.checkedId()
            out += [r.path for i, r in enumerate(g) if i != keep]
        return out

    def trash_others(self) -> None:
        paths = self.planned()
        if not paths:
            return
        self.trash_button.setEnabled(False)
        self.summary.setText(f"Moving {len(paths)} photos to the trash\u2026")
        self.worker.trash(paths)

    def _trashed(self, moved, problems) -> None:
        msg = f"Moved {len(moved)} photos to the trash (Undo puts them back)."
        if problems:
            msg += f" {len(problems)} could not be moved: " + "; ".join(problems[:3])
        self.undo_button.setEnabled(bool(moved))
        self._notice = msg
        self.find()

    def _restored(self, restored, problems) -> None:
        from photosearch.library.trash import last_batch

        self.undo_button.setEnabled(bool(last_batch(self.library.folder)))
        self._notice = f"Put {len(restored)} photos back." + (" " + "; ".join(problems[:3]) if problems else "")
        self.find()

    def _thumb(self, path: str, size: int, image) -> None:
        if size != self.THUMB:
            return
        for lab in self._labels.get(path, []):
            try:
                lab.setPixmap(QPixmap.fromImage(image))
            except RuntimeError:  # the label was replaced by a newer search
                pass


def describe_text(top, tags) -> str:
    parts = []
    if tags:
        parts.append("Tags: " + ", ".join(t for t, _ in tags))
    if top:
        parts.append("Looks like: " + " \u00b7 ".join(p for p, _, _ in top))
    return "\n".join(parts)


__all__ = ["DuplicatesDialog", "InsightWorker", "TagsDialog", "describe_text"]
