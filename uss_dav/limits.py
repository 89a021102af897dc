"""Refuse oversized and hostile requests before WsgiDAV reads or parses anything.

- An upload whose Content-Length is over the limit: 413, body unread.
- XML bodies (PROPFIND, PROPPATCH, LOCK, ...): capped in size (413), and
  parsed once here with defusedxml so a DOCTYPE or entity declaration (400)
  or absurd nesting (400, where WsgiDAV would die of RecursionError) never
  reaches WsgiDAV's parser. The checked body is handed on unchanged.
- PROPFIND Depth: infinity: 403 with DAV:propfind-finite-depth (RFC 4918
  9.1) unless allowed; a PROPFIND without Depth is taken as Depth 1, which
  is what clients that omit it want.
"""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from typing import Any

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import XMLParser
from wsgidav.dav_error import HTTP_FORBIDDEN, PRECONDITION_CODE_PropfindFiniteDepth, DAVError
from wsgidav.mw.base_mw import BaseMiddleware

#: Methods whose body, if any, is XML that WsgiDAV parses.
XML_METHODS = frozenset({"PROPFIND", "PROPPATCH", "LOCK"})
#: Methods whose body WsgiDAV reads whole into memory and ignores (RFC 2518's propertybehavior).
IGNORED_BODY_METHODS = frozenset({"COPY", "MOVE"})


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


def _xml_depth(body: bytes, max_depth: int) -> None:
    """Parse `body` safely; RequestRefused for DTDs, entities, bad XML or nesting over max_depth."""
    parser = XMLParser(forbid_dtd=True, forbid_entities=True, forbid_external=True)
    depth = 0
    try:
        for event, _el in ET.iterparse(io.BytesIO(body), events=("start", "end"), parser=parser):
            depth += 1 if event == "start" else -1
            if depth > max_depth:
                raise RequestRefused("400 Bad Request", f"XML nested deeper than {max_depth} levels")
    except DefusedXmlException:
        raise RequestRefused("400 Bad Request", "DOCTYPE and entity declarations are not allowed") from None
    except ET.ParseError as exc:
        raise RequestRefused("400 Bad Request", f"malformed XML: {exc}") from None


class RequestLimits(BaseMiddleware):
    """WsgiDAV middleware; its settings come from config["uss"]["limits"]."""

    def __init__(self, wsgidav_app: Any, next_app: Callable[..., Any], config: dict[str, Any]) -> None:
        super().__init__(wsgidav_app, next_app, config)
        limits = config["uss"]["limits"]
        self.max_upload: int = limits["max_upload_bytes"]
        self.max_xml: int = limits["max_xml_bytes"]
        self.max_xml_depth: int = limits["max_xml_depth"]
        self.allow_infinity: bool = limits["allow_propfind_infinity"]

    def is_disabled(self) -> bool:
        return False

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        try:
            self._check(environ)
        except RequestRefused as exc:
            body = f"{exc.reason}\n".encode()
            headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
            if exc.status.startswith("413"):
                headers.append(("Connection", "close"))  # the unread body must not be parsed as a request
            start_response(exc.status, headers)
            return [body]
        return self.next_app(environ, start_response)

    def _check(self, environ: dict[str, Any]) -> None:
        method = environ["REQUEST_METHOD"]
        length = content_length(environ)
        if method == "PUT":
            if self.max_upload and length is not None and length > self.max_upload:
                raise RequestRefused("413 Content Too Large", f"upload larger than the {self.max_upload}-byte limit")
            return
        if method == "PROPFIND":
            self._check_depth(environ)
        if method in XML_METHODS | IGNORED_BODY_METHODS and length and length > self.max_xml:
            raise RequestRefused("413 Content Too Large", f"XML body larger than {self.max_xml} bytes")
        if method in XML_METHODS and length:
            body = environ["wsgi.input"].read(length)
            _xml_depth(body, self.max_xml_depth)
            environ["wsgi.input"] = io.BytesIO(body)

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
