"""How a response's bytes reach the socket: cheroot's WSGI gateway, with two changes.

- The headers go out with the first piece of the body, in one send. cheroot
  writes them separately: two sends, two segments and two client wake-ups
  for every small GET (a thumbnail grid is hundreds of them).
- A file body can go out with sendfile(2), never passing through Python,
  on plain TCP connections, in two ways. environ["wsgi.file_wrapper"]
  (PEP 3333) serves applications that return the wrapper itself: the REST
  API, through Werkzeug's wrap_file. WsgiDAV's middlewares are generators
  that re-yield every chunk, so no wrapper survives them; for those,
  environ[SENDFILE] is a callable the application calls after its first
  chunk has gone out (so every layer has seen the response start) to send
  the rest of an open file.
"""

from __future__ import annotations

import io
import socket
import ssl
from typing import Any

from cheroot import wsgi
from werkzeug.wsgi import FileWrapper

from uss_dav.vocabulary import FIRST_PIECE, SENDFILE


class FileBody(FileWrapper):
    """wsgi.file_wrapper: sent by sendfile when returned to the gateway, iterated by anything else."""


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
            env["wsgi.file_wrapper"] = FileBody
        return env

    def respond(self) -> None:
        response = self.req.server.wsgi_app(self.env, self.start_response)
        if type(response) is FileBody and isinstance(response.file, io.FileIO) and self.remaining_bytes_out:
            try:
                self._send_file(response.file, self.remaining_bytes_out)
            finally:
                self.req.ensure_headers_sent()
                response.close()
        else:
            self._send_iterable(response)
        if self._socket_error is not None:
            # Where cheroot expects a client that went away: it closes the connection quietly.
            raise self._socket_error

    def _send_iterable(self, response: Any) -> None:
        """cheroot's own respond(), for the application already called."""
        try:
            for chunk in filter(None, response):
                if not isinstance(chunk, bytes):
                    raise TypeError("WSGI applications must yield bytes")
                self.write(chunk)
        finally:
            self.req.ensure_headers_sent()
            if hasattr(response, "close"):
                response.close()

    def _send_file(self, fh: io.FileIO, count: int) -> None:
        """`count` bytes of `fh` from its position: the first piece with the headers, the rest by sendfile."""
        first = fh.read(min(FIRST_PIECE, count))
        if first:
            self.write(first)
        if len(first) < count:
            self.sendfile(fh, count - len(first))

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
