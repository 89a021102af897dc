"""Whether a write may go ahead under the WebDAV locks: the one seam REST shares with WebDAV.

WsgiDAV's lock manager holds the locks (on the data directory or in
Redis); the WebDAV face asks it before every write. The REST face asks the
same manager through here, keyed the way the WebDAV provider keys locks
(`/<collection id>/<path>`), with the tokens a WebDAV client would send
(`If: (<token>)`, or `Lock-Token: <token>`). Nothing here imports a face.
"""

from __future__ import annotations

import unicodedata
from typing import Any, Protocol
from urllib.parse import quote

from wsgidav import util
from wsgidav.dav_error import HTTP_LOCKED, DAVError


class Locked(Exception):
    """The resource (or a folder above it) is locked by a WebDAV client, and no token was presented."""


class LockManager(Protocol):
    def check_write_permission(self, *, url: str, depth: str, token_list: list[str], principal: str) -> None: ...


def presented_tokens(environ: dict[str, Any]) -> list[str]:
    """The lock tokens a request carries, in an If header or a Lock-Token header."""
    tokens: list[str] = []
    if environ.get("HTTP_IF"):
        parsed = {"HTTP_IF": environ["HTTP_IF"]}
        util.parse_if_header_dict(parsed)
        tokens.extend(parsed["wsgidav.ifLockTokenList"])
    lock_token = environ.get("HTTP_LOCK_TOKEN", "").strip()
    if lock_token:
        tokens.append(lock_token.removeprefix("<").removesuffix(">"))
    return tokens


class WriteLocks:
    """Asks the lock manager the WebDAV face uses whether a key may write a path."""

    def __init__(self, manager: LockManager | None) -> None:
        self.manager = manager

    def check(self, cid: str, path: str, *, principal: str, environ: dict[str, Any]) -> None:
        """Return if `principal` may write `path` of collection `cid`; raise Locked otherwise.

        A lock on the path itself or a depth-infinity lock on a folder above
        it counts (a new name inside a locked folder included), unless its
        token is presented.
        """
        if self.manager is None:
            return
        url = quote(f"/{cid}/{unicodedata.normalize('NFC', path).strip('/')}")
        try:
            self.manager.check_write_permission(
                url=url, depth="0", token_list=presented_tokens(environ), principal=principal
            )
        except DAVError as exc:
            if exc.value != HTTP_LOCKED:
                raise
            raise Locked(f"{path!r} is locked by a WebDAV client; send its lock token (If: (<token>))") from None
