"""Finding photos on disk: recursive walk, image types, hidden/system files, symlink loops; EXIF metadata."""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from datetime import datetime
from fnmatch import fnmatch
from pathlib import Path
from typing import Callable, Iterable, Iterator

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".avif", ".heic", ".heif"}
SYSTEM_NAMES = {"@eadir", "thumbs.db", "desktop.ini", "$recycle.bin", "lost+found", ".ds_store"}


def is_skipped_name(name: str) -> bool:
    """Hidden files and folders (``.*``, AppleDouble ``._*``) and NAS/OS system entries (``@eaDir``, ``Thumbs.db``)."""
    return name.startswith(".") or name.lower() in SYSTEM_NAMES


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS and not is_skipped_name(name)


@dataclass(frozen=True)
class FileEntry:
    path: str
    size: int
    mtime_ns: int


def is_below(path: str, folder: str) -> bool:
    """``path`` is ``folder`` itself or anything inside it (by path, without touching the disk)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def is_excluded(path: str, excludes: Iterable[str]) -> bool:
    """An exclude is a folder path (everything below it) or a glob on the name (e.g. ``*.tmp``, ``Screenshots``)."""
    name = os.path.basename(path)
    for ex in excludes:
        if os.path.isabs(ex):
            if is_below(path, ex):
                return True
        elif fnmatch(name, ex):
            return True
    return False


def walk_photos(
    root: str | Path,
    excludes: Iterable[str] = (),
    on_error: Callable[[str, str], None] | None = None,
) -> Iterator[FileEntry]:
    """Yield every photo below ``root`` with its size and mtime. Symlinked folders are followed once each (a
    folder reached twice, e.g. through a link loop, is skipped); unreadable folders are reported to ``on_error``."""
    excludes = list(excludes)
    seen: set[tuple[int, int]] = set()
    stack = [str(Path(root).expanduser().absolute())]
    while stack:
        folder = stack.pop()
        try:
            st = os.stat(folder)
        except OSError as e:
            if on_error:
                on_error(folder, f"cannot open folder: {e.strerror or e}")
            continue
        key = (st.st_dev, st.st_ino)
        if key in seen:
            continue
        seen.add(key)
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError as e:
            if on_error:
                on_error(folder, f"cannot list folder: {e.strerror or e}")
            continue
        subdirs = []
        for entry in entries:
            if is_skipped_name(entry.name) or is_excluded(entry.path, excludes):
                continue
            try:
                if entry.is_dir(follow_symlinks=True):
                    subdirs.append(entry.path)
                elif is_image_name(entry.name) and entry.is_file(follow_symlinks=True):
                    est = entry.stat(follow_symlinks=True)
                    yield FileEntry(entry.path, est.st_size, est.st_mtime_ns)
            except OSError as e:  # broken symlink, vanished file, permission
                if on_error and not isinstance(e, FileNotFoundError):
                    on_error(entry.path, f"cannot read: {e.strerror or e}")
        stack.extend(sorted(subdirs, reverse=True))


def content_hash(path: str) -> str:
    """BLAKE2b-128 of the whole file: recognises a renamed or moved photo (and identical copies)."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_EXIF_DATETIME_ORIGINAL = 0x9003
_EXIF_DATETIME = 0x0132
_EXIF_MAKE, _EXIF_MODEL = 0x010F, 0x0110
_EXIF_IFD = 0x8769


def read_metadata(im) -> dict:
    """Width/height (as displayed, after EXIF orientation), date taken (Unix time, local clock) and camera."""
    meta: dict = {}
    w, h = im.size
    try:
        exif = im.getexif()
    except Exception:  # noqa: BLE001 - unreadable EXIF must not lose the photo
        exif = {}
    if exif and exif.get(0x0112) in (5, 6, 7, 8):
        w, h = h, w
    meta["width"], meta["height"] = w, h
    if not exif:
        return meta
    try:
        sub = exif.get_ifd(_EXIF_IFD)
    except Exception:  # noqa: BLE001
        sub = {}
    raw = sub.get(_EXIF_DATETIME_ORIGINAL) or exif.get(_EXIF_DATETIME)
    if isinstance(raw, str):
        try:
            meta["taken_at"] = datetime.strptime(raw.strip()[:19], "%Y:%m:%d %H:%M:%S").timestamp()
        except ValueError:
            pass
    make, model = (str(exif.get(t) or "").strip("\x00 ") for t in (_EXIF_MAKE, _EXIF_MODEL))
    if model:
        meta["camera"] = model if make and model.lower().startswith(make.lower().split()[0]) else f"{make} {model}".strip()
    return meta
