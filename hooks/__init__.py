"""Image hooks: what to store for an upload (a smaller, equivalent file or the upload itself).

Public surface, used by the storage layer only:

    ImageCompressor(...).process(path, mode) -> Outcome   # or raises ImageRejected (413/415)
    ImageCompressor.restore(stored_path, encoding) -> bytes
    ImageCompressor.close()

Everything else in this package is private.
"""

from __future__ import annotations

from hooks.compressor import ImageCompressor
from hooks.results import ImageRejected, Outcome

__all__ = ["ImageCompressor", "ImageRejected", "Outcome"]
