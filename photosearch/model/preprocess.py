"""Image decoding and preprocessing with PIL and numpy only (safe to run in decode worker threads).

Decoding applies EXIF orientation, uses JPEG draft mode to decode large photos at reduced scale in the DCT
domain, composites transparency onto a background colour and guards against decompression bombs.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from photosearch.model.config import PreprocessConfig
from photosearch.model.errors import ImageDecodeError

ImageInput = Union[str, Path, bytes, Image.Image]

try:  # HEIC/HEIF (iPhone photos); AVIF is built into Pillow
    import pillow_heif

    pillow_heif.register_heif_opener()
    HEIF_SUPPORTED = True
except ImportError:  # pragma: no cover - optional
    HEIF_SUPPORTED = False

MAX_IMAGE_PIXELS = 250_000_000  # larger images are refused as probable decompression bombs
_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR, "nearest": Image.Resampling.NEAREST}


def _describe(src: ImageInput) -> str:
    if isinstance(src, (str, Path)):
        return str(src)
    if isinstance(src, bytes):
        return f"<{len(src)} bytes of image data>"
    return "<image>"


def open_image(src: ImageInput, min_side: int | None = None, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Decode ``src`` into an upright RGB image. With ``min_side``, JPEGs are decoded at the smallest DCT scale
    whose shorter side is still ≥ ``min_side`` (4–8× faster for camera photos)."""
    if isinstance(src, Image.Image):
        im = src
    else:
        try:
            if isinstance(src, (str, Path)) and Path(src).stat().st_size == 0:
                raise ImageDecodeError(f"{src} is empty (0 bytes)")
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                im = Image.open(io.BytesIO(src) if isinstance(src, bytes) else src)
                if im.width * im.height > MAX_IMAGE_PIXELS:
                    raise ImageDecodeError(
                        f"{_describe(src)} is {im.width}x{im.height} pixels, above the {MAX_IMAGE_PIXELS:,} pixel "
                        "safety limit; it was skipped"
                    )
                if min_side and im.format == "JPEG":
                    scale = min(im.width, im.height) / min_side
                    if scale >= 2:
                        im.draft("RGB", (max(1, int(im.width / scale)), max(1, int(im.height / scale))))
                im.load()
        except ImageDecodeError:
            raise
        except FileNotFoundError as e:
            raise ImageDecodeError(f"{_describe(src)} does not exist (moved or deleted?)") from e
        except PermissionError as e:
            raise ImageDecodeError(f"{_describe(src)} cannot be read: permission denied") from e
        except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ImageDecodeError(f"{_describe(src)} is not an image photosearch can read ({e})") from e
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            raise ImageDecodeError(f"{_describe(src)} is corrupt or truncated ({e})") from e
    try:
        im = ImageOps.exif_transpose(im)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not lose the photo
        pass
    if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, tuple(background) + (255,))
        im = Image.alpha_composite(bg, rgba)
    return im.convert("RGB")


def crop_geometry(width: int, height: int, cfg: PreprocessConfig) -> tuple[int, int, int, int]:
    """(resized width, resized height, crop left, crop top) of the shortest-side resize and centre crop."""
    short, size = cfg.resize or cfg.size, cfg.size
    if width <= height:
        nw, nh = short, max(short, int(short * height / width))
    else:
        nw, nh = max(short, int(short * width / height)), short
    if cfg.crop_rounding == "floor":
        return nw, nh, (nw - size) // 2, (nh - size) // 2
    return nw, nh, int(round((nw - size) / 2.0)), int(round((nh - size) / 2.0))


def resize_crop(im: Image.Image, cfg: PreprocessConfig) -> Image.Image:
    """Resize (shortest side or squash) and centre-crop to ``cfg.size`` square."""
    resample = _RESAMPLE[cfg.interpolation]
    size = cfg.size
    if cfg.resize_mode == "squash":
        return im.resize((size, size), resample)
    nw, nh, left, top = crop_geometry(*im.size, cfg)
    if (nw, nh) != im.size:
        im = im.resize((nw, nh), resample)
    return im.crop((left, top, left + size, top + size))


def to_array(im: Image.Image, cfg: PreprocessConfig) -> np.ndarray:
    """RGB image of size cfg.size → normalised float32 array (3, H, W)."""
    x = np.asarray(im, dtype=np.float32) * np.float32(cfg.rescale)  # (H, W, 3)
    x = (x - np.asarray(cfg.mean, dtype=np.float32)) / np.asarray(cfg.std, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


class ImagePreprocessor:
    """Callable turning an image input into the tower's (3, H, W) float32 array, as the checkpoint specifies."""

    def __init__(self, cfg: PreprocessConfig):
        self.cfg = cfg

    def load(self, src: ImageInput) -> Image.Image:
        return open_image(src, min_side=self.cfg.resize or self.cfg.size, background=tuple(self.cfg.background))

    def __call__(self, src: ImageInput) -> np.ndarray:
        return to_array(resize_crop(self.load(src), self.cfg), self.cfg)
