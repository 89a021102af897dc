"""The storage package: owns every byte under the data directory.

    paths.py     which names are kept (split_path, MAX_NAME_BYTES)
    errors.py    what refuses a write (mapped to statuses in uss_dav.statuses)
    upload.py    a body streaming into staging/, with its digests
    records.py   Entry and the record a file is described by; Opened
    store.py     Store: look-ups, and the record-then-rename commit under naming locks
    sidecars.py  thumbnails and dead properties beside the data
    reencode.py  Store.recompress: re-encoding a stored file, committed like a PUT

File primitives (flock, atomic write, fsync, write-behind) are one floor down, in uss_dav.files.
"""

from uss_dav.storage.errors import (
    AlreadyExists,
    ChecksumMismatch,
    IncompleteBody,
    InvalidPath,
    IsAFolder,
    NoRoom,
    NotFound,
    OutsideCollection,
    ParentMissing,
    Quota,
    QuotaExceeded,
    StorageError,
    TooLarge,
)
from uss_dav.storage.paths import MAX_NAME_BYTES, is_apple_file, split_path
from uss_dav.storage.records import Entry, Opened, Rebuilt, WriteHook
from uss_dav.storage.reencode import Recompressed, needs_recompress
from uss_dav.storage.store import Store
from uss_dav.storage.upload import Upload, check_checksum

__all__ = [
    "MAX_NAME_BYTES",
    "AlreadyExists",
    "ChecksumMismatch",
    "Entry",
    "IncompleteBody",
    "InvalidPath",
    "IsAFolder",
    "NoRoom",
    "NotFound",
    "Opened",
    "OutsideCollection",
    "ParentMissing",
    "Quota",
    "QuotaExceeded",
    "Rebuilt",
    "Recompressed",
    "StorageError",
    "Store",
    "TooLarge",
    "Upload",
    "WriteHook",
    "check_checksum",
    "is_apple_file",
    "needs_recompress",
    "split_path",
]
