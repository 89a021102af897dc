"""The plain GET of a stored file, answered before WsgiDAV's layers run.

A thumbnail grid or a sync tool's download is hundreds of GETs with no
condition, range or body: the answer can only be 200 and the whole file.
WsgiDAV would re-encode and normalise the path, wrap start_response, run
its middleware stack, build a resource object and evaluate the (absent)
If headers first: about a third of a small GET's time in process. PlainGet
checks the key the same way (uss_dav.auth), opens the file and sends it
(rebuilt first, if it is stored encoded); every other request, and any
plain GET it cannot answer whole (a folder, a missing file, a path WsgiDAV
would normalise), goes on to WsgiDAV unchanged, where the key is not
checked a second time.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from wsgidav import util

from providers.authenticator import refusal_response
from providers.content_types import content_type
from uss_dav.auth import Refused, authenticate
from uss_dav.services import Services
from uss_dav.storage import Opened, Rebuilt, StorageError
from uss_dav.vocabulary import COLLECTION, SENDFILE, entity_tag, first_piece, http_date

#: WsgiDAV's request log: a GET served here leaves the line WsgiDAV would have
#: left (with the request id uss_dav.metrics appends to it).
REQUEST_LOG = logging.getLogger("wsgidav.wsgidav_app")

#: Request headers that make a GET conditional or partial: WsgiDAV answers those.
_GET_CONDITIONS = (
    "HTTP_RANGE",
    "HTTP_IF_RANGE",
    "HTTP_IF_MATCH",
    "HTTP_IF_NONE_MATCH",
    "HTTP_IF_MODIFIED_SINCE",
    "HTTP_IF_UNMODIFIED_SINCE",
    "HTTP_IF",
    "HTTP_TRANSFER_ENCODING",  # a body to read and vet first
)


def is_plain_get(environ: dict[str, Any]) -> bool:
    """A GET that can only be answered with 200 and the whole file: no conditions, range, body or depth."""
    if environ["REQUEST_METHOD"] != "GET" or any(name in environ for name in _GET_CONDITIONS):
        return False
    return environ.get("HTTP_DEPTH", "0") == "0" and environ.get("CONTENT_LENGTH", "") in ("", "0")


def is_canonical(path: str) -> bool:
    """A path WsgiDAV's normalize_path would leave as it is (dot segments never get this far)."""
    return path.startswith("/") and not path.endswith("/") and "//" not in path


class PlainGet:
    """WSGI app: serve plain GETs of stored files, hand everything else to `dav` (the WsgiDAVApp)."""

    def __init__(self, services: Services, dav: Any) -> None:
        self.services, self.dav = services, dav
        self.charset: str | None = dav.config.get("default_charset")
        self.block_size: int = dav.config["block_size"]
        self.log_requests: bool = dav.verbose >= 3  # WsgiDAV's own test for its request line

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not is_plain_get(environ):
            return self.dav(environ, start_response)
        path = util.re_encode_wsgi(environ["PATH_INFO"])
        if not is_canonical(path):
            return self.dav(environ, start_response)
        try:
            record = authenticate(self.services, environ, "GET")
        except Refused as refused:
            return refusal_response(start_response, refused, self.services.config.realm)
        try:
            opened = self.services.store.open(environ[COLLECTION], path)
        except (StorageError, OSError):  # WsgiDAV's path maps these to their statuses
            opened = None
        if opened is None:
            return self.dav(environ, start_response)
        if self.log_requests:
            start_response = logged(start_response, environ, path, record.id)
        return send_whole(start_response, opened, path, self.charset, self.block_size, environ.get(SENDFILE))


def logged(start_response: Callable[..., Any], environ: dict[str, Any], path: str, user: str) -> Callable[..., Any]:
    """start_response that writes the request's log line in WsgiDAV's format once the status is known."""
    started = time.time()

    def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        extra = [f"length={environ['CONTENT_LENGTH']}"] if environ.get("CONTENT_LENGTH") else []
        extra.append("depth=0")  # WsgiDAV gives a GET its default Depth before logging it
        extra.append(f"elap={time.time() - started:.3f}sec")
        REQUEST_LOG.info(
            '%s - %s - [%s] "GET %s" %s -> %s',
            environ.get("REMOTE_ADDR", ""),
            user,
            util.get_log_time(),
            path,
            ", ".join(extra),
            status,
        )
        return start_response(status, headers, exc_info)

    return start


def send_whole(
    start_response: Callable[..., Any],
    opened: Opened,
    path: str,
    charset: str | None,
    block_size: int,
    sendfile: Callable[[Any, int], None] | None,
) -> Iterator[bytes]:
    """200 with the file, headers as WsgiDAV's _send_resource writes them (tests compare the two; the engine adds Date).

    A generator, so the file stays open until the engine has sent it (or
    dropped the response) and is closed then, in the finally.
    """
    try:
        entry = opened.entry
        headers = [
            ("Content-Length", str(entry.size)),
            ("Last-Modified", http_date(entry.mtime)),
            ("Content-Type", content_type(path, charset)),
            ("ETag", entity_tag(entry.etag)),
            ("Accept-Ranges", "bytes"),
        ]
        stream = opened.stream()
        if isinstance(stream, Rebuilt):
            # Rebuilt before the 200 is sent: a codec failure is then a whole
            # 500, not a body cut short. One piece, no per-block loop.
            data = stream.data
            start_response("200 OK", headers)
            yield data
            return
        start_response("200 OK", headers)
        left = entry.size
        if not isinstance(stream, io.FileIO):
            sendfile = None
        # With sendfile, only a first piece passes through here: it starts the
        # response in every middleware and goes out with the headers.
        piece = first_piece(entry.size) if sendfile else block_size
        while left > 0 and (chunk := stream.read(min(piece, left))):
            left -= len(chunk)
            yield chunk
            if sendfile and left:
                sendfile(stream, left)
                return
    finally:
        opened.close()
