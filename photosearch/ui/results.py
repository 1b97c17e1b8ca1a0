"""The results grid: a virtualised list model with lazily loaded thumbnails (QListView icon mode)."""

from __future__ import annotations

import html
import os
from collections import OrderedDict

from PySide6.QtCore import QAbstractListModel, QModelIndex, QPersistentModelIndex, QSize, Qt
from PySide6.QtGui import QColor, QImage, QPainter, QPixmap
from PySide6.QtWidgets import QAbstractItemView, QListView

from photosearch.search import Result
from photosearch.ui.workers import ThumbnailLoader

THUMB = 160
ResultRole = Qt.ItemDataRole.UserRole + 1


def plain_tooltip(text: str) -> str:
    """A tooltip that shows ``text`` literally (Qt would render a name like '<b>x' as rich text)."""
    return "<p style='white-space:pre'>" + html.escape(text) + "</p>"


class ResultsModel(QAbstractListModel):
    def __init__(self, loader: ThumbnailLoader, parent=None):
        super().__init__(parent)
        self.loader = loader
        self.results: list[Result] = []
        self._pixmaps: OrderedDict[str, QPixmap] = OrderedDict()
        self._missing: set[str] = set()
        self._rows: dict[str, list[int]] = {}
        self._placeholder = self._make_placeholder()
        loader.loaded.connect(self._on_loaded)

    @staticmethod
    def _make_placeholder() -> QPixmap:
        pm = QPixmap(THUMB, THUMB)
        pm.fill(QColor(235, 235, 235))
        return pm

    def set_results(self, results: list[Result]) -> None:
        self.beginResetModel()
        self.results = list(results)
        self._rows = {}
        for i, r in enumerate(self.results):
            self._rows.setdefault(r.path, []).append(i)
        self.endResetModel()
        self.loader.clear_queue()

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.results)

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or index.row() >= len(self.results):
            return None
        r = self.results[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return os.path.basename(r.path)
        if role == Qt.ItemDataRole.DecorationRole:
            pm = self._pixmaps.get(r.path)
            if pm is not None:
                self._pixmaps.move_to_end(r.path)
                return pm
            if r.path not in self._missing:
                self.loader.request(r.path, THUMB)
            return self._placeholder
        if role == Qt.ItemDataRole.ToolTipRole:
            return plain_tooltip(f"{r.path}\nscore {r.score:.3f}")
        if role == ResultRole:
            return r
        return None

    def _on_loaded(self, path: str, size: int, image: QImage) -> None:
        rows = self._rows.get(path)
        if not rows:
            return
        if image.isNull():
            self._missing.add(path)
            pm = self._make_missing()
        else:
            pm = self._square(QPixmap.fromImage(image))  # QPixmap only on the UI thread
        self._pixmaps[path] = pm
        while len(self._pixmaps) > 2000:
            self._pixmaps.popitem(last=False)
        for row in rows:  # one range per row: a range spanning the whole list would make the view touch every item
            idx = self.index(row)
            self.dataChanged.emit(idx, idx, [Qt.ItemDataRole.DecorationRole])

    @staticmethod
    def _square(pm: QPixmap) -> QPixmap:
        """The thumbnail centred on a transparent THUMB × THUMB canvas: the view lays every item out like the
        first one (uniform sizes, needed for 100k results), so a tall photo after a wide one would otherwise be
        drawn over its own file name."""
        if pm.width() == THUMB and pm.height() == THUMB:
            return pm
        out = QPixmap(THUMB, THUMB)
        out.fill(Qt.GlobalColor.transparent)
        p = QPainter(out)
        p.drawPixmap((THUMB - pm.width()) // 2, (THUMB - pm.height()) // 2, pm)
        p.end()
        return out

    def _make_missing(self) -> QPixmap:
        pm = self._make_placeholder()
        p = QPainter(pm)
        p.setPen(QColor(150, 60, 60))
        p.drawText(pm.rect(), Qt.AlignmentFlag.AlignCenter, "unavailable")
        p.end()
        return pm


class ResultsView(QListView):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setResizeMode(QListView.ResizeMode.Adjust)
        self.setMovement(QListView.Movement.Static)
        self.setUniformItemSizes(True)
        self.setIconSize(QSize(THUMB, THUMB))
        self.setGridSize(QSize(THUMB + 24, THUMB + 34))
        self.setSpacing(4)
        self.setWordWrap(False)
        self.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.setLayoutMode(QListView.LayoutMode.Batched)  # 100k results are laid out in slices between events
        self.setBatchSize(1000)
        self.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
