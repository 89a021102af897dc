"""One client connection: its requests read, handed to the WSGI application and answered, one after another.

The connection stays with its request thread while its client keeps
talking: a client that sends its next request within KEEP_WAITING is served
by the same thread (no hand-over through the selector), as long as another
request thread is idle and no connection is waiting for one, so a held
connection never keeps another client from being served. While it is the
only request at work, the first KEEP_SPINNING of that wait is spent polling
rather than asleep, so a client that answers at once finds a warm CPU.
"""

from __future__ import annotations

import io
import logging
import re
import select
import socket
import ssl
import sys
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes

from uss_dav.engine.body import Body, ChunkedBody, LengthBody, NoBody
from uss_dav.engine.head import Head, HttpError, read_head
from uss_dav.engine.response import ClientGone, FileBody, Response
from uss_dav.vocabulary import SENDFILE, http_date, status_line

if TYPE_CHECKING:
    from uss_dav.engine.listener import HttpServer

log = logging.getLogger(__name__)

#: How long a request thread waits for the next request on a kept-alive connection
#: before handing the connection back to the selector.
KEEP_WAITING = 0.002
#: How long, of that, a request thread that is the only one at work polls without sleeping.
#: A thread that sleeps between requests wakes to a CPU gone cold: the same GET costs
#: 60 us of CPU back to back and 120-145 us after a 1 ms sleep (measured in process here).
#: A client sending its next request at once (a sync tool, a mounted drive) does so within
#: about 100-150 us on loopback, so spinning that long keeps it on a warm CPU; with other
#: requests at work the thread sleeps at once, so the spin never takes their CPU.
KEEP_SPINNING = 0.0002
#: How much of a request body the application left unread is read and dropped so the
#: connection can carry on; past it the connection is closed instead.
DRAIN_LIMIT = 4 * 1024 * 1024
READ_BUFFER = 64 * 1024
#: How long a closing connection waits for the client's side to go quiet (see _linger).
LINGER = 0.2
#: What a request thread does with a connection it is done with (Connection.serve).
CLOSED, QUIET, WAITING = "closed", "quiet", "waiting"
QUOTED_SLASH = re.compile(r"%2[Ff]")


