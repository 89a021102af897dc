"""Who is asking: the API key from HTTP Basic or Bearer, checked against the key store.

WsgiDAV's HTTPAuthenticator is replaced rather than fed a domain controller:
it logs the Basic user name on failure (with `curl -u KEY:` that is the key),
answers 500 to a malformed Basic header, and cannot read Bearer tokens.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Callable, Iterable
from typing import Any

from wsgidav.mw.base_mw import BaseMiddleware

from uss_dav.keys import KeyRecord, KeyStore

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
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, _, password = decoded.partition(":")
    return password or user or None


def forbidden(start_response: Callable[..., Any], reason: str) -> Iterable[bytes]:
    body = f"{reason}\n".encode()
    start_response("403 Forbidden", [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))])
    return [body]


def challenge(start_response: Callable[..., Any], realm: str, reason: str) -> Iterable[bytes]:
    body = f"{reason}\n".encode()
    start_response(
        "401 Unauthorized",
        [
            ("WWW-Authenticate", f'Basic realm="{realm}", charset="UTF-8"'),
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
        ],
    )
    return [body]


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
        self.ensure_collection: Callable[[str], None] = uss["ensure_collection"]

    def is_disabled(self) -> bool:
        return False

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        record = authenticate(self.keys, environ)
        if record is None:
            reason = "wrong API key" if "HTTP_AUTHORIZATION" in environ else "API key required"
            return challenge(start_response, self.realm, reason)
        if not scope_allows(record, environ["REQUEST_METHOD"]):
            return forbidden(start_response, f"this key's scope ({record.scope}) does not allow {environ['REQUEST_METHOD']}")
        self.ensure_collection(record.collection)
        environ[KEY_RECORD] = record
        environ["uss.collection"] = record.collection
        environ["uss.compression"] = self.mode_for(record)
        environ["wsgidav.auth.realm"] = self.realm
        environ["wsgidav.auth.user_name"] = record.id
        environ["wsgidav.auth.roles"] = ("editor",)
        environ["wsgidav.auth.permissions"] = ()
        return self.next_app(environ, start_response)
