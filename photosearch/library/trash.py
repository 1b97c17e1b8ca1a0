"""Move photos to the system trash (never delete them), with a journal so the move can be undone.

Linux and other freedesktop systems: the trash specification (``$XDG_DATA_HOME/Trash`` for files on the home
volume, ``$topdir/.Trash-$UID`` for files on other volumes), so the desktop's trash can restore them too.
Windows and macOS: Qt's ``QFile.moveToTrash`` (Recycle Bin / Finder trash).

Every batch of moves is appended to a journal in the library folder (``trash-journal.jsonl``); :func:`undo`
puts the last batch back where it was.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
import urllib.parse
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)

JOURNAL = "trash-journal.jsonl"


class TrashError(OSError):
    """A file that could not be moved to (or back from) the trash; nothing was deleted."""


@dataclass
class Trashed:
    original: str
    trashed: str  # where the file is in the trash now
    info: str | None  # the freedesktop .trashinfo file ("" elsewhere)
    batch: str
    time: float


def _xdg_home_trash() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "Trash"


def _mount_point(path: Path) -> Path:
    path = path.resolve()
    while not os.path.ismount(path) and path.parent != path:
        path = path.parent
    return path


def _trash_dir_for(path: Path) -> Path:
    home = _xdg_home_trash()
    home.mkdir(parents=True, exist_ok=True)
    if os.stat(path).st_dev == os.stat(home).st_dev:
        return home
    top = _mount_point(path)
    d = top / f".Trash-{os.getuid()}"
    try:
        (d / "files").mkdir(parents=True, exist_ok=True)
        (d / "info").mkdir(parents=True, exist_ok=True)
        os.chmod(d, 0o700)
    except OSError as e:
        raise TrashError(f"cannot use a trash folder on the volume of {path} ({d}): {e.strerror or e}") from e
    return d


def _freedesktop_trash(path: Path) -> tuple[str, str]:
    trash = _trash_dir_for(path)
    files, info = trash / "files", trash / "info"
    files.mkdir(parents=True, exist_ok=True)
    info.mkdir(parents=True, exist_ok=True)
    stem, suffix = path.stem, path.suffix
    name = path.name
    for n in range(1, 10_000):
        try:  # claim the name atomically through its .trashinfo, as the spec asks
            fd = os.open(info / f"{name}.trashinfo", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            break
        except FileExistsError:
            name = f"{stem}.{n}{suffix}"
    else:
        raise TrashError(f"no free name for {path} in {files}")
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    where = str(path) if trash == _xdg_home_trash() else os.path.relpath(path, trash.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(f"[Trash Info]\nPath={urllib.parse.quote(where)}\nDeletionDate={stamp}\n")
    try:
        os.rename(path, files / name)  # same volume: a rename, never a copy-and-delete
    except OSError as e:
        os.unlink(info / f"{name}.trashinfo")
        raise TrashError(f"cannot move {path} to the trash: {e.strerror or e}") from e
    return str(files / name), str(info / f"{name}.trashinfo")


def _qt_trash(path: Path) -> tuple[str, str]:
    from PySide6.QtCore import QFile

    f = QFile(str(path))
    if not f.moveToTrash():
        raise TrashError(f"the system refused to move {path} to the trash")
    return f.fileName(), ""


def move_to_trash(paths: list[str | Path], library_folder: Path | None = None) -> tuple[list[Trashed], list[str]]:
    """Move files to the trash. Returns (moved, problems); a file that cannot be moved stays where it is."""
    batch = uuid.uuid4().hex[:12]
    moved, problems = [], []
    for p in paths:
        path = Path(p).absolute()
        try:
            if not path.is_file():
                raise TrashError(f"{path} is not there any more")
            trashed, info = _qt_trash(path) if sys.platform in ("win32", "darwin") else _freedesktop_trash(path)
            moved.append(Trashed(str(path), trashed, info, batch, time.time()))
        except OSError as e:
            problems.append(str(e))
            log.warning("%s", e)
    if library_folder is not None and moved:
        with open(Path(library_folder) / JOURNAL, "a", encoding="utf-8") as f:
            f.writelines(json.dumps(asdict(t)) + "\n" for t in moved)
    return moved, problems


def journal(library_folder: Path) -> list[Trashed]:
    path = Path(library_folder) / JOURNAL
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(Trashed(**json.loads(line)))
        except (ValueError, TypeError):
            log.warning("skipping an unreadable line of %s", path)
    return out


def last_batch(library_folder: Path) -> list[Trashed]:
    entries = journal(library_folder)
    if not entries:
        return []
    b = entries[-1].batch
    return [t for t in entries if t.batch == b]


def undo(library_folder: Path) -> tuple[list[str], list[str]]:
    """Put the last batch of trashed files back. Returns (restored paths, problems). A file that was emptied
    from the trash, or whose original place is taken again, is reported and left as it is."""
    batch = last_batch(library_folder)
    restored, problems = [], []
    for t in batch:
        src, dst = Path(t.trashed), Path(t.original)
        if not src.exists():
            problems.append(f"{dst.name} is no longer in the trash ({src})")
            continue
        if dst.exists():
            problems.append(f"{dst} exists again; {src} was left in the trash")
            continue
        try:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(src), str(dst))
            if t.info:
                Path(t.info).unlink(missing_ok=True)
            restored.append(str(dst))
        except OSError as e:
            problems.append(f"cannot restore {dst}: {e.strerror or e}")
    # drop the batch from the journal (what could not be restored is reported, not retried forever)
    path = Path(library_folder) / JOURNAL
    keep = [t for t in journal(library_folder) if not batch or t.batch != batch[0].batch]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(asdict(t)) + "\n" for t in keep), encoding="utf-8")
    os.replace(tmp, path)
    return restored, problems