class _CountingSocketIO(socket.SocketIO):
    """A socket's raw stream that counts what it received, so the buffer above can tell what it holds."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock, "rb")
        self.received = 0

    def readinto(self, b: Any) -> int | None:
        n = super().readinto(b)
        if n:
            self.received += n
        return n

    def tell(self) -> int:
        return self.received


class SocketReader(io.BufferedReader):
    """The reading side of a connection, through io's C buffering.

    Whether a pipelined request is already buffered (`has_data`) is not
    exposed by the C reader, but its tell() is the raw position less what it
    still holds: so that is received bytes minus tell().
    """

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(_CountingSocketIO(sock), READ_BUFFER)

    def has_data(self) -> bool:
        raw: _CountingSocketIO = self.raw  # type: ignore[assignment]  # set in __init__
        return raw.received > self.tell()


def path_info(path: str) -> str:
    """PATH_INFO from the raw path: percent-decoded, except %2F, which would turn into a segment separator."""
    if "%" not in path:
        return path
    parts = [unquote_to_bytes(part) for part in QUOTED_SLASH.split(path)]
    return b"%2F".join(parts).decode("latin-1")


def header_key(name: bytes) -> str | None:
    """The environ key of a header field; None for names with '_' (they would pass for their '-' twins)."""
    if b"_" in name:
        return None
    key = name.decode("latin-1").upper().replace("-", "_")
    return key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key


class Connection:
    """A client's connection, served by one request thread at a time."""

    def __init__(self, server: HttpServer, sock: socket.socket, remote: tuple[Any, ...]) -> None:
        self.server = server
        self.sock = sock
        self.remote_addr = str(remote[0]) if remote else ""
        self.remote_port = str(remote[1]) if len(remote) > 1 else ""
        self.rfile: SocketReader | None = None
        self._poller: select.poll | None = None
        self.tls = False
        self.parked_at = 0.0
        #: Whether the server's epoll knows this descriptor (registered once, re-armed after).
        self.watched = False

    def fileno(self) -> int:
        return self.sock.fileno()

    def serve(self) -> str:
        """Serve requests while they come and no other connection waits.

        Returns CLOSED, QUIET (kept alive, nothing to read: watch it) or
        WAITING (its next request is already read into the buffer, where no
        epoll can see it: queue it behind the others).
        """
        try:
            if self.rfile is None and not self._open():
                self.close()
                return CLOSED
            while self._serve_one():
                if self.server.stopping:
                    break
                buffered = self._buffered()
                if not self.server.may_hold():
                    return WAITING if buffered else QUIET
                if buffered or self._speaks_soon():
                    continue
                return QUIET
        except Exception:
            log.exception("connection from %s failed", self.remote_addr)
        self.close()
        return CLOSED

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def _open(self) -> bool:
        """The connection's first moment on a request thread: TLS handshake, reader."""
        self.sock.settimeout(self.server.timeout)
        if self.server.ssl_context is not None:
            try:
                self.sock = self.server.ssl_context.wrap_socket(self.sock, server_side=True)
            except (OSError, ValueError) as exc:
                log.debug("TLS handshake with %s failed: %s", self.remote_addr, exc)
                return False
            self.tls = True
        self.rfile = SocketReader(self.sock)
        return True

    def _buffered(self) -> bool:
        """Whether the next request is already read, into our buffer or TLS's, where no epoll sees it."""
        assert self.rfile is not None
        if self.rfile.has_data():
            return True
        return isinstance(self.sock, ssl.SSLSocket) and self.sock.pending() > 0

    def _speaks_soon(self) -> bool:
        """Whether the client sends its next request within KEEP_WAITING (spinning first while alone at work)."""
        poller = self._poller
        if poller is None:
            poller = self._poller = select.poll()
            poller.register(self.sock, select.POLLIN)
        if self.server.alone():
            deadline = time.perf_counter() + KEEP_SPINNING
            while time.perf_counter() < deadline:
                if poller.poll(0):
                    return True
        return bool(poller.poll(KEEP_WAITING * 1000))

    def _serve_one(self) -> bool:
        """One request and its response; True if the connection may carry another."""
        assert self.rfile is not None
        try:
            head = read_head(self.rfile, self.server.max_header_bytes)
        except HttpError as exc:
            self._refuse(exc.status, exc.reason)
            return False
        except (OSError, ValueError):  # a time-out or a reset between requests: nothing to answer
            return False
        if head is None:
            return False
        keep_alive = self._wants_keep_alive(head)
        response = Response(self.sock, head.method, head.version, keep_alive=keep_alive,
                            sendfile_ok=not self.tls, date=http_date(time.time()))
        try:
            body = self._body(head, response)
        except HttpError as exc:
            self._refuse(exc.status, exc.reason)
            return False
        environ = self._environ(head, body, response)
        if not self._run(environ, response):
            return False
        if response.socket_error is not None:
            return False
        try:
            finished = body.drain(DRAIN_LIMIT) if response.keep_alive else body.finished
        except (OSError, ValueError):
            finished = False
        if not finished:
            self._linger()
            return False
        return response.keep_alive and not self.server.stopping

    def _run(self, environ: dict[str, Any], response: Response) -> bool:
        """Call the application and send what it returns; False if the connection must close."""
        try:
            result = self.server.app(environ, response.start_response)
            try:
                if (type(result) is FileBody and isinstance(result.file, io.FileIO)
                        and response.length is not None and response.body_allowed):
                    response.send_file_body(result)
                else:
                    for chunk in result:
                        if chunk:
                            response.write(chunk)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
            response.finish()
            return True
        except ClientGone as exc:
            log.debug("connection from %s: %s", self.remote_addr, exc)
            return False
        except Exception:
            log.exception("%s %s failed", environ["REQUEST_METHOD"], environ["PATH_INFO"])
            if not response.sent_headers:
                self._refuse(500, "internal server error")
            return False

    def _wants_keep_alive(self, head: Head) -> bool:
        tokens = head.fields.get(b"Connection", b"").lower()
        if head.version == "HTTP/1.1":
            return b"close" not in tokens
        return b"keep-alive" in tokens

    def _body(self, head: Head, response: Response) -> Body:
        fields = head.fields
        promise = None
        if head.version == "HTTP/1.1" and b"100-continue" in fields.get(b"Expect", b"").lower():
            def promise() -> None:
                if not response.sent_headers:
                    self.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        assert self.rfile is not None
        if b"Transfer-Encoding" in fields:
            return ChunkedBody(self.rfile, promise)
        length = fields.get(b"Content-Length")
        if length is not None and length.strip(b"0"):
            return LengthBody(self.rfile, int(length), promise)
        return NoBody()

    def _environ(self, head: Head, body: Body, response: Response) -> dict[str, Any]:
        target = head.target
        if target[:1] != "/" and target != "*":  # absolute-form: the path is what follows the authority
            rest = target.split("://", 1)[1]
            slash = rest.find("/")
            target = rest[slash:] if slash >= 0 else "/"
        path, _, query = target.partition("?")
        environ = self.server.base_environ.copy()
        environ.update({
            "REQUEST_METHOD": head.method,
            "PATH_INFO": path_info(path),
            "QUERY_STRING": query,
            "REQUEST_URI": head.target,
            "SERVER_PROTOCOL": head.version,
            "REMOTE_ADDR": self.remote_addr,
            "REMOTE_PORT": self.remote_port,
            "wsgi.input": body,
            "wsgi.url_scheme": "https" if self.tls else "http",
        })
        if self.tls:
            environ["HTTPS"] = "on"
        keys = self.server.header_keys
        for name, value in head.fields.items():
            key = keys.get(name)
            if key is None:
                key = header_key(name)
                if key is None:
                    continue
                if len(keys) < 1000:
                    keys[name] = key
            environ[key] = value.decode("latin-1")
        environ[SENDFILE] = response.sendfile
        return environ

    def _refuse(self, status: int, reason: str) -> None:
        """Answer `status` with a one-line reason, then close without losing the answer to a reset."""
        text = (reason + "\n").encode("utf-8", "replace")
        head = (f"HTTP/1.1 {status_line(status)}\r\nContent-Type: text/plain; charset=utf-8\r\n"
                f"Content-Length: {len(text)}\r\nConnection: close\r\n\r\n").encode("latin-1")
        try:
            self.sock.sendall(head + text)
        except OSError:
            return
        self._linger()

    def _linger(self) -> None:
        """Before a close with a request (body) left unread: end our side, then read a little of theirs.

        Closing with unread data makes the kernel reset the connection, which
        can destroy the answer before the client has read it.
        """
        try:
            self.sock.shutdown(socket.SHUT_WR)
            self.sock.settimeout(LINGER)
            for _ in range(16):
                if not self.sock.recv(65536):
                    break
        except (OSError, ValueError):
            pass


def base_environ(host: str, port: int, multiprocess: bool) -> dict[str, Any]:
    """What every request's environ holds before its own keys."""
    return {
        "SCRIPT_NAME": "",
        "SERVER_NAME": host,
        "SERVER_PORT": str(port),
        "SERVER_SOFTWARE": "uss_dav",
        "GATEWAY_INTERFACE": "CGI/1.1",
        "wsgi.version": (1, 0),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": multiprocess,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
        "wsgi.file_wrapper": FileBody,
    }
