"""A request's head (request line and header fields) read under RFC 9112's framing rules.

Whatever would let two parsers disagree on where a request ends is refused
with 400 and a closed connection: a proxy in front may read a repeated
Content-Length, a repeated Host, a folded line or white space before a
colon the other way, which is how requests are smuggled. The body was not
read, so nothing after the refusal on that connection can be trusted.

Decisions where RFC 9110/9112 leave a choice:

- `Content-Length: 5, 5` and two identical Content-Length lines are refused.
  RFC 9110 8.6 lets a recipient either refuse such a value or take it as 5;
  only a broken sender or intermediary produces it, and refusing leaves no
  reading on which two parsers can differ. A Content-Length that is not
  plain digits (`+5`, `0x5`, `5_0`, all of which int() accepts) is refused
  for the same reason.
- Transfer-Encoding: chunked must be the last coding and appear once
  (RFC 9112 6.1 and 6.3: otherwise the length cannot be determined, 400); a
  coding we do not implement before a final chunked is 501 (6.1's SHOULD).
- Transfer-Encoding in an HTTP/1.0 request is faulty framing (6.1).
- One empty line before the request line is skipped (2.2's SHOULD), no more.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import IO, NoReturn

CRLF = b"\r\n"
#: RFC 9110 5.1: field-name = token; also what a method must be.
TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
DIGITS = re.compile(rb"[0-9]+\Z")
VERSION = re.compile(rb"HTTP/([0-9])\.([0-9])\Z")
#: RFC 9112 3.2: uri-host [ ":" port ]; an IP literal in brackets, or reg-name / IPv4 characters.
HOST = re.compile(rb"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+,;=]*)(:[0-9]*)?\Z")
#: Bytes a request target may not hold (controls, space, DEL; '#' starts a fragment, never sent).
BAD_TARGET = re.compile(rb"[\x00-\x20\x7f#]")
#: A well-formed field line in one match: token, colon, a value without CR, LF or NUL, CRLF.
#: Lines that do not match are looked at again, piece by piece, to say what is wrong.
FIELD_LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):([^\r\n\0]*)\r\n")
#: Fields that frame the request (or name its target): one line each, never repeated.
SINGLE = frozenset((b"Host", b"Content-Length", b"Transfer-Encoding"))
#: Fields that are lists (RFC 9110 5.3): repeated lines are joined with ", "; any other repeat keeps the last.
JOINED = frozenset(
    name.title()
    for name in (
        b"Accept", b"Accept-Charset", b"Accept-Encoding", b"Accept-Language", b"Accept-Ranges", b"Allow",
        b"Cache-Control", b"Connection", b"Content-Encoding", b"Content-Language", b"Expect", b"If-Match",
        b"If-None-Match", b"Pragma", b"Proxy-Authenticate", b"TE", b"Trailer", b"Upgrade", b"Vary", b"Via",
        b"Warning", b"WWW-Authenticate", b"DAV",
    )
)


class HttpError(Exception):
    """A request the engine answers itself, with `status` and a one-line reason, then closes."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


@dataclass(slots=True)
class Head:
    method: str
    #: The request target as sent (latin-1), e.g. "/a%20b?x=1".
    target: str
    #: "HTTP/1.1" or "HTTP/1.0".
    version: str
    #: Field names title-cased (b"Content-Length"), values with outer white space stripped.
    fields: dict[bytes, bytes]


def read_head(rfile: IO[bytes], limit: int) -> Head | None:
    """The next request's head from `rfile`; None if the client closed between requests.

    `limit` bounds the request line and the fields together (414 for the
    line alone, 431 past it). Raises HttpError for anything refused.
    """
    line = rfile.readline(limit + 1)
    if line == CRLF:  # one empty line before a request is allowed
        line = rfile.readline(limit + 1)
    if not line:
        return None
    if len(line) > limit:
        raise HttpError(414, "request line too long")
    method, target, version = _request_line(line)
    fields = _fields(rfile, limit - len(line))
    check_framing(fields, version)
    return Head(method, target, version, fields)


