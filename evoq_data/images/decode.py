"""Decode an image file the one way every stage uses: what a viewer shows, as 8-bit RGB.

The judge, the pool check, ``distort``, the published dataset and training all see the pixels
this module returns, so no stage sees another picture than the next:

* **EXIF orientation is applied** (a phone photo tagged "rotate 90" is shown upright, as
  viewers and ``datasets`` show it);
* **16-bit images are scaled, not clipped**: PIL's ``convert("RGB")`` clips mode ``I;16`` /
  ``I`` values above 255 to white; here they are divided by 257 (65535 -> 255);
* **CMYK, palette, grey and alpha images become RGB**; transparency is composited over white
  (what a viewer shows on a white page) instead of exposing the colours under transparent
  pixels;
* PIL's own decompression-bomb limit is replaced by evoq's ``--max-pixels`` check, so a limit
  above PIL's 89.5 MP takes effect (and the one below it is enforced before decoding).

:func:`model_view_bytes` gives the bytes to publish for an image: the file itself when
decoding changes nothing, else a lossless PNG of the decoded pixels.
"""

from __future__ import annotations

import io
import re
import threading
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

DEFAULT_MAX_PIXELS = 64_000_000  # 8000 x 8000; PIL's own bomb limit is 89.5 MP
PASS_THROUGH_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
_OPEN_LOCK = threading.Lock()  # PIL's bomb limit is a module global: set it under a lock
_BYTESIO = re.compile(r"\s*<_io\.BytesIO object at 0x[0-9a-f]+>")


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """Open (header only) with evoq's pixel limit in place of PIL's."""
    with _OPEN_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None  # our limit below replaces PIL's warning and error
        try:
            im = Image.open(io.BytesIO(data))
        finally:
            Image.MAX_IMAGE_PIXELS = saved
    w, h = im.size
    if w * h > max_pixels:
        im.close()
        raise ValueError(f"too large: {w}x{h} pixels exceeds the limit of {max_pixels} "
                         "(--max-pixels)")
    return im


def _orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(0x0112, 1) or 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block means no usable orientation
        return 1


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(im, dtype=np.float64)
        if im.mode == "I" and arr.max(initial=0) <= 255:
            scale = 1.0  # a 32-bit container holding 8-bit values
        else:
            scale = 1 / 257.0  # 16-bit range 0..65535 -> 0..255
        grey = np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if im.mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        top = 1.0 if arr.max(initial=0) <= 1.0 else 255.0
        grey = np.clip(np.rint(arr * 255.0 / top), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if im.mode != "RGB":
        return im.convert("RGB")
    return im


def decode(source: str | Path | bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """The image as 8-bit RGB with its EXIF orientation applied (see the module docstring).

    Raises ValueError with the reason (unreadable, truncated, too large)."""
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    try:
        im = _open(data, max_pixels)
        with im:
            im.load()  # decodes every byte: catches truncated files
            upright = ImageOps.exif_transpose(im) if _orientation(im) != 1 else im
            rgb = _to_rgb(upright)
            rgb.load()
            return rgb if rgb is not im else im.copy()
    except ValueError:
        raise
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad files
        message = _BYTESIO.sub("", str(exc))
        raise ValueError(f"unreadable: {exc.__class__.__name__}: {message}") from exc


def needs_normalising(data: bytes) -> str | None:
    """Why the file's own bytes are not what the judge sees (None when they are): EXIF
    orientation, a mode other than 8-bit RGB, or a format outside JPEG/PNG/WebP."""
    im = _open(data, 2**62)
    with im:
        if _orientation(im) != 1:
            return f"EXIF orientation {_orientation(im)}"
        if im.mode != "RGB":
            return f"mode {im.mode}"
        if im.format not in PASS_THROUGH_FORMATS:
            return f"format {im.format}"
    return None


def png_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def model_view_bytes(path: str | Path) -> tuple[bytes, str]:
    """(bytes, mime type) of what the judge sees: the file itself when decoding changes
    nothing, else a lossless PNG of :func:`decode`'s pixels."""
    data = Path(path).read_bytes()
    if needs_normalising(data) is None:
        with _open(data, 2**62) as im:
            return data, PASS_THROUGH_FORMATS[im.format]
    return png_bytes(decode(data, max_pixels=2**62)), "image/png"


def dataset_image(path: str | Path, name: str) -> dict:
    """A ``datasets.Image`` cell of what the judge sees, stored as ``name`` + suffix: the
    file's own bytes when decoding changes nothing, else a lossless PNG of the decoded pixels
    (so `datasets` and training show exactly the judged pixels)."""
    path = Path(path)
    data = path.read_bytes()
    if needs_normalising(data) is None:
        return {"bytes": data, "path": name + path.suffix.lower()}
    return {"bytes": png_bytes(decode(data, max_pixels=2**62)), "path": name + ".png"}
