"""What ImageCompressor.process gives back: an Outcome, or an ImageRejected refusal."""

from __future__ import annotations

from dataclasses import dataclass

IDENTITY = "identity"
JXL_JPEG = "jxl-jpeg"


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
    encoding: "identity" (stored bytes are what GET returns) or "jxl-jpeg"
        (stored JPEG XL; ImageCompressor.restore rebuilds the JPEG).
    format: "png" "jpeg" "gif" "webp" "tiff" "bmp", or None (not an image).
    """

    stored_path: str | None
    encoding: str
    format: str | None
    width: int | None
    height: int | None
    reason: str