def _request_line(line: bytes) -> tuple[str, str, str]:
    if not line.endswith(CRLF):
        raise HttpError(400, "HTTP requires CRLF line ends")
    parts = line[:-2].split(b" ")
    if len(parts) != 3:
        raise HttpError(400, "malformed request line")
    method, target, version = parts
    if not TOKEN.match(method):
        raise HttpError(400, "malformed method")
    matched = VERSION.match(version)
    if not matched:
        raise HttpError(400, "malformed HTTP version")
    if matched.group(1) != b"1":
        raise HttpError(505, "only HTTP/1.0 and HTTP/1.1 are served")
    if not target or BAD_TARGET.search(target):
        raise HttpError(400, "malformed request target")
    if target[:1] != b"/" and not (target == b"*" and method == b"OPTIONS"):
        lowered = target[:8].lower()
        if not (lowered.startswith((b"http://", b"https://"))):
            raise HttpError(400, "request target must be a path or an absolute URI")
    return method.decode("ascii"), target.decode("latin-1"), "HTTP/1.1" if version == b"HTTP/1.1" else "HTTP/1.0"


def _fields(rfile: IO[bytes], budget: int) -> dict[bytes, bytes]:
    fields: dict[bytes, bytes] = {}
    while True:
        line = rfile.readline(budget + 1)
        budget -= len(line)
        if budget < 0:
            raise HttpError(431, "request header fields too large")
        if not line:
            raise HttpError(400, "connection closed inside the request head")
        if line == CRLF:
            return fields
        matched = FIELD_LINE.fullmatch(line)
        if matched is not None:
            name, value = matched.group(1, 2)
            value = value.strip(b" \t")
        else:
            _refuse_field(line)
        key = name.title()
        if key in fields:
            if key in SINGLE:
                raise HttpError(400, f"{key.decode()} given more than once")
            if key in JOINED:
                value = fields[key] + b", " + value
        fields[key] = value


def _refuse_field(line: bytes) -> NoReturn:
    """Say why a field line that FIELD_LINE does not match is refused."""
    if not line.endswith(CRLF):
        raise HttpError(400, "HTTP requires CRLF line ends")
    if line[:1] in (b" ", b"\t"):
        raise HttpError(400, "obs-fold (a header line starting with white space) is not allowed")
    name, colon, _value = line[:-2].partition(b":")
    if not colon:
        raise HttpError(400, "header line without a colon")
    if not TOKEN.match(name):
        raise HttpError(400, f"invalid header name {name[:40]!r} (white space before the colon?)")
    raise HttpError(400, "CR, LF or NUL in a header value")


def check_framing(fields: dict[bytes, bytes], version: str) -> None:
    """Raise HttpError unless Content-Length, Transfer-Encoding and Host say one thing each."""
    length = fields.get(b"Content-Length")
    if length is not None and not DIGITS.match(length):
        raise HttpError(400, "Content-Length must be one decimal number")
    coding = fields.get(b"Transfer-Encoding")
    if coding is not None:
        if version != "HTTP/1.1":
            raise HttpError(400, "Transfer-Encoding in an HTTP/1.0 request")
        if length is not None:
            raise HttpError(400, "both Transfer-Encoding and Content-Length")
        codings = [c.strip(b" \t").lower() for c in coding.split(b",") if c.strip(b" \t")]
        if not codings or codings[-1] != b"chunked" or codings.count(b"chunked") > 1:
            raise HttpError(400, "Transfer-Encoding must end with chunked, once")
        if len(codings) > 1:
            raise HttpError(501, f"transfer coding {codings[0].decode('latin-1')!r} is not implemented")
    host = fields.get(b"Host")
    if host is None:
        if version == "HTTP/1.1":
            raise HttpError(400, "HTTP/1.1 request without a Host header")
    elif not HOST.match(host):
        raise HttpError(400, "invalid Host")
