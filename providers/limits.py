"""Refuse oversized and hostile requests before WsgiDAV reads or parses anything.

- An upload whose Content-Length is over the limit: 413, body unread.
- XML bodies (PROPFIND, PROPPATCH, LOCK, ...): capped in size (413), and
  parsed once here (expat, no tree) so a DOCTYPE or entity declaration (400)
  or absurd nesting (400, where WsgiDAV would die of RecursionError) never
  reaches WsgiDAV's parser. The checked body is handed on unchanged.
- PROPFIND Depth: infinity: 403 with DAV:propfind-finite-depth (RFC 4918
  9.1) unless allowed; a PROPFIND without Depth is taken as Depth 1, which
  is what clients that omit it want.
- Headers WsgiDAV would misread: a malformed If header (400, where WsgiDAV
  ignores it and runs the request unconditionally), a Range it would
  answer with the wrong bytes (ignored, or 416), a Destination that is no
  absolute path or URL (400).
- Chunked bodies: an XML body is read here (capped) so it is vetted and
  WsgiDAV sees it (the engine drains or closes on any other unread body,
  so its bytes are never parsed as the next request); a chunked upload is read in pieces so
  the size limit stops it as it passes.
"""

from __future__ import annotations

import functools
import io
import re
from collections.abc import Callable, Iterable
from typing import Any, TypeVar
from xml.parsers import expat

from wsgidav.dav_error import (
    HTTP_FORBIDDEN,
    HTTP_RANGE_NOT_SATISFIABLE,
    HTTP_REQUEST_ENTITY_TOO_LARGE,
    DAVError,
    PRECONDITION_CODE_PropfindFiniteDepth,
)
from wsgidav.mw.base_mw import BaseMiddleware

from providers.request_checks import check_depth, check_destination
from providers.settings import dav_settings
from uss_dav.responses import text_response

#: Methods whose body, if any, is XML that WsgiDAV parses.
XML_METHODS = frozenset({"PROPFIND", "PROPPATCH", "LOCK"})
#: Methods whose body WsgiDAV reads whole into memory and ignores (RFC 2518's propertybehavior).
IGNORED_BODY_METHODS = frozenset({"COPY", "MOVE"})


#: RFC 4918 10.4.2: [Resource-Tag] List+, a List being ( Condition+ ), a Condition
#: [Not] and a State-token (<...>) or an entity-tag ([...]).
_IF_CONDITION = r'(?:Not\s*)?(?:<[^<>\s]*>|\[\s*(?:W/)?"[^"]*"\s*\])'
_IF_LIST = rf"\(\s*(?:{_IF_CONDITION}\s*)+\)"
IF_HEADER = re.compile(rf"^\s*(?:(?:<[^<>\s]+>\s*)?(?:{_IF_LIST}\s*)+)+$", re.IGNORECASE)
RANGE_SPEC = re.compile(r"^\s*(?:(\d+)-(\d*)|-(\d+))\s*$")
#: How much of a chunked upload is read at once (the engine's read(n) waits for all n bytes).
CHUNKED_PIECE = 64 * 1024
#: XML bodies up to this size have what was read from them kept (small_body_memo).
SMALL_BODY = 4096

T = TypeVar("T")


def small_body_memo(read: Callable[[bytes], T], entries: int = 64) -> Callable[[bytes], T]:
    """`read` of a request body, kept for the last `entries` small bodies.

    A client sends the same few PROPFIND and LOCK bodies again and again:
    vetting one (expat, below) and reading it (FastPropfind's parse) took
    a third of a cached depth-1 listing of 100 files in process (100 us
    with them, 68 without). `read` must depend on the bytes alone; a body it refuses raises
    again every time (nothing is kept for it). Only bodies up to SMALL_BODY
    are kept, so the memo holds at most entries * SMALL_BODY bytes.
    """
    kept = functools.lru_cache(maxsize=entries)(read)

    def call(body: bytes) -> T:
        return kept(body) if len(body) <= SMALL_BODY else read(body)

    return call


class RequestRefused(Exception):
    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


def content_length(environ: dict[str, Any]) -> int | None:
    """The declared body length, None if absent; RequestRefused if malformed."""
    text = environ.get("CONTENT_LENGTH", "").strip()
    if not text:
        return None
    if not text.isdigit():
        raise RequestRefused("400 Bad Request", "Content-Length must be a non-negative integer")
    return int(text)


class _Declaration(Exception):
    """A DOCTYPE or entity declaration met while vetting XML."""


def _refuse_declaration(*_args: Any) -> None:
    raise _Declaration


def _xml_depth(body: bytes, max_depth: int) -> None:
    """Parse `body` safely; RequestRefused for DTDs, entities, bad XML or nesting over max_depth.

    Expat with handlers, no tree: entities can only be declared in a DOCTYPE,
    which is refused as it starts, before any declaration in it is read (what
    defusedxml's forbid_dtd does, at a tenth of the cost of its iterparse:
    about 8 us against 80 for a PROPFIND body).
    """
    parser = expat.ParserCreate()
    depth = 0

    def start(_name: str, _attrs: Any) -> None:
        nonlocal depth
        depth += 1
        if depth > max_depth:
            raise RequestRefused("400 Bad Request", f"XML nested deeper than {max_depth} levels")

    def end(_name: str) -> None:
        nonlocal depth
        depth -= 1

    parser.StartElementHandler, parser.EndElementHandler = start, end
    parser.StartDoctypeDeclHandler = _refuse_declaration
    parser.EntityDeclHandler = _refuse_declaration
    parser.UnparsedEntityDeclHandler = _refuse_declaration
    parser.ExternalEntityRefHandler = _refuse_declaration
    try:
        parser.Parse(body, True)
    except _Declaration:
        raise RequestRefused("400 Bad Request", "DOCTYPE and entity declarations are not allowed") from None
    except expat.ExpatError as exc:
        raise RequestRefused("400 Bad Request", f"malformed XML: {exc}") from None


