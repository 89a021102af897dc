"""Image hooks: what to store for an upload (a smaller, equivalent file or the upload itself).

The bottom floor: bytes in, bytes out; it knows no HTTP and no data directory.
The storage package calls it on every write and every rebuild, uss_dav.services
builds it, and the REST thumbnails and the importer read its format detection.
Public surface:

    ImageCompressor(...).process(path, mode) -> Outcome   # or raises ImageRejected (413/415)
    ImageCompressor.restore_data(stored_bytes, encoding) -> bytes   # the upload, bit for bit
    ImageCompressor.close()

Everything else in this package is private.
"""

from __future__ import annotations

from hooks.compressor import ImageCompressor
from hooks.results import ImageRejected, Outcome

__all__ = ["ImageCompressor", "ImageRejected", "Outcome"]
