"""cheroot's HTTP connection, kept by its worker between requests and read through C buffering."""

from __future__ import annotations

import io
import select
import socket
from typing import Any

from cheroot import server as cheroot_server

from uss_dav.framing import StrictRequest

#: How long a worker waits for the next request on a kept-alive connection
#: before handing the connection back to cheroot's selector thread.
KEEP_WAITING = 0.002


class _CountingSocketIO(socket.SocketIO):
    """A socket's raw stream that counts what it received, so the buffer above can tell what it holds."""

    def __init__(self, sock: socket.socket, mode: str) -> None:
        super().__init__(sock, mode)
        self.received = 0

    def readinto(self, b: Any) -> int | None:
        n = super().readinto(b)
        if n:
            self.received += n
        return n

    def tell(self) -> int:
        return self.received


class SocketReader(io.BufferedReader):
    """The reading side of a connection: io's C BufferedReader instead of cheroot's `_pyio` one.

    cheroot reads every request and header line through the pure-Python
    `_pyio.BufferedReader` (a leftover from Python 2, where the C one lost
    data on socket timeouts); that was an eighth of the server's Python
    time on a small GET. cheroot needs one thing besides reading: whether a
    pipelined request is already buffered (`has_data`). The C reader does
    not expose its buffer, but its `tell()` is the raw position less what
    it still holds, so that is received bytes minus `tell()`.
    """

    def __init__(self, sock: socket.socket, bufsize: int = io.DEFAULT_BUFFER_SIZE) -> None:
        super().__init__(_CountingSocketIO(sock, "rb"), bufsize)

    @property
    def bytes_read(self) -> int:
        """What the connection has consumed (cheroot's statistics)."""
        return self.tell()

    def has_data(self) -> bool:
        """True if bytes of a next request are already buffered."""
        return self.raw.received > self.tell()


class KeptConnection(cheroot_server.HTTPConnection):
    """A connection that stays with its worker thread while its client keeps talking.

    cheroot hands every kept-alive connection back to its selector thread
    after each request, and a worker picks it up again when the next request
    arrives: an epoll registration and two thread wake-ups per request. A
    client that sends its next request within KEEP_WAITING is served by the
    same thread instead, as long as another worker is idle and no connection
    is waiting for one, so a held connection never keeps another client
    from being served. Its requests read their headers under RFC 9112's
    framing rules (uss_dav.framing).
    """

    RequestHandlerClass = StrictRequest

    def __init__(self, server: Any, sock: socket.socket, *args: Any, **kwargs: Any) -> None:
        super().__init__(server, sock, *args, **kwargs)
        self.rfile = SocketReader(sock, self.rbufsize)

    def communicate(self) -> bool:
        while super().communicate():
            if not self._next_request_soon():
                return True
        return False

    def _next_request_soon(self) -> bool:
        pool = self.server.requests
        if not self.server.ready or pool.qsize or pool.idle < 1:
            return False
        sock = self.socket
        if self.rfile.has_data() or (hasattr(sock, "pending") and sock.pending()):
            return True
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(KEEP_WAITING * 1000))
