"""How a response's bytes reach the socket: cheroot's WSGI gateway, with two changes.

- The headers go out with the first piece of the body, in one send. cheroot
  writes them separately: two sends, two segments and two client wake-ups
  for every small GET (a thumbnail grid is hundreds of them).
- A file body can go out with sendfile(2), never passing through Python.
  PEP 3333's wsgi.file_wrapper would not do: WsgiDAV's middlewares are
  generators and re-yield every chunk, so the wrapper never reaches the
  server. Instead, on plain TCP connections, environ[SENDFILE] is a callable
  the application calls after its first chunk has gone out (so every layer
  has seen the response start) to send the rest of an open file.
"""

from __future__ import annotations

import io
import socket
import ssl
from typing import Any

from cheroot import wsgi

#: environ key of the sendfile callable: `sendfile(file, count)` sends `count`
#: bytes of `file` from its current position and returns the number sent.
SENDFILE = "uss_dav.sendfile"


class _Collect:
    """Stands in for the connection's writer while headers and first chunk are composed."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)


class Gateway(wsgi.Gateway_10):
    """WSGI 1.0 gateway: headers with the first chunk; sendfile for file bodies on plain TCP."""

    def __init__(self, req: Any) -> None:
        super().__init__(req)
        self._socket_error: OSError | None = None

    def get_environ(self) -> dict[str, Any]:  # type: ignore[override]  # cheroot's stub says None
        env = super().get_environ()
        sock = self.req.conn.socket
        if isinstance(sock, socket.socket) and not isinstance(sock, ssl.SSLSocket):
            env[SENDFILE] = self.sendfile
        return env

    def respond(self) -> None:
        super().respond()
        if self._socket_error is not None:
            # Where cheroot expects a client that went away: it closes the connection quietly.
            raise self._socket_error

    def write(self, chunk: bytes) -> None:
        if self.req.sent_headers:
            super().write(chunk)
            return
        conn = self.req.conn
        wfile, collect = conn.wfile, _Collect()
        conn.wfile = collect
        try:
            super().write(chunk)
        finally:
            conn.wfile = wfile
            if collect.parts:
                wfile.write(b"".join(collect.parts))

    def sendfile(self, fh: io.FileIO, count: int) -> int:
        """Send `count` bytes of `fh` from its position, after what the application yielded so far.

        A socket error is kept and raised once the application has finished
        (see respond): raised here, inside the application's generators, it
        would be taken for the application's own failure.
        """
        if self._socket_error is not None:
            return 0
        rbo = self.remaining_bytes_out
        if rbo is not None and count > rbo:
            raise ValueError("sendfile past the declared Content-Length")
        self.req.ensure_headers_sent()
        if self.req.chunked_write:  # no length was declared: chunks need framing
            sent = 0
            while sent < count and (piece := fh.read(min(1 << 20, count - sent))):
                self.write(piece)
                sent += len(piece)
            return sent
        try:
            sent = self.req.conn.socket.sendfile(fh, fh.tell(), count)
        except OSError as exc:
            self._socket_error = exc
            return 0
        self.req.conn.wfile.bytes_written += sent
        if sent < count:  # the file was cut short in place: the response cannot be completed
            self.req.close_connection = True
        return sent
