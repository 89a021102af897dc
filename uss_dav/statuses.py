"""The one table from a refusal raised in the core to the HTTP status both faces answer with.

WebDAV (providers.collection.mapped) and REST (uss_dav.rest.wire.problem_for)
both look refusals up here, so one storage error never means two statuses.
A full disk is the one operating-system error with a status of its own
here (507): it can come from any write, and it is neither the client's
fault nor a bug. Where a protocol gives a refusal a meaning of its own (WebDAV's
`If-None-Match: *` losing a race is a failed precondition, 412), the face
says so where it sets that condition, not here.
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


#: A full disk or an exhausted file-system quota: not the client's fault, and not a bug either
#: (RFC 4918's 507 says the server cannot store what it was asked to).
OUT_OF_SPACE = frozenset((errno.ENOSPC, errno.EDQUOT))


def refusal(exc: Exception) -> tuple[int, str] | None:
    """(status, one-line reason) for a refusal; None for anything unexpected (a bug: 500)."""
    if isinstance(exc, ImageRejected):
        return exc.status, exc.reason
    if isinstance(exc, OSError) and exc.errno in OUT_OF_SPACE:
        log.warning("refused a write: %s", exc)  # the operator's to fix, so it is logged
        return 507, "the server's disk is full: nothing was stored"
    for cls, status in STATUS_OF:
        if isinstance(exc, cls):
            return status, str(exc) or cls.__name__
    return None
