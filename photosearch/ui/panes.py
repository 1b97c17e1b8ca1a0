"""The drag-and-drop query pane, the preview pane and the folders / settings dialogs."""

from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtCore import QBuffer, QByteArray, QIODevice, QMimeData, Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices, QGuiApplication, QImage, QImageReader, QPixmap
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from photosearch.library.scan import is_image_name
from photosearch.search import Result

IMAGE_MIME_TYPES = ("image/png", "image/jpeg", "image/webp", "image/bmp", "image/gif", "image/tiff")


def plain_label(text: str = "") -> QLabel:
    """A label that never interprets its text as HTML (file names like '<b>x.jpg' show literally)."""
    lab = QLabel(text)
    lab.setTextFormat(Qt.TextFormat.PlainText)
    lab.setWordWrap(True)
    lab.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return lab


def image_from_mime(mime: QMimeData) -> tuple[str | bytes | None, str]:
    """The photo a drop or paste carries: a local file path, or encoded image bytes. Never fetches a URL.
    Returns (photo, problem) with problem "" when a photo was found."""
    if mime.hasUrls():
        for url in mime.urls():
            if url.isLocalFile():
                path = url.toLocalFile()
                if os.path.isfile(path) and (is_image_name(os.path.basename(path)) or not QImageReader(path).format().isEmpty()):
                    return path, ""
                return None, f"{os.path.basename(path) or path} is not an image photosearch can read"
    for fmt in IMAGE_MIME_TYPES:
        if mime.hasFormat(fmt):
            data = bytes(mime.data(fmt).data())
            if data:
                return data, ""
    if mime.hasImage():
        img = mime.imageData()
        if isinstance(img, QImage) and not img.isNull():
            buf = QBuffer()
            buf.open(QIODevice.OpenModeFlag.WriteOnly)
            img.save(buf, "PNG")
            return bytes(buf.data().data()), ""
    if mime.hasUrls():
        return None, "only photos on this computer can be dropped (photosearch never downloads)"
    return None, "the dropped item is not a photo"


class QueryPane(QFrame):
    """Drop a photo (from a file manager or a browser) or paste one: it becomes (part of) the query."""

    photo_changed = Signal(object)  # str path | bytes | None
    problem = Signal(str)

    def __init__(self, loader=None, parent=None):
        super().__init__(parent)
        self.loader = loader
        if loader is not None:
            loader.loaded.connect(self._thumbnail)
        self.setAcceptDrops(True)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setMinimumWidth(180)
        self.photo: str | bytes | None = None
        self.image = QLabel()
        self.image.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.image.setMinimumHeight(140)
        self.hint = plain_label("Drop a photo here\nor paste one (Ctrl+V)\nto find similar photos.\n\n"
                                "Type text too to combine, e.g. \u201cat night\u201d.")
        self.hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.caption = plain_label()
        self.clear_button = QPushButton("Clear photo")
        self.clear_button.clicked.connect(self.clear)
        self.clear_button.setVisible(False)
        lay = QVBoxLayout(self)
        lay.addWidget(QLabel("<b>Photo query</b>"))
        lay.addWidget(self.image, 1)
        lay.addWidget(self.hint)
        lay.addWidget(self.caption)
        lay.addWidget(self.clear_button)

    def dragEnterEvent(self, event) -> None:
        md = event.mimeData()
        if md.hasUrls() or md.hasImage() or any(md.hasFormat(f) for f in IMAGE_MIME_TYPES):
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        self.take(event.mimeData())
        event.acceptProposedAction()

    def take(self, mime: QMimeData) -> bool:
        photo, problem = image_from_mime(mime)
        if photo is None:
            self.problem.emit(problem)
            return False
        preview = mime.imageData() if isinstance(photo, bytes) and mime.hasImage() else None
        self.set_photo(photo, preview if isinstance(preview, QImage) and not preview.isNull() else None)
        return True

    def set_photo(self, photo: str | bytes, preview: QImage | None = None) -> None:
        """Make ``photo`` the query. A file's preview is decoded by the thumbnail loader off the UI thread; dropped
        or pasted image data is shown from ``preview`` when the clipboard already holds it decoded."""
        name = os.path.basename(photo) if isinstance(photo, str) else "pasted photo"
        if isinstance(photo, str) and self.loader is not None and preview is None:
            self.photo = photo
            self.image.setText("(loading…)")
            self.loader.request(photo, 220)
            self._shown(name, photo)
            return
        img = preview if preview is not None else QImage()
        if preview is None:
            img.loadFromData(QByteArray(photo) if isinstance(photo, bytes) else QByteArray(open(photo, "rb").read()))
        if img.isNull():
            self.problem.emit(f"{name} cannot be decoded as an image")
            return
        self.photo = photo
        self._set_pixmap(img)
        self._shown(name, photo)

    def _shown(self, name: str, photo: str | bytes) -> None:
        self.caption.setText(name)
        self.hint.setVisible(False)
        self.clear_button.setVisible(True)
        self.photo_changed.emit(photo)

    def _set_pixmap(self, img: QImage) -> None:
        self.image.setPixmap(QPixmap.fromImage(img).scaled(220, 220, Qt.AspectRatioMode.KeepAspectRatio,
                                                           Qt.TransformationMode.SmoothTransformation))

    def _thumbnail(self, path: str, size: int, img: QImage) -> None:
        if size != 220 or path != self.photo:
            return
        if img.isNull():
            self.problem.emit(f"{os.path.basename(path)} cannot be decoded as an image")
            self.clear()
        else:
            self._set_pixmap(img)

    def clear(self) -> None:
        if self.photo is None:
            return
        self.photo = None
        self.image.clear()
        self.caption.setText("")
        self.hint.setVisible(True)
        self.clear_button.setVisible(False)
        self.photo_changed.emit(None)


