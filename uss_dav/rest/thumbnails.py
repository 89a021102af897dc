"""Thumbnails made with Pillow from a stored image, never larger than the configured pixel limit allows.

The declared size is checked from the header before anything is decoded, and
JPEGs are decoded in draft mode (libjpeg scales while decoding), so a
thumbnail of a large photo costs a fraction of a full decode.
"""

from __future__ import annotations

import io
from typing import BinaryIO

from PIL import Image, ImageOps

from hooks.formats import PIL_NAMES, SNIFF_BYTES, read_header, sniff

#: Output formats: query value -> (Pillow format, content type).
FORMATS = {"webp": ("WEBP", "image/webp"), "jpeg": ("JPEG", "image/jpeg")}
MIN_SIZE, MAX_SIZE, DEFAULT_SIZE = 16, 1024, 256

_HIGH_BIT_DEPTH = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


class NotAnImage(Exception):
    """The stored file is not in an image format we read."""


class Undecodable(Exception):
    """The stored image cannot be decoded within the limits."""


def render(fh: BinaryIO, size: int, out: str, max_pixels: int) -> bytes:
    """A thumbnail fitting in size x size (never enlarged), encoded as `out` ("webp" or "jpeg")."""
    fmt = sniff(fh.read(SNIFF_BYTES))
    if fmt is None:
        raise NotAnImage("not a PNG, JPEG, GIF, WebP, TIFF or BMP image: no thumbnail")
    header = read_header(fh, fmt)
    if header is None:
        raise Undecodable(f"unreadable {fmt} header")
    if header.width * header.height > max_pixels:
        raise Undecodable(f"image is {header.width}x{header.height} pixels, over the {max_pixels}-pixel limit")
    fh.seek(0)
    try:
        thumb = _decode_small(fh, fmt, size)
        return _encode(thumb, out)
    except Exception as exc:  # noqa: BLE001 -- Pillow's decoders raise many types; all mean "cannot decode"
        raise Undecodable(f"cannot decode the {fmt} image: {type(exc).__name__}: {exc}") from None


def _decode_small(fh: BinaryIO, fmt: str, size: int) -> Image.Image:
    with Image.open(fh, formats=[PIL_NAMES[fmt]]) as image:
        if fmt == "jpeg":
            image.draft(image.mode, (size, size))
        thumb = ImageOps.exif_transpose(image)  # a loaded copy, upright
    thumb.thumbnail((size, size))
    return thumb


def _encode(image: Image.Image, out: str) -> bytes:
    pil_format, _type = FORMATS[out]
    if image.mode in _HIGH_BIT_DEPTH:
        image = image.convert("I").point(lambda v: v * (1 / 256)).convert("L")  # 16 bits -> 8
    alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    image = image.convert("RGBA" if alpha else "RGB")
    if out == "jpeg" and alpha:
        flat = Image.new("RGB", image.size, "white")
        flat.paste(image, mask=image.getchannel("A"))
        image = flat
    buf = io.BytesIO()
    image.save(buf, pil_format, quality=80 if out == "webp" else 85)
    return buf.getvalue()
