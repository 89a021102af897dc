"""One client connection of the load generator: HTTP/1.1 on a raw socket, cheap in CPU per request.

Every client of a benchmark is a thread of one Python process, on a machine
with 2 cores: what the client spends per request is taken from the servers
and, at 8 clients, capped the fast servers' rates (with http.client the
process ran at 85-90% of a core on GET 10 KiB, 95-220 us of CPU per
request; this client costs 30-60 us). So a request is one head, formatted
around the fixed headers (prepared once per connection), sent with one
`sendall` together with a body of up to 64 KiB (a larger one follows in its
own `sendall`, uncopied), and the answer is read by
`bench.harness.response.Reader` into a buffer kept for the connection.

The socket is blocking with the time-out set in the kernel (SO_RCVTIMEO,
SO_SNDTIMEO): a Python time-out would add a poll() before every recv.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bench.harness.response import MIB, Reader, RemoteDisconnected, ResponseError

if TYPE_CHECKING:
    from bench.harness.servers import ServerUnderTest

OWN_HEADERS = frozenset({"host", "accept-encoding", "authorization", "content-length"})
ONE_SEND = 64 * 1024  # bodies up to this size go out in the same sendall as the head (one copy, one syscall)


@dataclass(slots=True)
class Result:
    status: int  # -1: exception
    nbytes: int = 0
    body: bytes = b""


def _timeval(seconds: float) -> bytes:
    return struct.pack("ll", int(seconds), int(seconds % 1 * 1_000_000))


def _send(sock: socket.socket, head: bytes, body: bytes | None) -> None:
    if not body:
        sock.sendall(head)
    elif len(body) <= ONE_SEND:
        sock.sendall(head + body)
    else:
        sock.sendall(head)
        sock.sendall(body)


class Conn:
    """One persistent HTTP/1.1 connection with the server's credentials, opened again when closed.

    A request on a kept-alive connection that fails before any byte of the
    answer came (the server closed it while idle) is sent once more on a
    fresh connection; any other failure is the request's result.
    """

    def __init__(self, server: ServerUnderTest, timeout: float, *, buffer: int = MIB) -> None:
        self.server = server
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.reader = Reader(buffer)
        self.reused = False  # the open socket has carried a whole exchange already
        self.defaults = {"Host": f"{server.host}:{server.port}", "Accept-Encoding": "identity",
                         "Authorization": server.auth}
        self.fixed = "".join(f"{k}: {v}\r\n" for k, v in self.defaults.items())  # encoded with each request
        self.last = ""  # the last request and its status, for the slow-request report

    def call(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
             keep_body: bool = True) -> Result:
        """Send one request; read the whole answer (without `keep_body`, count a 2xx body's bytes only)."""
        self.last = f"{method} {path}"
        try:
            head = self._head(method, path, body, headers)
            return self._exchange(method, head, body, keep_body)
        except (OSError, ResponseError) as exc:
            self.close()
            if isinstance(exc, BlockingIOError):  # what a kernel time-out (SO_RCVTIMEO) looks like
                exc = TimeoutError("timed out")
            self.last += f" -> {type(exc).__name__}"
            return Result(-1, 0, f"{type(exc).__name__}: {exc}".encode())

    def _head(self, method: str, path: str, body: bytes | None, headers: dict[str, str] | None) -> bytes:
        """The request line and headers: the fixed ones and Content-Length, unless `headers` names them."""
        fixed, length, extra = self.fixed, body is not None, ""
        if headers:
            named = {k.lower() for k in headers}
            if not named.isdisjoint(OWN_HEADERS):  # rare: the caller sets one of them itself
                fixed = "".join(f"{k}: {v}\r\n" for k, v in self.defaults.items() if k.lower() not in named)
                length = length and "content-length" not in named
            extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        if length and body is not None:
            extra = f"Content-Length: {len(body)}\r\n{extra}"
        return f"{method} {path} HTTP/1.1\r\n{fixed}{extra}\r\n".encode("latin-1")

    def _exchange(self, method: str, head: bytes, body: bytes | None, keep_body: bool) -> Result:
        retry = self.sock is not None and self.reused
        while True:
            sock = self.sock or self._connect()
            self.reader.received = 0
            try:
                _send(sock, head, body)
                answer = self.reader.head(method)
                break
            except (ConnectionError, RemoteDisconnected):
                if not retry or self.reader.received:
                    raise
                self.close()
                retry = False
        self.last += f" -> {answer.status}"
        keep = keep_body or not 200 <= answer.status < 300
        nbytes, data = self.reader.body(answer, keep)
        if answer.close:
            self.close()
        else:
            self.reused = True
        return Result(answer.status, nbytes, data)

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self.server.host, self.server.port), timeout=self.timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(None)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(self.timeout))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(self.timeout))
        except OSError:
            sock.close()
            raise
        self.sock = sock
        self.reused = False
        self.reader.attach(sock)
        return sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
