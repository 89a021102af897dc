"""Who is asking: the API key from HTTP Basic or Bearer, checked against the key store.

WsgiDAV's HTTPAuthenticator is replaced rather than fed a domain controller:
it logs the Basic user name on failure (with `curl -u KEY:` that is the key),
answers 500 to a malformed Basic header, and cannot read Bearer tokens.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import logging
import os
import struct
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from wsgidav.mw.base_mw import BaseMiddleware

from uss_dav.errors import text_response
from uss_dav.keys import KeyRecord, KeyStore
from uss_dav.storage import atomic_write_bytes, flocked

log = logging.getLogger(__name__)

#: environ keys this module sets for the layers below it.
KEY_RECORD = "uss.key"

#: Methods each scope may use (upload's PUT is further limited to new files by the provider).
SCOPE_METHODS = {
    "ro": frozenset({"GET", "HEAD", "PROPFIND", "OPTIONS"}),
    "upload": frozenset({"PUT", "OPTIONS"}),
}


def scope_allows(record: KeyRecord, method: str) -> bool:
    allowed = SCOPE_METHODS.get(record.scope)
    return allowed is None or method in allowed


class FailureCounter:
    """Failed authentications per client address in a sliding window, counted on the data directory.

    Past `limit` failures an address gets 429 instead of 401 until the window
    moves on; a valid key is still admitted (it is checked first), so a
    guessing neighbour does not lock out real clients. Each address has a
    small file of failure times in `directory`, named by a hash of the
    address, read and replaced whole (write + rename) under flock of its
    `.lock` file, so all serving processes, and machines sharing the
    directory, count together. Never rewritten in place: on CephFS a file
    rewritten in place under flock by two clients lost half the counts
    (another client's page cache served the old bytes). Only failures touch
    it; files idle for a window are removed now and then.
    """

    PRUNE_EVERY = 256

    def __init__(self, directory: Path, limit: int = 20, window: float = 60.0) -> None:
        self.directory, self.limit, self.window = directory, limit, window
        self._until_prune = self.PRUNE_EVERY
        if limit > 0:
            directory.mkdir(parents=True, exist_ok=True)

    def fail(self, address: str) -> float | None:
        """Count a failure; return seconds to wait if the address is now over the limit."""
        if self.limit <= 0:
            return None
        now = time.time()  # a clock every process shares
        path = self.directory / hashlib.sha256(address.encode("utf-8", "surrogateescape")).hexdigest()[:32]
        with flocked(f"{path}.lock"):
            try:
                raw = path.read_bytes()
            except FileNotFoundError:
                raw = b""
            times = [t for (t,) in struct.iter_unpack("<d", raw[: len(raw) // 8 * 8]) if t > now - self.window]
            times = [*times, now][-(self.limit + 1):]
            atomic_write_bytes(path, struct.pack(f"<{len(times)}d", *times), self.directory, durable=False)
        self._until_prune -= 1
        if self._until_prune <= 0:
            self._until_prune = self.PRUNE_EVERY
            self._prune(now)
        return max(1.0, min(times) + self.window - now) if len(times) > self.limit else None

    def _prune(self, now: float) -> None:
        """Remove the files of addresses that have not failed for a window (and stale temporary files)."""
        for entry in os.scandir(self.directory):
            if entry.name.endswith(".lock"):
                continue  # goes with its counts file
            with contextlib.suppress(FileNotFoundError):
                if entry.stat().st_mtime < now - self.window:
                    os.unlink(entry.path)
                    if not entry.name.endswith(".tmp"):
                        os.unlink(f"{entry.path}.lock")


def too_many(start_response: Callable[..., Any], retry_after: float) -> Iterable[bytes]:
    return text_response(
        start_response,
        "429 Too Many Requests",
        "too many failed authentications from this address; retry later",
        [("Retry-After", str(int(retry_after + 0.999)))],
    )


def presented_key(environ: dict[str, Any]) -> str | None:
    """The key in the Authorization header, or None.

    Basic: the password, or the user name when the password is empty
    (so `curl -u KEY:` works). Bearer: the token.
    """
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


def forbidden(start_response: Callable[..., Any], reason: str) -> Iterable[bytes]:
    return text_response(start_response, "403 Forbidden", reason)


def challenge(start_response: Callable[..., Any], realm: str, reason: str) -> Iterable[bytes]:
    return text_response(
        start_response, "401 Unauthorized", reason, [("WWW-Authenticate", f'Basic realm="{realm}", charset="UTF-8"')]
    )


def authenticate(keys: KeyStore, environ: dict[str, Any]) -> KeyRecord | None:
    key = presented_key(environ)
    return keys.verify(key) if key else None


class KeyAuthenticator(BaseMiddleware):
    """WsgiDAV middleware: admit requests that carry a valid key, 401 the rest.

    Sets `wsgidav.auth.user_name` to the key's id (never the key), which
    WsgiDAV uses as lock principal and in its request log.
    """

    def __init__(self, wsgidav_app: Any, next_app: Callable[..., Any], config: dict[str, Any]) -> None:
        super().__init__(wsgidav_app, next_app, config)
        uss = config["uss"]
        self.keys: KeyStore = uss["keys"]
        self.realm: str = uss["realm"]
        self.mode_for: Callable[[KeyRecord], str] = uss["mode_for"]
        self.quota_for: Callable[[KeyRecord], Any] = uss["quota_for"]
        self.ensure_collection: Callable[[str], None] = uss["ensure_collection"]
        self.failures: FailureCounter = uss["failures"]
        self._ready: set[str] = set()

    def is_disabled(self) -> bool:
        return False

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        record = authenticate(self.keys, environ)
        if record is None:
            if "HTTP_AUTHORIZATION" not in environ:  # clients probe without credentials first
                return challenge(start_response, self.realm, "API key required")
            wait = self.failures.fail(environ.get("REMOTE_ADDR", ""))
            if wait is not None:
                return too_many(start_response, wait)
            return challenge(start_response, self.realm, "wrong API key")
        if not scope_allows(record, environ["REQUEST_METHOD"]):
            return forbidden(start_response, f"this key's scope ({record.scope}) does not allow {environ['REQUEST_METHOD']}")
        if record.collection not in self._ready:
            # Keys made before their collection (an import, a hand-made file): create it once.
            self.ensure_collection(record.collection)
            self._ready.add(record.collection)
        environ[KEY_RECORD] = record
        environ["uss.collection"] = record.collection
        environ["uss.compression"] = self.mode_for(record)
        environ["uss.quota"] = self.quota_for(record)
        environ["wsgidav.auth.realm"] = self.realm
        environ["wsgidav.auth.user_name"] = record.id
        environ["wsgidav.auth.roles"] = ("editor",)
        environ["wsgidav.auth.permissions"] = ()
        return self.next_app(environ, start_response)