class PreviewPane(QFrame):
    """The selected photo, larger, with its details and actions."""

    find_similar = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setMinimumWidth(240)
        self.result: Result | None = None
        self.image = QLabel("Select a photo")
        self.image.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.image.setMinimumSize(220, 220)
        self.info = plain_label()
        buttons = QHBoxLayout()
        self.open_button = QPushButton("Open")
        self.folder_button = QPushButton("Show in folder")
        buttons.addWidget(self.open_button)
        buttons.addWidget(self.folder_button)
        buttons2 = QHBoxLayout()
        self.copy_path_button = QPushButton("Copy path")
        self.copy_image_button = QPushButton("Copy image")
        buttons2.addWidget(self.copy_path_button)
        buttons2.addWidget(self.copy_image_button)
        self.similar_button = QPushButton("Find similar")
        self.why = QCheckBox("Why this match? (heatmap)")
        self.why.setToolTip("Colour the parts of the photo that drove its similarity to the query (H)")
        self.heat_caption = plain_label()
        self.heat_caption.setStyleSheet("color: palette(mid);")
        self.describe_label = plain_label()
        self._pixmap: QPixmap | None = None
        self._heatmap: QImage | None = None
        lay = QVBoxLayout(self)
        lay.addWidget(self.image, 1)
        lay.addWidget(self.why)
        lay.addWidget(self.heat_caption)
        lay.addWidget(self.info)
        lay.addWidget(self.describe_label)
        lay.addLayout(buttons)
        lay.addLayout(buttons2)
        lay.addWidget(self.similar_button)
        self.open_button.clicked.connect(self.open_photo)
        self.folder_button.clicked.connect(self.show_in_folder)
        self.copy_path_button.clicked.connect(self.copy_path)
        self.copy_image_button.clicked.connect(self.copy_image)
        self.similar_button.clicked.connect(lambda: self.result and self.find_similar.emit(self.result.path))
        self.show_result(None)

    def show_result(self, result: Result | None, pixmap: QPixmap | None = None) -> None:
        if result is None or self.result is None or result.path != self.result.path:
            self._heatmap = None
            self.heat_caption.setText("")
            self.describe_label.setText("")
        self.result = result
        for b in (self.open_button, self.folder_button, self.copy_path_button, self.copy_image_button,
                  self.similar_button):
            b.setEnabled(result is not None)
        if result is None:
            self._pixmap = None
            self.image.setText("Select a photo")
            self.info.setText("")
            return
        if pixmap is not None and not pixmap.isNull():
            self._pixmap = pixmap
        self._show_image()
        from datetime import datetime

        lines = [os.path.basename(result.path), result.path]
        if result.taken_at:
            lines.append("taken " + datetime.fromtimestamp(result.taken_at).strftime("%Y-%m-%d %H:%M"))
        if result.camera:
            lines.append(result.camera)
        if result.width and result.height:
            lines.append(f"{result.width} × {result.height}" + (f", {result.size / 1e6:.1f} MB" if result.size else ""))
        lines.append(f"score {result.score:.3f}")
        if not os.path.exists(result.path):
            lines.append("⚠ this file is no longer there (moved or deleted)")
        self.info.setText("\n".join(lines))

    def _show_image(self) -> None:
        pm = QPixmap.fromImage(self._heatmap) if self._heatmap is not None and self.why.isChecked() else self._pixmap
        if pm is not None and not pm.isNull():
            self.image.setPixmap(pm.scaled(self.image.width(), self.image.height(),
                                           Qt.AspectRatioMode.KeepAspectRatio,
                                           Qt.TransformationMode.SmoothTransformation))
        else:
            self.image.setText("(loading…)")

    def show_heatmap(self, image: QImage | None, caption: str) -> None:
        """The heatmap overlay for the current photo (None: back to the plain photo, with ``caption`` saying why)."""
        self._heatmap = image
        self.heat_caption.setText(caption)
        if self.result is not None:
            self._show_image()

    def open_photo(self) -> None:
        if self.result:
            QDesktopServices.openUrl(QUrl.fromLocalFile(self.result.path))

    def show_in_folder(self) -> None:
        if self.result:
            QDesktopServices.openUrl(QUrl.fromLocalFile(os.path.dirname(self.result.path)))

    def copy_path(self) -> None:
        if self.result:
            QGuiApplication.clipboard().setText(self.result.path)

    def copy_image(self) -> None:
        if self.result:
            img = QImage(self.result.path)
            if not img.isNull():
                QGuiApplication.clipboard().setImage(img)


