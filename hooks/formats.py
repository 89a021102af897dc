"""Image format detection from magic bytes, and the declared size from the header alone.

This runs in the server process on untrusted uploads, so it never decodes
pixel data: Pillow's plugin classes are lazy (their constructor parses the
header only), and WebP, whose Pillow plugin hands the whole file to libwebp
at open time, is sized by a few lines of parsing instead.
"""

from __future__ import annotations

import logging
import os
import struct
from dataclasses import dataclass
from typing import BinaryIO

from PIL import (
    BmpImagePlugin,
    GifImagePlugin,
    ImageFile,
    JpegImagePlugin,
    PngImagePlugin,
    TiffImagePlugin,
)

from hooks.results import ImageRejected

logger = logging.getLogger(__name__)

# Pillow's format names, for Image.open(..., formats=[...]) in the workers.
PIL_NAMES = {"png": "PNG", "jpeg": "JPEG", "gif": "GIF", "webp": "WEBP", "tiff": "TIFF", "bmp": "BMP"}

# Lazy header parsers: constructing one reads the header, not the pixels, and
# (unlike Image.open) applies no pixel limit of its own, so ours is the one that speaks.
_HEADER_READERS: dict[str, type[ImageFile.ImageFile]] = {
    "png": PngImagePlugin.PngImageFile,
    "jpeg": JpegImagePlugin.JpegImageFile,
    "gif": GifImagePlugin.GifImageFile,
    "tiff": TiffImagePlugin.TiffImageFile,
    "bmp": BmpImagePlugin.BmpImageFile,
}

SNIFF_BYTES = 32
_DIB_HEADER_SIZES = (12, 16, 40, 52, 56, 64, 108, 124)


@dataclass(frozen=True)
class Header:
    """What an image declares about itself before any pixel is decoded."""

    format: str
    width: int
    height: int


def read_head(path: str) -> bytes:
    """The first SNIFF_BYTES of a file: os-level, since most uploads are judged on these alone."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, SNIFF_BYTES)
    finally:
        os.close(fd)


def sniff(head: bytes) -> str | None:
    """The format named by the leading bytes, or None: the file name is never consulted."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"  # APNG too: same signature, frames in extra chunks
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    # "BM" alone is too common at the start of text: also require a known DIB header size.
    if head[:2] == b"BM" and len(head) >= 18 and struct.unpack_from("<I", head, 14)[0] in _DIB_HEADER_SIZES:
        return "bmp"
    return None


def read_header(fp: BinaryIO, fmt: str) -> Header | None:
    """The declared size, or None when the header cannot be parsed."""
    fp.seek(0)
    if fmt == "webp":
        return _webp_header(fp.read(SNIFF_BYTES))
    try:
        image = _HEADER_READERS[fmt](fp)
    except Exception as exc:  # Pillow's parsers raise many types; all mean "unreadable"
        logger.debug("unreadable %s header: %r", fmt, exc)
        return None
    width, height = image.size
    return Header(fmt, width, height)


def check_pixels(header: Header, max_pixels: int) -> None:
    """Refuse (413) an image whose declared size is over the limit: a decompression bomb."""
    if header.width * header.height > max_pixels:
        raise ImageRejected(
            413, f"image is {header.width}x{header.height} pixels, over the {max_pixels}-pixel limit"
        )


def jpeg_end(data: bytes) -> int | None:
    """Offset just past the first image's EOI marker, or None if the marker walk fails.

    Phones append data after EOI: a second JPEG referenced by an MPF marker
    (Ultra HDR gain maps, MPO stereo pairs) or a whole video (motion photos).
    A rewrite of the first image drops it, so callers compare this with len(data).
    """
    pos = 2
    while pos + 2 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker == 0xD9:
            return pos + 2
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            pos += 2
            continue
        if pos + 4 > len(data):
            return None
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == 0xDA:
            pos = _skip_entropy_coded(data, pos)
    return None


def _skip_entropy_coded(data: bytes, pos: int) -> int:
    """Offset of the first real marker after a scan: 0xFF followed by neither 0x00 (stuffing) nor RSTn."""
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= len(data):
            return len(data)
        following = data[pos + 1]
        if following == 0x00 or 0xD0 <= following <= 0xD7:
            pos += 2
        else:
            return pos


def _webp_header(head: bytes) -> Header | None:
    """Canvas size from the first chunk (VP8X, VP8L or VP8), per the WebP container spec."""
    chunk = head[12:16]
    if chunk == b"VP8X" and len(head) >= 30:
        width = 1 + int.from_bytes(head[24:27], "little")
        height = 1 + int.from_bytes(head[27:30], "little")
    elif chunk == b"VP8L" and len(head) >= 25 and head[20] == 0x2F:
        bits = int.from_bytes(head[21:25], "little")
        width = 1 + (bits & 0x3FFF)
        height = 1 + ((bits >> 14) & 0x3FFF)
    elif chunk == b"VP8 " and len(head) >= 30 and head[23:26] == b"\x9d\x01\x2a":
        width = int.from_bytes(head[26:28], "little") & 0x3FFF
        height = int.from_bytes(head[28:30], "little") & 0x3FFF
    else:
        return None
    return Header("webp", width, height)
