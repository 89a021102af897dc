"""A request body as wsgi.input: exactly the declared length, or a chunked body decoded, and never past its end.

Both readers stop at the body's end, so whatever follows on the connection
(the next request) is never handed to the application. A body that breaks
off early raises IncompleteBody (a ValueError): the faces answer 400 to an
unusable body, and the connection is closed after the response.

`Expect: 100-continue` is answered on the first read: an application that
refuses the request without reading (401, 413) sends its answer instead,
and the client never sends the body.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import IO

#: Longest chunk-size line (size, extensions and CRLF) and longest trailer section accepted.
MAX_CHUNK_LINE = 4096
MAX_TRAILERS = 16 * 1024
#: A chunk size past this is refused rather than believed (16 hex digits would be 2**64).
MAX_CHUNK = 1 << 40


class IncompleteBody(ValueError):
    """The body broke off before its declared end, or its chunked framing is malformed."""


class Body:
    """The common part: the 100-continue promise and the file-like helpers WSGI asks for."""

    def __init__(self, rfile: IO[bytes], on_first_read: Callable[[], None] | None) -> None:
        self._rfile = rfile
        self._on_first_read = on_first_read
        self.received = 0

    def _first_read(self) -> None:
        if self._on_first_read is not None:
            callback, self._on_first_read = self._on_first_read, None
            callback()

    @property
    def finished(self) -> bool:
        raise NotImplementedError

    def read(self, size: int | None = -1) -> bytes:
        raise NotImplementedError

    def readline(self, size: int | None = -1) -> bytes:
        """A line of the body (rarely used by WSGI applications; read in small pieces)."""
        line = bytearray()
        while size is None or size < 0 or len(line) < size:
            piece = self.read(1)
            if not piece:
                break
            line += piece
            if piece == b"\n":
                break
        return bytes(line)

    def readlines(self, hint: int = -1) -> list[bytes]:
        return list(iter(self.readline, b""))

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.readline, b"")

    def drain(self, limit: int) -> bool:
        """Read and drop what is left, up to `limit` bytes; True if the body's end was reached."""
        if self._on_first_read is not None:
            return self.finished  # the client was never told to send it
        while limit > 0 and not self.finished:
            piece = self.read(min(limit, 65536))
            if not piece:
                break
            limit -= len(piece)
        return self.finished


class LengthBody(Body):
    """A body of `length` bytes."""

    def __init__(self, rfile: IO[bytes], length: int, on_first_read: Callable[[], None] | None = None) -> None:
        super().__init__(rfile, on_first_read)
        self.left = length

    @property
    def finished(self) -> bool:
        return self.left == 0

    def read(self, size: int | None = -1) -> bytes:
        if self.left == 0:
            return b""
        self._first_read()
        want = self.left if size is None or size < 0 else min(size, self.left)
        data = self._rfile.read(want)
        if len(data) < want:
            self.left = 0
            raise IncompleteBody(f"the body ended {want - len(data)} bytes before its Content-Length")
        self.left -= len(data)
        self.received += len(data)
        return data


class ChunkedBody(Body):
    """A chunked body (RFC 9112 7.1), decoded; trailer fields are read and dropped."""

    def __init__(self, rfile: IO[bytes], on_first_read: Callable[[], None] | None = None) -> None:
        super().__init__(rfile, on_first_read)
        self._chunk_left = 0
        self._done = False

    @property
    def finished(self) -> bool:
        return self._done

    def read(self, size: int | None = -1) -> bytes:
        """Up to `size` bytes (all that is left if negative): fewer only at the body's end."""
        if self._done:
            return b""
        self._first_read()
        parts: list[bytes] = []
        want = -1 if size is None or size < 0 else size
        while want != 0 and not self._done:
            if self._chunk_left == 0:
                self._next_chunk()
                continue
            n = self._chunk_left if want < 0 else min(want, self._chunk_left)
            data = self._rfile.read(n)
            if len(data) < n:
                self._done = True
                raise IncompleteBody("the chunked body broke off inside a chunk")
            self._chunk_left -= n
            if self._chunk_left == 0 and self._rfile.read(2) != b"\r\n":
                self._done = True
                raise IncompleteBody("a chunk is not followed by CRLF")
            parts.append(data)
            self.received += n
            if want > 0:
                want -= n
        return b"".join(parts)

    def _next_chunk(self) -> None:
        line = self._rfile.readline(MAX_CHUNK_LINE + 1)
        if not line.endswith(b"\r\n"):
            self._done = True
            raise IncompleteBody("malformed or missing chunk-size line")
        size_text = line[:-2].split(b";", 1)[0].strip(b" \t")
        try:
            if not size_text or size_text.lstrip(b"0123456789abcdefABCDEF"):
                raise ValueError
            size = int(size_text, 16)
        except ValueError:
            self._done = True
            raise IncompleteBody("malformed chunk size") from None
        if size > MAX_CHUNK:
            self._done = True
            raise IncompleteBody("chunk size too large")
        if size == 0:
            self._skip_trailers()
            self._done = True
            return
        self._chunk_left = size

    def _skip_trailers(self) -> None:
        budget = MAX_TRAILERS
        while True:
            line = self._rfile.readline(budget + 1)
            budget -= len(line)
            if budget < 0 or not line.endswith(b"\r\n"):
                self._done = True
                raise IncompleteBody("malformed or oversized trailer section")
            if line == b"\r\n":
                return


class NoBody(Body):
    """A request without a body."""

    def __init__(self) -> None:
        super().__init__(None, None)  # type: ignore[arg-type]  # never read

    @property
    def finished(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        return b""
