"""Who is asking: the one authentication path of WebDAV and REST alike.

The API key comes from HTTP Basic (the password, or the user name when the
password is empty, so `curl -u KEY:` works) or a Bearer token, and is
checked against the key store; a wrong one counts against the client's
address (uss_dav.failures). Each face turns a Refused into its own response
(a Basic challenge for WebDAV, problem details for REST), nothing else.

WsgiDAV's HTTPAuthenticator is not used: it logs the Basic user name on
failure (with `curl -u KEY:` that is the key), answers 500 to a malformed
Basic header, and cannot read Bearer tokens.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from uss_dav.keys import KeyRecord
from uss_dav.services import Services
from uss_dav.vocabulary import COLLECTION, KEY_RECORD, MODE, QUOTA

#: Methods each scope may use (upload's PUT is further limited to new files by the provider).
SCOPE_METHODS = {
    "ro": frozenset({"GET", "HEAD", "PROPFIND", "OPTIONS"}),
    "upload": frozenset({"PUT", "OPTIONS"}),
}


class Refused(Exception):
    """Authentication or authorisation failed: 401 (no or wrong key), 403 (scope) or 429 (too many failures)."""

    def __init__(self, status: int, reason: str, retry_after: float | None = None) -> None:
        super().__init__(f"{status}: {reason}")
        self.status, self.reason, self.retry_after = status, reason, retry_after


def scope_allows(record: KeyRecord, method: str) -> bool:
    allowed = SCOPE_METHODS.get(record.scope)
    return allowed is None or method in allowed


def presented_key(environ: dict[str, Any]) -> str | None:
    """The key in the Authorization header, or None."""
    header = environ.get("HTTP_AUTHORIZATION", "")
    scheme, _, value = header.strip().partition(" ")
    scheme, value = scheme.lower(), value.strip()
    if scheme == "bearer":
        return value or None
    if scheme != "basic":
        return None
    try:
        decoded = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):  # not base64, not ASCII, or not UTF-8 inside
        return None
    user, _, password = decoded.partition(":")
    return password or user or None


def count_failure(services: Services, environ: dict[str, Any]) -> None:
    """Count a wrong credential against the client's address; Refused(429) once past the limit."""
    wait = services.failures.fail(environ.get("REMOTE_ADDR") or "")
    if wait is not None:
        raise Refused(429, "too many failed authentications from this address; retry later", wait)


def authenticate(services: Services, environ: dict[str, Any], method: str | None) -> KeyRecord:
    """The record of the valid key the request carries, bound into `environ`; else Refused.

    `method` is the WebDAV method with the request's effect, checked against
    the key's scope; None: any scope may. The key's collection is made if it
    is missing (keys imported or written by hand before their collection).
    """
    key = presented_key(environ)
    record = services.keys.verify(key) if key else None
    if record is None:
        if "HTTP_AUTHORIZATION" not in environ:  # clients probe without credentials first
            raise Refused(401, "API key required")
        count_failure(services, environ)
        raise Refused(401, "wrong API key")
    if method is not None and not scope_allows(record, method):
        raise Refused(403, f"this key's scope ({record.scope}) does not allow {method}")
    services.ensure_collection(record.collection)
    environ[KEY_RECORD] = record
    environ[COLLECTION] = record.collection
    environ[MODE] = services.mode_for(record)
    environ[QUOTA] = services.quota_for(record)
    return record
