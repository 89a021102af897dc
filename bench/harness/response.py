"""HTTP/1.1 responses read off a socket into one reusable buffer: only what the load generator needs.

Why by hand: http.client parses every response's headers into an
`HTTPMessage` (the email parser) and reads through a buffered file object;
at 8 clients on GET 10 KiB that made the one-process load generator the
limit of the benchmark (85-90% of a core). This reader looks at the status
and three headers (Content-Length, Transfer-Encoding, Connection), receives
with `recv_into` into a buffer it keeps, and copies a body out only when
the caller keeps it: a counted body (a 4 MiB GET) makes no bytes objects.

Errors, each a `ResponseError`:

- `RemoteDisconnected`: the connection ended before any byte of a response;
- `IncompleteBody`: it ended inside a body;
- `BadResponse`: what came is not an HTTP/1.x response, or ended inside its head.

Responses are read one at a time (no pipelining): after a whole response
the buffer holds nothing that matters.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

MIB = 1 << 20
NO_BODY = (204, 304)


class ResponseError(Exception):
    """The server's answer could not be read as an HTTP/1.x response."""


class RemoteDisconnected(ResponseError):
    """The connection ended before any byte of the response."""


class IncompleteBody(ResponseError):
    """The connection ended inside a body."""


class BadResponse(ResponseError):
    """Bytes that are not an HTTP/1.x response head, or a head cut short."""


@dataclass(slots=True)
class Head:
    """What a response's head says about reading its body and keeping its connection."""

    status: int
    length: int | None  # the body's size; None: chunked, or until the connection closes
    chunked: bool
    close: bool  # the connection ends after this response


def _field(low: bytes, name: bytes) -> bytes:
    """The value of header `name` in a lower-cased head that ends with CRLF; b"" when absent."""
    i = low.find(b"\r\n" + name + b":")
    if i < 0:
        return b""
    start = i + len(name) + 3
    return low[start:low.find(b"\r\n", start)].strip()


def parse_head(head: bytes, method: str) -> Head:
    """The status and framing of a response head (status line and headers, ending with CRLF)."""
    if not head.startswith(b"HTTP/1.") or head[8:9] != b" ":
        raise BadResponse(f"not an HTTP/1.x status line: {head[:40]!r}")
    try:
        status = int(head[9:12])
    except ValueError:
        raise BadResponse(f"no status in {head[:40]!r}") from None
    low = head.lower()
    chunked = b"chunked" in _field(low, b"transfer-encoding")
    connection = _field(low, b"connection")
    close = b"close" in connection or (head[7:8] == b"0" and b"keep-alive" not in connection)
    if method == "HEAD" or status in NO_BODY or status < 200:
        return Head(status, 0, False, close)
    if chunked:
        return Head(status, None, True, close)
    length = _field(low, b"content-length")
    if not length:
        return Head(status, None, False, True)  # the body ends when the connection does
    try:
        return Head(status, int(length), False, close)
    except ValueError:
        raise BadResponse(f"Content-Length {length[:40]!r}") from None


def _unattached(*args: Any) -> int:
    raise OSError("no connection")


