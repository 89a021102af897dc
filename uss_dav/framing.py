"""Request headers read under RFC 9112's framing rules: whatever lets two parsers disagree on a request's end is refused.

cheroot folds repeated header lines into one value before anyone sees them:
two Content-Length lines keep the last (a PUT of 5 bytes declared as 5 and 3
stored 3 and read the rest as the next request), two Host lines keep the
last, a repeated Transfer-Encoding becomes "chunked, chunked", and it
accepts obs-fold lines and white space before the colon. A proxy in front
may read any of these the other way, which is how requests are smuggled.
So the raw lines are checked here, as they are read; a refusal is a 400
from cheroot, after which it closes the connection (the body was not read,
so nothing on it can be trusted).

Decisions where RFC 9110/9112 leave a choice:

- `Content-Length: 5, 5` and two identical Content-Length lines are refused.
  RFC 9110 8.6 lets a recipient either refuse such a value or take it as 5;
  the value does not match `1*DIGIT`, only a broken sender or intermediary
  produces it, and refusing leaves no reading on which two parsers can
  differ. A Content-Length that is not plain digits (`+5`, `0x5`, `5_0`,
  all of which int() accepts) is refused for the same reason.
- Transfer-Encoding: chunked must be the last coding and appear once
  (RFC 9112 6.1 and 6.3: otherwise the length cannot be determined, 400);
  a coding we do not implement before a final chunked is left to cheroot,
  which answers 501 (RFC 9112 6.1's SHOULD) and closes the connection.
- Transfer-Encoding in an HTTP/1.0 request is faulty framing (RFC 9112 6.1).
"""

from __future__ import annotations

import re
from typing import Any

from cheroot import server as cheroot_server

CRLF = b"\r\n"
#: RFC 9110 5.1: field-name = token.
TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
DIGITS = re.compile(rb"[0-9]+\Z")
#: RFC 9112 3.2: uri-host [ ":" port ]; an IP literal in brackets, or reg-name / IPv4 characters.
HOST = re.compile(rb"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+,;=]*)(:[0-9]*)?\Z")
#: Fields that frame the request (or name its target): one line each, never repeated.
SINGLE = frozenset((b"Host", b"Content-Length", b"Transfer-Encoding"))
#: Fields cheroot joins with ", " when repeated (its list, in the spelling its keys take).
JOINED = frozenset(name.title() for name in cheroot_server.comma_separated_headers)


class FramingError(ValueError):
    """A header section whose framing is in doubt; cheroot answers a ValueError from its header reader with 400 and a close."""


class StrictHeaderReader(cheroot_server.HeaderReader):
    """cheroot's header reader, refusing what RFC 9112 refuses instead of folding it away."""

    def __call__(self, rfile: Any, hdict: dict[bytes, bytes] | None = None) -> dict[bytes, bytes]:
        headers: dict[bytes, bytes] = {} if hdict is None else hdict
        while True:
            line = rfile.readline()
            if not line:
                raise FramingError("Illegal end of headers.")
            if line == CRLF:
                break
            if not line.endswith(CRLF):
                raise FramingError("HTTP requires CRLF terminators")
            if line[:1] in (b" ", b"\t"):
                raise FramingError("obs-fold (a header line starting with white space) is not allowed")
            name, colon, value = line[:-2].partition(b":")
            if not colon:
                raise FramingError("Illegal header line.")
            if not TOKEN.match(name):
                raise FramingError(f"invalid header name {name[:40]!r} (white space before the colon?)")
            value = value.strip(b" \t")
            if b"\r" in value or b"\0" in value:
                raise FramingError("CR or NUL in a header value")
            key = name.title()
            if key in headers:
                if key in SINGLE:
                    raise FramingError(f"{key.decode()} given more than once")
                if key in JOINED:
                    value = headers[key] + b", " + value
            headers[key] = value
        check_framing(headers)
        return headers


def check_framing(headers: dict[bytes, bytes]) -> None:
    """Raise FramingError unless Content-Length, Transfer-Encoding and Host say one thing each."""
    length = headers.get(b"Content-Length")
    if length is not None and not DIGITS.match(length):
        raise FramingError("Content-Length must be one decimal number")
    coding = headers.get(b"Transfer-Encoding")
    if coding is not None:
        if length is not None:
            raise FramingError("both Transfer-Encoding and Content-Length")
        codings = [c.strip(b" \t").lower() for c in coding.split(b",") if c.strip(b" \t")]
        if not codings or codings[-1] != b"chunked" or codings.count(b"chunked") > 1:
            raise FramingError("Transfer-Encoding must end with chunked, once")
    host = headers.get(b"Host")
    if host is not None and not HOST.match(host):
        raise FramingError("invalid Host")


class StrictRequest(cheroot_server.HTTPRequest):
    """cheroot's request with StrictHeaderReader, and the checks that need the request's HTTP version."""

    header_reader = StrictHeaderReader()

    def read_request_headers(self) -> bool:
        if not super().read_request_headers():
            return False
        problem = None
        if self.request_protocol == b"HTTP/1.1" and b"Host" not in self.inheaders:
            problem = "HTTP/1.1 request without a Host header"
        elif self.request_protocol != b"HTTP/1.1" and b"Transfer-Encoding" in self.inheaders:
            problem = "Transfer-Encoding in an HTTP/1.0 request"
        if problem:
            self.simple_response("400 Bad Request", problem)
            return False
        return True
