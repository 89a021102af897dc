"""The job a pool worker runs: check the upload decodes, optimize it, write the result beside it.

Runs in a separate process, so a decoder or optimizer that crashes (libjpeg
calls exit() on some errors) or holds the GIL (oxipng) cannot take the server
with it. Paths travel to the worker instead of bytes, and only a small
JobResult travels back. Workers log nothing the server would see: everything
worth saying goes in JobResult.reason.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageFile

from hooks.formats import PIL_NAMES
from hooks.optimizers import Settings, optimizer_for
from hooks.results import IDENTITY

# JobResult.status values
STORED = "stored"  # out_path holds smaller bytes to store
KEPT = "kept"  # store the input as uploaded
CORRUPT = "corrupt"  # the input does not decode
BOMB = "bomb"  # Pillow's own pixel limit tripped while decoding


@dataclass(frozen=True)
class Job:
    """One upload to check and optimize; `mode` "off" checks only."""

    path: str
    out_path: str
    format: str
    mode: str
    settings: Settings


@dataclass(frozen=True)
class JobResult:
    status: str
    reason: str
    encoding: str = IDENTITY


def init_worker(max_pixels: int) -> None:
    """Give Pillow in this worker the server's pixel limit, both its warning and its error as errors."""
    Image.MAX_IMAGE_PIXELS = max_pixels
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    warnings.simplefilter("error", Image.DecompressionBombWarning)


def run_job(job: Job) -> JobResult:
    """Check, optimize, and write out_path only when the result is strictly smaller."""
    data = Path(job.path).read_bytes()
    try:
        image_mode = check_decodes(data, job.format)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return JobResult(BOMB, str(exc))
    except Exception as exc:  # any decoder failure means "corrupt"
        return JobResult(CORRUPT, f"{type(exc).__name__}: {exc}")

    optimizer = optimizer_for(job.mode, job.format)
    if optimizer is None:
        return JobResult(KEPT, f"{job.format} stored as uploaded ({job.mode})")
    try:
        out = optimizer.optimize(data, job.settings)
    except Exception as exc:  # a failed optimizer leaves the upload as it was
        return JobResult(KEPT, f"{optimizer.name} failed: {type(exc).__name__}: {exc}")
    if out is None:
        return JobResult(KEPT, f"{job.format} ({image_mode}) stored as uploaded: {optimizer.name} declined")
    if len(out) >= len(data):
        return JobResult(KEPT, f"{job.format} stored as uploaded: {optimizer.name} not smaller ({len(out)})")
    with open(job.out_path, "xb") as fh:
        fh.write(out)
    return JobResult(STORED, f"{job.format} {len(data)} -> {len(out)} {optimizer.name}", optimizer.encoding)


def check_decodes(data: bytes, fmt: str) -> str:
    """Decode the first frame (JPEG at 1/8 scale: still reads every byte) and return its mode.

    Raises on truncated or corrupt data; LOAD_TRUNCATED_IMAGES is off, so a
    short JPEG is an error here rather than grey pixels.
    """
    with Image.open(io.BytesIO(data), formats=[PIL_NAMES[fmt]]) as image:
        mode = image.mode
        if fmt == "jpeg":
            image.draft(mode, (max(1, image.width // 8), max(1, image.height // 8)))
        image.load()
    return mode
