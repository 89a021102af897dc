"""The test image corpus and how to compare images as a viewer sees them."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageSequence

CORPUS = Path(__file__).parent / "data" / "corpus"

IMAGES = [
    "photo_exif_icc_xmp.jpg",
    "progressive.jpg",
    "cmyk.jpg",
    "mpo_gain_map.jpg",
    "motion_photo.jpg",
    "text_icc.png",
    "gray16.png",
    "gray16_reducible.png",
    "rgba.png",
    "animated.apng",
    "animated.gif",
    "static.gif",
    "photo.webp",
    "photo.tiff",
    "photo.bmp",
]
# Files on which a lossless tool is known to win: the optimizer must actually run.
SHRINK_LOSSLESS = [
    "photo_exif_icc_xmp.jpg",
    "progressive.jpg",
    "text_icc.png",
    "rgba.png",
    "animated.apng",
    "animated.gif",
]

def frames(data: bytes) -> list[tuple[str, tuple[int, int], bytes, object]]:
    """Every frame as rendered: mode, size, pixels and duration.

    8-bit images are compared as RGBA, because oxipng and gifsicle may change the
    colour type (RGB -> palette...) without changing a rendered pixel. 16-bit
    images are compared in their own mode, so a 16 -> 8 bit reduction fails.
    """
    result = []
    with Image.open(io.BytesIO(data)) as image:
        for frame in ImageSequence.Iterator(image):
            frame.load()
            rendered = frame if frame.mode.startswith("I") else frame.convert("RGBA")
            result.append((rendered.mode, rendered.size, rendered.tobytes(), frame.info.get("duration")))
    return result


def metadata(data: bytes) -> dict[str, object]:
    """The metadata a reader of the file sees: EXIF, ICC, XMP, PNG text, loop count, orientation."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        info = image.info
        return {
            "exif": info.get("exif"),
            "icc_profile": info.get("icc_profile"),
            "xmp": info.get("xmp"),
            "loop": info.get("loop"),
            "text": dict(getattr(image, "text", {})),
            "orientation": image.getexif().get(0x0112),
            "n_frames": getattr(image, "n_frames", 1),
        }
