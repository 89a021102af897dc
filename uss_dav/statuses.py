"""The one table from a refusal raised in the core to the HTTP status both faces answer with.

WebDAV (providers.collection.mapped) and REST (uss_dav.rest.wire.problem_for)
both look refusals up here, so one storage error never means two statuses.
A full disk (507) and a read-only one (503) are the operating-system
errors with statuses of their own here: they can come from any write, and
they are neither the client's fault nor a bug. Where a protocol gives a
refusal a meaning of its own (WebDAV's `If-None-Match: *` losing a race is
a failed precondition, 412), the face says so where it sets that
condition, not here.
"""

from __future__ import annotations

import errno
import logging

from hooks import ImageRejected
from uss_dav import storage
from uss_dav.keys import UnknownKey
from uss_dav.write_locks import Locked

log = logging.getLogger(__name__)

#: Most specific class first: the first match wins.
STATUS_OF: tuple[tuple[type[Exception], int], ...] = (
    (storage.InvalidPath, 400),
    (storage.IncompleteBody, 400),
    (storage.ChecksumMismatch, 400),
    (storage.OutsideCollection, 403),
    (storage.NotFound, 404),
    (UnknownKey, 404),
    (storage.AlreadyExists, 409),
    (storage.IsAFolder, 409),
    (storage.ParentMissing, 409),
    (storage.TooLarge, 413),
    (Locked, 423),
    (storage.QuotaExceeded, 507),
    (storage.NoRoom, 507),
)


#: Writes the disk itself refuses, by errno: (status, one-line reason). Not the client's fault,
#: and not a bug either, but the operator's to fix, so each is logged. A full disk or an exhausted
#: file-system quota is RFC 4918's 507 (the server cannot store what it was asked to). A read-only
#: one (ext4 remounts itself so after an I/O error, with errors=remount-ro) is 503: the service is
#: down for writes until someone repairs it, and a client may try again later, where a 500 would
#: say this request found a bug.
_DISK_FULL = (507, "the server's disk is full: nothing was stored")
DISK_REFUSALS: dict[int, tuple[int, str]] = {
    errno.ENOSPC: _DISK_FULL,
    errno.EDQUOT: _DISK_FULL,
    errno.EROFS: (503, "the server's storage is read-only: nothing was stored"),
}


def refusal(exc: Exception) -> tuple[int, str] | None:
    """(status, one-line reason) for a refusal; None for anything unexpected (a bug: 500)."""
    if isinstance(exc, ImageRejected):
        return exc.status, exc.reason
    if isinstance(exc, OSError) and exc.errno in DISK_REFUSALS:
        log.warning("refused a write: %s", exc)  # the operator's to fix, so it is logged
        return DISK_REFUSALS[exc.errno]
    for cls, status in STATUS_OF:
        if isinstance(exc, cls):
            return status, str(exc) or cls.__name__
    return None
