"""What ImageCompressor.process gives back: an Outcome, or an ImageRejected refusal."""

from __future__ import annotations

from dataclasses import dataclass

# Stored encodings: each stays readable forever (docs/stored-format.md).
IDENTITY = "identity"
JXL_JPEG = "jxl-jpeg"
LEPTON_JPEG = "lepton-jpeg"
PNG_REDEFLATE = "png-redeflate"

# Outcome.fallback values: why a codec's result was thrown away and the upload stored as it came.
TIMEOUT = "timeout"  # no result within the time limit
CRASH = "crash"  # the worker process died
ERROR = "error"  # the codec raised
MISMATCH = "mismatch"  # the rebuild of what would be stored differs from the upload


class ImageRejected(Exception):
    """Refusal of an upload: .status (413 or 415) and .reason (one line).

    The server core maps it to an HTTP status in its one error mapper; nothing
    in hooks/ knows about HTTP beyond these two numbers.
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Outcome:
    """What to store for one upload, and why.

    stored_path: a new file beside the input holding the bytes to store, or
        None to store the input as uploaded. The caller owns (renames or
        deletes) that file.
    encoding: "identity" (stored bytes are what GET returns), or a reversible
        encoding ("lepton-jpeg", "jxl-jpeg", "png-redeflate") that
        ImageCompressor.restore turns back into the upload, bit for bit.
    format: "png" "jpeg" "gif" "webp" "tiff" "bmp", or None (not an image).
    fallback: None, or why a codec's work was thrown away and the upload is
        stored as it came: "timeout", "crash", "error" or "mismatch" (its
        output did not rebuild the upload). A codec that declines a file
        (CMYK, not smaller) is not a fallback. The server counts these.
    """

    stored_path: str | None
    encoding: str
    format: str | None
    width: int | None
    height: int | None
    reason: str
    fallback: str | None = None


@dataclass(frozen=True)
class Encoded:
    """An optimizer's output that names its own encoding (a codec that chooses per file)."""

    data: bytes
    encoding: str
    codec: str  # which library made it, for the reason line
