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

from hooks.encodings import decode
from hooks.formats import PIL_NAMES
from hooks.optimizers import Optimizer, Settings, optimizer_for
from hooks.results import ERROR, IDENTITY, MISMATCH, Encoded

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
    """status (STORED, KEPT, CORRUPT, BOMB), a one-line reason, and for STORED the encoding written.

    decodes: False when the upload failed the decode check but a reversible
    codec stored it anyway (the caller refuses it under images_only).
    fallback: see Outcome.fallback.
    """

    status: str
    reason: str
    encoding: str = IDENTITY
    decodes: bool = True
    fallback: str | None = None


def init_worker(max_pixels: int) -> None:
    """Give Pillow in this worker the server's pixel limit, both its warning and its error as errors."""
    Image.MAX_IMAGE_PIXELS = max_pixels
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    warnings.simplefilter("error", Image.DecompressionBombWarning)


def run_job(job: Job) -> JobResult:
    """Check, optimize, and write out_path only when the result is strictly smaller (and, if reversible, exact)."""
    data = Path(job.path).read_bytes()
    optimizer = optimizer_for(job.mode, job.format)
    broken, image_mode = "", "?"
    try:
        image_mode = check_decodes(data, job.format)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return JobResult(BOMB, str(exc))
    except Exception as exc:  # any decoder failure means "corrupt"
        broken = f"{type(exc).__name__}: {exc}"
        if optimizer is None or not optimizer.reversible:
            return JobResult(CORRUPT, broken)
        # A reversible codec gives the damaged bytes back as they came: let it try.

    if optimizer is None:
        return JobResult(KEPT, f"{job.format} stored as uploaded ({job.mode})")
    result = _optimize(optimizer, data, job, f"{job.format} ({image_mode})")
    if not broken:
        return result
    if result.status != STORED:
        return JobResult(CORRUPT, broken, fallback=result.fallback)
    return JobResult(STORED, f"{result.reason}; does not decode ({broken})", result.encoding, False)


def _optimize(optimizer: Optimizer, data: bytes, job: Job, label: str) -> JobResult:
    """Run one optimizer; for a reversible one, rebuild its output and compare it with the upload."""
    try:
        out = optimizer.optimize(data, job.settings)
    except Exception as exc:  # a failed optimizer leaves the upload as it was
        return JobResult(KEPT, f"{optimizer.name} failed: {type(exc).__name__}: {exc}", fallback=ERROR)
    if out is None:
        return JobResult(KEPT, f"{label} stored as uploaded: {optimizer.name} declined")
    encoded = out if isinstance(out, Encoded) else Encoded(out, optimizer.encoding, optimizer.name)
    if len(encoded.data) >= len(data):
        return JobResult(KEPT, f"{job.format} stored as uploaded: {encoded.codec} not smaller ({len(encoded.data)})")
    if optimizer.reversible:
        try:
            rebuilt = decode(encoded.data, encoded.encoding)
        except Exception as exc:
            reason = f"{encoded.codec} rebuild failed ({type(exc).__name__}: {exc}), stored as uploaded"
            return JobResult(KEPT, reason, fallback=ERROR)
        if rebuilt != data:
            return JobResult(KEPT, f"{encoded.codec} rebuild differs from the upload, stored as uploaded",
                             fallback=MISMATCH)
    try:
        with open(job.out_path, "xb") as fh:
            fh.write(encoded.data)
    except OSError as exc:
        # No room for the smaller copy (a full disk): the upload itself is on disk already and
        # is stored as it came, rather than refused.
        Path(job.out_path).unlink(missing_ok=True)
        return JobResult(KEPT, f"{encoded.codec} copy not written ({exc.strerror}), stored as uploaded", fallback=ERROR)
    return JobResult(STORED, f"{job.format} {len(data)} -> {len(encoded.data)} {encoded.codec}", encoded.encoding)


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
