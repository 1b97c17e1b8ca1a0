"""Draw the photosearch icon with Pillow and write it at every size the installers need.

    python packaging/make_icons.py          # writes resources/icons/ (committed; re-run only to change the icon)

A photo (sky, sun, two hills) on a rounded blue tile, with a magnifying glass over its corner. Drawn once at
1024 px and downscaled with Lanczos, so the small sizes stay crisp.
Outputs: photosearch-<N>.png for N in SIZES, photosearch.png (256 px), photosearch.ico (Windows, 16–256 px),
photosearch.icns (macOS).
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

SIZES = (16, 24, 32, 48, 64, 128, 256, 512)
OUT = Path(__file__).resolve().parents[1] / "resources" / "icons"


def _vertical_gradient(size: tuple[int, int], top: tuple[int, int, int], bottom: tuple[int, int, int]) -> Image.Image:
    w, h = size
    col = Image.new("RGB", (1, h))
    for y in range(h):
        t = y / max(1, h - 1)
        col.putpixel((0, y), tuple(round(a + (b - a) * t) for a, b in zip(top, bottom)))
    return col.resize((w, h))


def draw(s: int = 1024) -> Image.Image:
    img = Image.new("RGBA", (s, s), (0, 0, 0, 0))

    # tile: rounded square, blue gradient, soft shadow
    shadow = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    ImageDraw.Draw(shadow).rounded_rectangle([s * .06, s * .08, s * .94, s * .96], radius=s * .2, fill=(0, 0, 0, 90))
    img.alpha_composite(shadow.filter(ImageFilter.GaussianBlur(s * .02)))
    mask = Image.new("L", (s, s), 0)
    ImageDraw.Draw(mask).rounded_rectangle([s * .06, s * .05, s * .94, s * .93], radius=s * .2, fill=255)
    img.paste(_vertical_gradient((s, s), (58, 123, 213), (28, 60, 140)), (0, 0), mask)

    # the photo: white frame, sky, sun, hills (slightly tilted)
    photo = Image.new("RGBA", (int(s * .62), int(s * .5)), (255, 255, 255, 255))
    pw, ph = photo.size
    b = int(s * .035)
    inner = _vertical_gradient((pw - 2 * b, ph - 2 * b), (140, 205, 250), (225, 240, 252))
    d = ImageDraw.Draw(inner)
    iw, ih = inner.size
    d.ellipse([iw * .66, ih * .12, iw * .86, ih * .12 + iw * .2], fill=(255, 196, 40))
    d.polygon([(0, ih), (0, ih * .62), (iw * .3, ih * .35), (iw * .62, ih * .78), (iw * .62, ih)], fill=(46, 139, 87))
    d.polygon([(iw * .3, ih), (iw * .68, ih * .5), (iw, ih * .8), (iw, ih)], fill=(34, 110, 70))
    photo.paste(inner, (b, b))
    photo = photo.rotate(-8, resample=Image.BICUBIC, expand=True)
    pshadow = Image.new("RGBA", photo.size, (0, 0, 0, 0))
    pshadow.putalpha(photo.getchannel("A").point(lambda a: a * 0.35))
    x, y = int(s * .13), int(s * .17)
    img.alpha_composite(pshadow.filter(ImageFilter.GaussianBlur(s * .012)), (x + int(s * .012), y + int(s * .02)))
    img.alpha_composite(photo, (x, y))

    # magnifying glass: translucent lens, thick ring, handle
    cx, cy, r = s * .62, s * .6, s * .19
    ring = int(s * .05)
    lens = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    ld = ImageDraw.Draw(lens)
    ld.line([(cx + r * .72, cy + r * .72), (s * .86, s * .84)], fill=(40, 40, 48, 255), width=int(s * .085))
    ld.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(255, 255, 255, 70), outline=(245, 245, 250, 255), width=ring)
    ld.arc([cx - r * .62, cy - r * .62, cx + r * .62, cy + r * .62], 200, 260, fill=(255, 255, 255, 200),
           width=int(s * .02))
    img.alpha_composite(lens)
    return img


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    big = draw(1024)
    for n in SIZES:
        big.resize((n, n), Image.LANCZOS).save(OUT / f"photosearch-{n}.png", optimize=True)
    big.resize((256, 256), Image.LANCZOS).save(OUT / "photosearch.png", optimize=True)
    big.save(OUT / "photosearch.ico", sizes=[(n, n) for n in (16, 24, 32, 48, 64, 128, 256)])
    big.resize((512, 512), Image.LANCZOS).save(OUT / "photosearch.icns")
    print(f"icons written to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
