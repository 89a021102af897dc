"""What refuses a write or a look-up, raised where the problem is found.

The faces never map these themselves: uss_dav.statuses holds the one table
from each class to an HTTP status, for WebDAV and REST alike.
"""

from __future__ import annotations

from dataclasses import dataclass


class StorageError(Exception):
    """Base of the errors below; the front ends map each to one HTTP status."""


class InvalidPath(StorageError):
    """The path has a segment we never store ('..', NUL, backslash, too long)."""


class OutsideCollection(StorageError):
    """The path resolves through a symlink: it could lead out of the collection."""


class NotFound(StorageError):
    pass


class ParentMissing(StorageError):
    """The parent folder of the target does not exist (HTTP 409)."""


class AlreadyExists(StorageError):
    pass


class IsAFolder(StorageError):
    pass


class IncompleteBody(StorageError):
    """The client sent fewer bytes than it announced (it went away mid-upload)."""


class TooLarge(StorageError):
    """The body passed the upload size limit."""


class QuotaExceeded(StorageError):
    """The write would take the collection over its quota."""


class NoRoom(StorageError):
    """The body declared is larger than the free space of the data directory's file system."""


@dataclass(frozen=True)
class Quota:
    """A collection's limits; 0 means unlimited."""

    bytes: int = 0
    files: int = 0

    def __bool__(self) -> bool:
        return bool(self.bytes or self.files)


class ChecksumMismatch(StorageError):
    """The body does not match the checksum the client sent with it."""