class RequestLimits(BaseMiddleware):
    """WsgiDAV middleware; its limits come from the Config in the DavSettings."""

    def __init__(self, wsgidav_app: Any, next_app: Callable[..., Any], config: dict[str, Any]) -> None:
        super().__init__(wsgidav_app, next_app, config)
        limits = dav_settings(config).services.config
        self.max_upload = limits.max_upload_bytes
        self.max_xml = limits.max_xml_bytes
        self._vet = small_body_memo(functools.partial(_xml_depth, max_depth=limits.max_xml_depth))
        self.allow_infinity = limits.allow_propfind_infinity

    def is_disabled(self) -> bool:
        return False

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        try:
            self._check(environ)
        except RequestRefused as exc:
            # After a 413 the unread body must not be parsed as a request.
            close = [("Connection", "close")] if exc.status.startswith("413") else []
            return text_response(start_response, exc.status, exc.reason, close)
        return self.next_app(environ, start_response)

    def _check(self, environ: dict[str, Any]) -> None:
        method = environ["REQUEST_METHOD"]
        if "HTTP_IF" in environ and not IF_HEADER.match(environ["HTTP_IF"]):
            raise RequestRefused("400 Bad Request", "malformed If header")
        if method in ("GET", "HEAD") and "HTTP_RANGE" in environ:
            self._check_range(environ)
        check_depth(environ)
        if method in ("COPY", "MOVE"):
            check_destination(environ)
        length = content_length(environ)
        chunked = length is None and "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        if method == "PUT":
            if self.max_upload and length is not None and length > self.max_upload:
                raise RequestRefused("413 Content Too Large", f"upload larger than the {self.max_upload}-byte limit")
            if chunked and self.max_upload:
                environ["wsgi.input"] = _CappedBody(environ["wsgi.input"], self.max_upload)
            return
        if chunked:
            length = self._take_chunked_body(environ)
        if method == "PROPFIND":
            self._check_depth(environ)
        if method in XML_METHODS | IGNORED_BODY_METHODS and length and length > self.max_xml:
            raise RequestRefused("413 Content Too Large", f"XML body larger than {self.max_xml} bytes")
        if method in XML_METHODS and length:
            body = environ["wsgi.input"].read(length)
            self._vet(body)
            environ["wsgi.input"] = io.BytesIO(body)

    def _take_chunked_body(self, environ: dict[str, Any]) -> int:
        """Read a chunked body whole (up to the XML cap) and hand it on with a Content-Length."""
        try:
            body = environ["wsgi.input"].read(self.max_xml + 1)
        except (ValueError, OSError, OverflowError, MemoryError):
            raise RequestRefused("400 Bad Request", "malformed chunked request body") from None
        if len(body) > self.max_xml:
            raise RequestRefused("413 Content Too Large", f"request body larger than {self.max_xml} bytes")
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        return len(body)

    @staticmethod
    def _check_range(environ: dict[str, Any]) -> None:
        """Drop a Range WsgiDAV would misread (RFC 9110 14.2: ignore what is not understood)."""
        unit, _, specs = environ["HTTP_RANGE"].partition("=")
        parsed = [RANGE_SPEC.match(spec) for spec in specs.split(",")]
        if unit.strip().lower() != "bytes" or not all(parsed):
            del environ["HTTP_RANGE"]
            return
        for match in parsed:
            first, last, _suffix = match.groups()  # type: ignore[union-attr]
            if first is not None and last and int(last) < int(first):
                del environ["HTTP_RANGE"]  # invalid spec: the whole header is ignored
                return
        if all(m.group(3) is not None and int(m.group(3)) == 0 for m in parsed):  # type: ignore[union-attr]
            raise DAVError(HTTP_RANGE_NOT_SATISFIABLE, "a suffix range of 0 bytes selects nothing")

    def _check_depth(self, environ: dict[str, Any]) -> None:
        depth = environ.get("HTTP_DEPTH", "").strip().lower()
        if not depth and not self.allow_infinity:
            environ["HTTP_DEPTH"] = "1"
        elif depth == "infinity" and not self.allow_infinity:
            raise DAVError(
                HTTP_FORBIDDEN,
                "PROPFIND with Depth: infinity is not allowed; use Depth 0 or 1",
                err_condition=PRECONDITION_CODE_PropfindFiniteDepth,
            )


class _CappedBody:
    """A chunked upload, read in pieces, that stops with 413 as soon as it passes the limit."""

    def __init__(self, raw: Any, limit: int) -> None:
        self.raw, self.limit, self.seen = raw, limit, 0

    def read(self, size: int = -1) -> bytes:
        piece = CHUNKED_PIECE if size is None or size < 0 else min(size, CHUNKED_PIECE)
        data = self.raw.read(piece)
        self.seen += len(data)
        if self.seen > self.limit:
            raise DAVError(HTTP_REQUEST_ENTITY_TOO_LARGE, f"upload larger than the {self.limit}-byte limit")
        return data
