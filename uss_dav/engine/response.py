"""How a response's bytes reach the socket.

- The status line and header fields go out with the first piece of the body,
  in one send: one segment and one client wake-up for a small GET.
- A file body goes out with sendfile(2) on plain TCP, never passing through
  Python, in two ways. A returned environ["wsgi.file_wrapper"] (PEP 3333)
  serves applications that return the wrapper itself: the REST API, through
  Werkzeug's wrap_file. WsgiDAV's middlewares are generators that re-yield
  every chunk, so no wrapper survives them; for those, environ[SENDFILE] is
  a callable the application calls after its first chunk has gone out (so
  every layer has seen the response start) to send the rest of an open file.
- Without a declared length an HTTP/1.1 body is chunked; an HTTP/1.0 one
  ends with the connection.
- What the body may be is checked against what was declared: more than the
  Content-Length is an error, fewer leaves a response the client cannot
  finish, so the connection is closed.
"""

from __future__ import annotations

import io
import socket
from typing import Any

from werkzeug.wsgi import FileWrapper

from uss_dav.vocabulary import first_piece

#: Statuses whose responses never have a body (RFC 9110 6.4.1).
NO_BODY = frozenset((204, 304))


class FileBody(FileWrapper):
    """wsgi.file_wrapper: sent by sendfile when returned to the engine, iterated by anything else."""


class ClientGone(Exception):
    """Sending to the client failed (it went away, or stalled past the time-out): close quietly.

    Not an OSError, so that it is never mistaken for the application's own
    I/O errors, which get a 500.
    """


class ResponseStarted(Exception):
    """start_response called twice without exc_info, or after the headers went out."""


class Response:
    """One response on a connection: start_response, the body's writes, sendfile and the end."""

    def __init__(
        self, sock: socket.socket, method: str, version: str, *, keep_alive: bool, sendfile_ok: bool, date: str
    ) -> None:
        self.sock = sock
        self.date = date
        self.method = method
        self.version = version
        #: Whether the connection may carry another request after this one.
        self.keep_alive = keep_alive
        self.sendfile_ok = sendfile_ok
        self.status = ""
        self.code = 0
        self.headers: list[tuple[str, str]] = []
        self.sent_headers = False
        self.length: int | None = None
        self.chunked = False
        #: Body bytes the application produced (counted against Content-Length).
        self.body_bytes = 0
        self.socket_error: OSError | None = None
        self._names: set[str] = set()

    # -- WSGI -------------------------------------------------------------
    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        if exc_info:
            try:
                if self.sent_headers:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status:
            raise ResponseStarted("start_response called twice")
        code = status[:3]
        if len(status) < 4 or not code.isdigit() or status[3] != " ":
            raise ValueError(f"malformed WSGI status {status!r}")
        self.status, self.code, self.headers = status, int(code), list(headers)
        self.length = None
        names = self._names = set()
        for name, value in headers:
            if "\r" in name or "\n" in name or "\r" in value or "\n" in value or ":" in name:
                raise ValueError("CR, LF or ':' in a response header")
            lowered = name.lower()
            names.add(lowered)
            if lowered == "content-length":
                self.length = int(value) if value.isdigit() else None
            elif lowered == "connection" and "close" in value.lower():
                self.keep_alive = False
        return self.write

    def write(self, data: bytes) -> None:
        """A piece of the body (the first one goes out with the headers)."""
        if not self.status:
            raise AssertionError("write() before start_response")
        if not data:
            return
        if not self.body_allowed:
            if not self.sent_headers:
                self._send(self._head())
            return
        head = b"" if self.sent_headers else self._head()
        self.body_bytes += len(data)
        if self.length is not None and self.body_bytes > self.length:
            self.keep_alive = False
            raise ValueError("response body longer than its Content-Length")
        if self.chunked:
            data = b"%x\r\n%s\r\n" % (len(data), data)
        self._send(head + data if head else data)

    def sendfile(self, fh: io.FileIO, count: int) -> int:
        """Send `count` bytes of `fh` from its position, after what was written so far.

        A socket error is kept and raised once the application has finished
        (the connection's job): raised here, inside the application's
        generators, it would be taken for the application's own failure.
        """
        if self.socket_error is not None:
            return 0
        if not self.sent_headers:
            self._send(self._head())
        if not self.body_allowed:
            return 0
        if self.length is not None and self.body_bytes + count > self.length:
            raise ValueError("sendfile past the declared Content-Length")
        if self.chunked or not self.sendfile_ok:
            sent = 0
            while sent < count and (piece := fh.read(min(1 << 20, count - sent))):
                self.write(piece)
                sent += len(piece)
            return sent
        try:
            sent = self.sock.sendfile(fh, fh.tell(), count)
        except OSError as exc:
            self.socket_error = exc
            self.keep_alive = False
            return 0
        self.body_bytes += sent
        if sent < count:  # the file was cut short in place: the response cannot be completed
            self.keep_alive = False
        return sent

    # -- the engine's side ---------------------------------------------------
    @property
    def body_allowed(self) -> bool:
        return self.method != "HEAD" and self.code not in NO_BODY and self.code >= 200

    def send_file_body(self, body: FileBody) -> None:
        """A returned wsgi.file_wrapper over a plain file, with a declared length: first piece, then sendfile."""
        fh = body.file
        assert isinstance(fh, io.FileIO)  # the connection checked
        count = self.length - self.body_bytes if self.length is not None else 0
        first = fh.read(first_piece(count))
        if first:
            self.write(first)
        if len(first) < count:
            self.sendfile(fh, count - len(first))

    def finish(self) -> None:
        """The application is done: make sure the head went out, end a chunked body, check the length."""
        if not self.sent_headers:
            if self.length is None and self.body_allowed:
                self.headers.append(("Content-Length", "0"))
                self.length = 0
            self._send(self._head())
        if self.chunked:
            self._send(b"0\r\n\r\n")
        elif self.length is not None and self.body_allowed and self.body_bytes < self.length:
            self.keep_alive = False  # the client is still waiting for bytes that will not come

    def _head(self) -> bytes:
        """The status line and fields, decided once: framing, Connection, Date, Server."""
        names = self._names
        if "transfer-encoding" in names:
            self.keep_alive = False  # the application frames the body itself: the end is the close
            self.length = None
        elif self.length is None and self.body_allowed:
            if self.version == "HTTP/1.1":
                self.chunked = True
                self.headers.append(("Transfer-Encoding", "chunked"))
            else:
                self.keep_alive = False
        if not self.keep_alive and "connection" not in names:
            self.headers.append(("Connection", "close"))
        elif self.keep_alive and self.version == "HTTP/1.0":
            self.headers.append(("Connection", "keep-alive"))
        if "date" not in names:
            self.headers.append(("Date", self.date))
        if "server" not in names:
            self.headers.append(("Server", "uss_dav"))
        lines = [f"HTTP/1.1 {self.status}"]
        lines += [f"{name}: {value}" for name, value in self.headers]
        self.sent_headers = True
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            self.keep_alive = False
            raise ClientGone(str(exc)) from exc
