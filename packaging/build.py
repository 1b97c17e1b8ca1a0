"""Build the photosearch installer bundle (a PyInstaller one-folder app) for the platform this runs on.

    python packaging/build.py [--flavor cpu|gpu] [--dist DIR] [--work DIR] [--check]

1. Exports the shipped model's image and text towers to ONNX with this venv's torch and verifies both against
   torch (photosearch.model.fastpath: cosine ≥ 0.9999), in a build-private cache — so the bundle's exports are
   always made and checked from the model in this checkout.
2. Runs PyInstaller on packaging/photosearch.spec with those exports (the CPU flavor ships no torch at all).
3. Linux: copies photosearch.desktop, the icons and install.sh beside the executable.
4. Prints the bundle's size and the build time; with --check runs the built app's --self-test from a copy
   outside the source tree (as tests/test_packaging.py does).

Needs the build venv with the app and PyInstaller: `pip install -e ".[package]"` (`make bundle` does it all).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HERE = REPO / "packaging"


def export_onnx(work: Path) -> Path:
    """Verified ONNX exports of the shipped model, copied to ``work/onnx`` (re-used when already there)."""
    os.environ["PHOTOSEARCH_CACHE"] = str(work / "cache")  # before the model package reads it
    os.environ.setdefault("PHOTOSEARCH_RESOURCES", str(REPO / "resources"))
    sys.path.insert(0, str(REPO))
    from photosearch.model import default_model_dir, load_model
    from photosearch.model.composed_config import verified_config
    from photosearch.model.onnx_model import export_paths, is_verified, shipped_export_paths

    cfg = verified_config(default_model_dir())
    out = work / "onnx"
    shipped = shipped_export_paths(work, cfg.model_id, cfg.preprocess.size)
    if all(is_verified(p) for p in shipped):
        print(f"ONNX exports of {cfg.model_id}: up to date in {out}")
        return out
    t = time.perf_counter()
    model = load_model("default", device="cpu", image_backend="torch")
    from photosearch.model.fastpath import enable_onnx, enable_onnx_text

    enable_onnx(model, required=True)
    if not enable_onnx_text(model):
        raise SystemExit("the text tower could not be exported to ONNX or disagrees with torch (see the log above)")
    cached = export_paths(model.model_id, model.preprocess_config.size)
    if not all(is_verified(p) for p in cached):
        raise SystemExit(f"ONNX exports of {model.model_id} were not verified against torch")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for p in cached:
        shutil.copy2(p, out / p.name)
        shutil.copy2(p.with_suffix(".verified"), out / p.with_suffix(".verified").name)
    cos = ", ".join(f"{p.name}: min cosine {p.with_suffix('.verified').read_text().strip()}" for p in cached)
    print(f"ONNX exports of {model.model_id} verified against torch in {time.perf_counter() - t:.0f}s ({cos})")
    return out


def dir_size(path: Path) -> int:
    return sum(f.lstat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def executable(bundle: Path) -> Path:
    return bundle / ("photosearch-cli.exe" if sys.platform == "win32" else "photosearch")


def missing_system_libraries(bundle: Path) -> list[str]:
    """Linux: libraries the bundled Qt window plugins (X11, Wayland) need that neither the bundle nor this build
    machine has — PyInstaller bundles what the build machine has, so a user's machine will need these."""
    if not sys.platform.startswith("linux") or not shutil.which("ldd"):
        return []
    internal = bundle / "_internal"
    env = dict(os.environ, LD_LIBRARY_PATH=f"{internal}:{internal / 'PySide6' / 'Qt' / 'lib'}")
    missing: set[str] = set()
    for plugin in sorted((internal / "PySide6" / "Qt" / "plugins" / "platforms").glob("libq*.so")):
        out = subprocess.run(["ldd", str(plugin)], capture_output=True, text=True, env=env, check=False).stdout
        missing |= {ln.split()[0] for ln in out.splitlines() if "not found" in ln}
    return sorted(missing)


def self_test(bundle: Path) -> int:
    """Run --self-test on a copy of the bundle outside the source tree, with no Python environment variables."""
    with tempfile.TemporaryDirectory(prefix="photosearch-bundle-check-") as tmp:
        copy = Path(tmp) / bundle.name
        shutil.copytree(bundle, copy, symlinks=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "PHOTOSEARCH"))}
        env.update(QT_QPA_PLATFORM="offscreen", HOME=tmp, XDG_CACHE_HOME=str(Path(tmp) / "cache"),
                   XDG_DATA_HOME=str(Path(tmp) / "data"), XDG_CONFIG_HOME=str(Path(tmp) / "config"))
        r = subprocess.run([str(executable(copy)), "--self-test"], cwd=tmp, env=env, timeout=600, check=False)
        return r.returncode


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--flavor", choices=("cpu", "gpu"), default="cpu",
                    help="cpu: ONNX Runtime only, no torch/CUDA (default); gpu: also torch with its CUDA libraries")
    ap.add_argument("--dist", type=Path, default=REPO / "dist", help="where the bundle goes (default: dist/)")
    ap.add_argument("--work", type=Path, default=REPO / "build" / "bundle", help="build files (default: build/bundle)")
    ap.add_argument("--check", action="store_true", help="run the built app's --self-test outside the source tree")
    args = ap.parse_args(argv)
    try:
        import PyInstaller  # noqa: F401
    except ImportError:
        print('PyInstaller is not installed in this venv: pip install -e ".[package]"', file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    work, dist = args.work.resolve(), args.dist.resolve()
    onnx = export_onnx(work)
    cmd = [sys.executable, "-m", "PyInstaller", "--noconfirm", "--clean", "--log-level", "WARN",
           "--distpath", str(dist), "--workpath", str(work / f"pyinstaller-{args.flavor}"),
           str(HERE / "photosearch.spec"), "--", "--flavor", args.flavor, "--onnx", str(onnx)]
    print("$", " ".join(cmd), flush=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PHOTOSEARCH_CACHE", "PHOTOSEARCH_RESOURCES")}
    subprocess.run(cmd, check=True, cwd=REPO, env=env)
    bundle = dist / "photosearch"
    if sys.platform.startswith("linux"):
        shutil.copy2(HERE / "linux" / "photosearch.desktop", bundle / "photosearch.desktop")
        shutil.copy2(HERE / "linux" / "install.sh", bundle / "install.sh")
        icons = bundle / "icons"
        icons.mkdir(exist_ok=True)
        for p in sorted((REPO / "resources" / "icons").glob("photosearch-*.png")):
            shutil.copy2(p, icons / p.name)
    elapsed = time.perf_counter() - t0
    missing = missing_system_libraries(bundle)
    if missing:
        print(f"note: the bundled Qt platform plugins need {', '.join(missing)}, which this build machine lacks; "
              "they are not in the bundle, so the user's desktop must provide them (Debian/Ubuntu: libxcb-icccm4, "
              "libxcb-keysyms1, ...). Install them here before building to ship them.")
    size = dir_size(bundle)
    print(f"bundle: {bundle} ({args.flavor}), {size / 1e6:.0f} MB unpacked ({size} bytes), built in {elapsed:.0f}s")
    if sys.platform == "darwin" and (dist / "photosearch.app").is_dir():
        print(f"macOS app: {dist / 'photosearch.app'}")
    if args.check:
        rc = self_test(bundle)
        print("bundle self-test:", "PASS" if rc == 0 else f"FAIL (exit {rc})")
        return rc
    return 0


if __name__ == "__main__":
    sys.exit(main())