class Reader:
    """Reads responses from one socket after another (`attach`) into a buffer kept for its lifetime."""

    def __init__(self, size: int = MIB) -> None:
        self.buf = bytearray(size)
        self.view = memoryview(self.buf)
        self.pos = self.end = 0  # the unread bytes are buf[pos:end]
        self.recv_into = _unattached  # the socket's recv_into, once attached
        self.received = 0  # bytes received since the caller last set it to 0

    def attach(self, sock: socket.socket) -> None:
        """Read from `sock` from now on; whatever was buffered from the last one is dropped."""
        self.recv_into = sock.recv_into
        self.pos = self.end = 0

    def _fill(self) -> int:
        """Receive more after the unread bytes (moved to the front when the buffer's tail is full); 0: closed."""
        if self.pos == self.end:
            self.pos = self.end = 0
        elif self.end == len(self.buf):
            if self.pos == 0:
                raise BadResponse(f"a response head or chunk line over {len(self.buf)} bytes")
            n = self.end - self.pos
            self.buf[:n] = self.buf[self.pos:self.end]
            self.pos, self.end = 0, n
        got = self.recv_into(self.view[self.end:])
        self.end += got
        self.received += got
        return got

    def head(self, method: str) -> Head:
        """The next final response's head, 1xx interim responses skipped."""
        while True:
            while (i := self.buf.find(b"\r\n\r\n", self.pos, self.end)) < 0:
                if not self._fill():
                    if self.received:
                        raise BadResponse("the connection closed inside a response head")
                    raise RemoteDisconnected("the connection closed before any byte of a response")
            head = bytes(self.view[self.pos:i + 2])
            self.pos = i + 4
            parsed = parse_head(head, method)
            if parsed.status >= 200:
                return parsed

    def body(self, head: Head, keep: bool) -> tuple[int, bytes]:
        """The body's size, and its bytes when `keep` (else b"": it is only counted)."""
        if head.chunked:
            return self._chunked(keep)
        if head.length is None:
            return self._until_close(keep)
        if head.length == 0:
            return 0, b""
        return self._sized(head.length, keep)

    def _sized(self, n: int, keep: bool) -> tuple[int, bytes]:
        if keep and n <= len(self.buf):  # in the buffer, then one copy out
            if n > len(self.buf) - self.pos:
                self.buf[:self.end - self.pos] = self.buf[self.pos:self.end]
                self.pos, self.end = 0, self.end - self.pos
            while self.end - self.pos < n:
                if not self._fill():
                    raise IncompleteBody(f"{self.end - self.pos} of {n} bytes")
            data = bytes(self.view[self.pos:self.pos + n])
            self.pos += n
            return n, data
        have = min(n, self.end - self.pos)
        out = bytearray(n) if keep else None
        if out is not None:
            out[:have] = self.view[self.pos:self.pos + have]
        self.pos += have
        done = have
        into = memoryview(out) if out is not None else None
        while done < n:
            if into is not None:
                got = self.recv_into(into[done:])
            else:  # counted: the whole buffer is scratch space (nothing unread is left in it); MSG_WAITALL
                # wakes this thread once per buffer, not per segment batch: GET 4 MiB at 1 client from uss_dav
                # 2.4-2.8 GB/s without it, 5.3 with it (old http.client client: 3.0-3.1)
                self.pos = self.end = 0
                got = self.recv_into(self.view, min(n - done, len(self.buf)), socket.MSG_WAITALL)
            if not got:
                raise IncompleteBody(f"{done} of {n} bytes")
            done += got
        return n, bytes(out) if out is not None else b""

    def _line(self) -> bytes:
        """The next line without its CRLF (chunk sizes and trailers)."""
        while (i := self.buf.find(b"\r\n", self.pos, self.end)) < 0:
            if not self._fill():
                raise IncompleteBody("the connection closed inside a chunked body")
        line = bytes(self.view[self.pos:i])
        self.pos = i + 2
        return line

    def _take(self, n: int, out: bytearray | None) -> None:
        """Consume `n` body bytes, appended to `out` unless it is None."""
        while n:
            if self.pos == self.end and not self._fill():
                raise IncompleteBody("the connection closed inside a chunk")
            k = min(n, self.end - self.pos)
            if out is not None:
                out += self.view[self.pos:self.pos + k]
            self.pos += k
            n -= k

    def _chunked(self, keep: bool) -> tuple[int, bytes]:
        out = bytearray() if keep else None
        total = 0
        while True:
            line = self._line()
            try:
                size = int(line.split(b";", 1)[0], 16)
            except ValueError:
                raise BadResponse(f"chunk size {line[:40]!r}") from None
            if size == 0:
                break
            self._take(size, out)
            total += size
            if self._line():
                raise BadResponse("a chunk not followed by CRLF")
        while self._line():  # trailer fields, up to the empty line
            pass
        return total, bytes(out) if out is not None else b""

    def _until_close(self, keep: bool) -> tuple[int, bytes]:
        out = bytearray() if keep else None
        total = 0
        while True:
            k = self.end - self.pos
            if out is not None:
                out += self.view[self.pos:self.end]
            total += k
            self.pos = self.end
            if not self._fill():
                return total, bytes(out) if out is not None else b""