class FoldersDialog(QDialog):
    """Add and remove watched folders, each with an exclude list (folder paths or name patterns)."""

    def __init__(self, folders: list[tuple[str, tuple[str, ...], bool]], parent=None):
        super().__init__(parent)
        self.setWindowTitle("Photo folders")
        self.resize(620, 380)
        self.list = QListWidget()
        self.excludes: dict[str, list[str]] = {}
        for path, ex, online in folders:
            self._add_item(path, list(ex), online)
        self.exclude_edit = QLineEdit()
        self.exclude_edit.setPlaceholderText("Exclude (comma separated): e.g. Screenshots, *.tmp, /full/path")
        self.exclude_edit.editingFinished.connect(self._save_excludes)
        self.list.currentItemChanged.connect(self._show_excludes)
        add = QPushButton("Add folder…")
        remove = QPushButton("Remove")
        add.clicked.connect(self._choose)
        remove.clicked.connect(self._remove)
        box = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        box.accepted.connect(self._accept)
        box.rejected.connect(self.reject)
        row = QHBoxLayout()
        row.addWidget(add)
        row.addWidget(remove)
        row.addStretch(1)
        lay = QVBoxLayout(self)
        lay.addWidget(plain_label("Photos in these folders (and below) are indexed and kept up to date. "
                                  "Nothing is ever written into them."))
        lay.addWidget(self.list)
        lay.addWidget(self.exclude_edit)
        lay.addLayout(row)
        lay.addWidget(box)

    def _add_item(self, path: str, excludes: list[str], online: bool = True) -> None:
        item = QListWidgetItem(path + ("" if online else "   (offline)"))
        item.setData(Qt.ItemDataRole.UserRole, path)
        self.list.addItem(item)
        self.excludes[path] = excludes

    def _choose(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Add a photo folder")
        if path:
            self.add_path(path)

    def add_path(self, path: str) -> None:
        path = str(Path(path).absolute())
        if path not in self.excludes:
            self._add_item(path, [])

    def _remove(self) -> None:
        item = self.list.currentItem()
        if item:
            self.excludes.pop(item.data(Qt.ItemDataRole.UserRole), None)
            self.list.takeItem(self.list.row(item))

    def _show_excludes(self, item) -> None:
        self.exclude_edit.setText(", ".join(self.excludes.get(item.data(Qt.ItemDataRole.UserRole), [])) if item else "")

    def _save_excludes(self) -> None:
        item = self.list.currentItem()
        if item:
            parts = [p.strip() for p in self.exclude_edit.text().split(",") if p.strip()]
            self.excludes[item.data(Qt.ItemDataRole.UserRole)] = parts

    def _accept(self) -> None:
        self._save_excludes()
        self.accept()

    def result_folders(self) -> dict[str, list[str]]:
        return dict(self.excludes)


class SettingsDialog(QDialog):
    """Model (shipped default or a CLIP/SigLIP/photosearch checkpoint folder), device, threads, library location."""

    def __init__(self, model: str, device: str, threads: int, library: str, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.model_combo = QComboBox()
        self.model_combo.addItem("Shipped default model", "default")
        from photosearch.model import installed_models

        for name, path in installed_models():  # models exported by `python -m training export` (and shipped ones)
            if name != "default":
                self.model_combo.addItem(f"{name}  \u2014  {path}", name)
                self.model_combo.setItemData(self.model_combo.count() - 1, str(path), Qt.ItemDataRole.ToolTipRole)
        if model not in ("", "default"):
            if self.model_combo.findData(model) < 0:
                self.model_combo.addItem(model, model)
            self.model_combo.setCurrentIndex(self.model_combo.findData(model))
        choose = QPushButton("Choose model folder…")
        choose.clicked.connect(self._choose_model)
        self.device = QComboBox()
        self.device.addItems(["auto", "cpu", "cuda"])
        self.device.setCurrentText(device)
        self.threads = QSpinBox()
        self.threads.setRange(1, max(1, os.cpu_count() or 1))
        self.threads.setValue(threads)
        self.library = QLineEdit(library)
        lib_button = QPushButton("Choose…")
        lib_button.clicked.connect(self._choose_library)
        form = QFormLayout(self)
        mrow = QHBoxLayout()
        mrow.addWidget(self.model_combo, 1)
        mrow.addWidget(choose)
        form.addRow("Model", mrow)
        form.addRow("", plain_label("A new model gets its own index, built in the background; the previous "
                                    "model's index is kept."))
        form.addRow("Device", self.device)
        form.addRow("Threads", self.threads)
        lrow = QHBoxLayout()
        lrow.addWidget(self.library, 1)
        lrow.addWidget(lib_button)
        form.addRow("Library folder", lrow)
        form.addRow("", plain_label("Device, threads and library location apply after a restart."))
        box = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        box.accepted.connect(self._accept)
        box.rejected.connect(self.reject)
        form.addRow(box)

    def _choose_model(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Choose a model folder")
        if path:
            self.set_model_folder(path)

    def set_model_folder(self, path: str) -> bool:
        from photosearch.model import ModelError
        from photosearch.model.composed_config import checkpoint_kind

        try:
            kind = checkpoint_kind(Path(path))
        except ModelError as e:
            QMessageBox.warning(self, "Not a model", f"{path} is not a model folder:\n{e}")
            return False
        if kind.startswith("unknown"):
            QMessageBox.warning(self, "Not a model", f"{path} holds a model photosearch cannot use ({kind[8:]}).")
            return False
        self.model_combo.addItem(path, path)
        self.model_combo.setCurrentIndex(self.model_combo.count() - 1)
        return True

    def _choose_library(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Library folder")
        if path:
            self.library.setText(path)

    def _accept(self) -> None:
        self.accept()

    def values(self) -> dict:
        return {"model": self.model_combo.currentData(), "device": self.device.currentText(),
                "threads": self.threads.value(), "library": self.library.text()}


def empty_state(text: str, button: str | None = None) -> tuple[QWidget, QPushButton | None]:
    w = QWidget()
    lay = QVBoxLayout(w)
    lay.addStretch(1)
    lab = plain_label(text)
    lab.setAlignment(Qt.AlignmentFlag.AlignCenter)
    f = lab.font()
    f.setPointSize(f.pointSize() + 3)
    lab.setFont(f)
    lay.addWidget(lab)
    btn = None
    if button:
        btn = QPushButton(button)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(btn)
        row.addStretch(1)
        lay.addLayout(row)
    lay.addStretch(2)
    w.label = lab  # type: ignore[attr-defined]
    return w, btn
