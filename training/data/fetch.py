"""Fetch training data from Debian packages (the only data source reachable offline: the apt mirror).

Nothing else is ever downloaded. Each package is fetched once with ``apt-get download``, extracted with
``dpkg-deb -x`` into ``<cache>/debian/<name>/`` and marked complete, so later calls cost nothing.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import platformdirs

logger = logging.getLogger(__name__)

CACHE_ENV_VAR = "PHOTOSEARCH_DATA_CACHE"
MARKER_NAME = ".photosearch-complete"
APT_LISTS_DIR = Path("/var/lib/apt/lists")
DOWNLOAD_TIMEOUT_S = 3600

# Reserved for independent evaluation: never train on these.
RESERVED_PACKAGES = frozenset({"gcompris-qt-data", "jigzo-data", "mate-backgrounds"})

_PACKAGE_NAME = re.compile(r"^[a-z0-9][a-z0-9+.\-]+$")  # Debian policy; also rules out option injection


class DataFetchError(RuntimeError):
    """A training data package could not be fetched or extracted."""


def data_cache_dir() -> Path:
    """Root of the data cache: ``$PHOTOSEARCH_DATA_CACHE`` or the user cache dir; created on demand."""
    env = os.environ.get(CACHE_ENV_VAR)
    path = Path(env).expanduser() if env else Path(platformdirs.user_cache_dir("photosearch")) / "data"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _manual_hint(name: str, dest: Path) -> str:
    return (
        f"To do it by hand: `apt-get download {name}` (after `apt-get update` if needed), then "
        f"`dpkg-deb -x {name}_*.deb {dest}` and `touch {dest / MARKER_NAME}`. "
        f"Set {CACHE_ENV_VAR} to point at a folder whose debian/{name}/ already holds the extracted package."
    )


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    logger.info("running %s", " ".join(cmd))
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DataFetchError(f"`{' '.join(cmd)}` failed: {exc}") from exc


def _apt_lists_empty() -> bool:
    return not any(APT_LISTS_DIR.glob("*_Packages*"))


def _download(name: str, workdir: Path, dest: Path) -> Path:
    """``apt-get download`` into ``workdir`` (running ``apt-get update`` once if the lists are empty)."""
    proc = _run(["apt-get", "download", name], workdir)
    if proc.returncode != 0 and (_apt_lists_empty() or "Unable to locate package" in proc.stderr):
        logger.warning("apt-get download %s failed (package lists empty or stale); running apt-get update", name)
        update = _run(["apt-get", "update"], workdir)
        if update.returncode != 0:
            raise DataFetchError(f"`apt-get update` failed: {update.stderr.strip()}. {_manual_hint(name, dest)}")
        proc = _run(["apt-get", "download", name], workdir)
    if proc.returncode != 0:
        raise DataFetchError(f"`apt-get download {name}` failed: {proc.stderr.strip()}. {_manual_hint(name, dest)}")
    debs = sorted(workdir.glob("*.deb"))
    if len(debs) != 1:
        found = [d.name for d in debs]
        raise DataFetchError(f"expected one .deb from `apt-get download {name}`, got {found}. "
                             f"{_manual_hint(name, dest)}")
    return debs[0]


def fetch_debian_package(name: str, cache: Path | None = None, *, allow_reserved: bool = False) -> Path:
    """Download and extract Debian package ``name`` once; return the extracted root (holds ``usr/...``).

    Packages in ``RESERVED_PACKAGES`` are refused unless ``allow_reserved=True`` (evaluation only).
    """
    if name in RESERVED_PACKAGES and not allow_reserved:
        raise DataFetchError(f"{name} is reserved for independent evaluation and must not be used for training")
    if not _PACKAGE_NAME.match(name):
        raise DataFetchError(f"not a valid Debian package name: {name!r}")
    debian_dir = (cache if cache is not None else data_cache_dir()) / "debian"
    dest = debian_dir / name
    if (dest / MARKER_NAME).is_file():
        return dest

    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise DataFetchError(f"`{tool}` not found: cannot fetch {name} here. {_manual_hint(name, dest)}")
    debian_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=debian_dir, prefix=f".{name}-") as tmp:
        work = Path(tmp)
        deb = _download(name, work, dest)
        root = work / "root"
        proc = _run(["dpkg-deb", "-x", str(deb), str(root)], work)
        if proc.returncode != 0:
            raise DataFetchError(f"`dpkg-deb -x {deb.name}` failed: {proc.stderr.strip()}. {_manual_hint(name, dest)}")
        (root / MARKER_NAME).write_text(deb.name + "\n", encoding="utf-8")
        if dest.exists():  # leftover without marker (interrupted manual copy): replace it
            shutil.rmtree(dest)
        try:
            root.rename(dest)
        except OSError:
            if not (dest / MARKER_NAME).is_file():  # a concurrent fetch did not win the race either
                raise
    logger.info("extracted %s into %s", deb.name, dest)
    return dest


def fetch_evaluation_photos(package: str = "scikit-image", version: str = "0.26.0",
                            member_prefix: str = "skimage/data/") -> Path:
    """Sample photos shipped inside a PyPI package (reserved for independent evaluation: never train or tune on
    them). Downloads the wheel with ``pip download --no-deps`` and extracts the PNG/JPEG files once."""
    import sys
    import zipfile

    dest = data_cache_dir() / "evaluation" / f"{package}-{version}"
    marker = dest / MARKER_NAME
    if marker.is_file():
        return dest
    work = Path(tempfile.mkdtemp(prefix="wheel-", dir=data_cache_dir()))
    try:
        proc = _run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", str(work),
                     f"{package}=={version}"], cwd=work)
        if proc.returncode != 0:
            raise DataFetchError(f"pip could not download {package}=={version}: {proc.stderr.strip()[-300:]}")
        wheel = next(work.glob("*.whl"))
        dest.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as zf:
            for name in zf.namelist():
                if name.startswith(member_prefix) and name.lower().endswith((".png", ".jpg", ".jpeg")):
                    (dest / Path(name).name).write_bytes(zf.read(name))
        marker.write_text("ok\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest
