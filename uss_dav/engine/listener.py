"""The HTTP/1.1 server of one serving process: a listening socket, a selector for idle connections, request threads.

The calling thread runs an epoll: it accepts connections and watches
kept-alive ones that went quiet (one-shot, so a connection is handed out
once per request), and hands each that has something to read to the
request threads through one queue. A request thread serves its
connection for as long as the client keeps sending (uss_dav.engine.connection),
then gives it back to the selector. A connection quiet for longer than the
time-out is closed.

Why not cheroot, which served before: per small request, cheroot's Python
request parser, its gateway and its writer cost more than the WSGI
application under it (measured in docs/engine.md); what uss_dav needs of an
engine (RFC 9112 framing rules, headers with the first body piece in one
send, sendfile, bounded draining) had become subclasses of cheroot's
internals. Granian was measured too (docs/engine.md): its WSGI interface
has no sendfile and reads the status before the application's generator
has run.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import queue
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

from uss_dav.engine.connection import CLOSED, WAITING, Connection, base_environ

log = logging.getLogger(__name__)

#: Connections accepted per wake-up of the selector, at most (the rest wait for the next turn).
ACCEPT_BATCH = 64
#: How long the selector waits before accepting again when out of descriptors.
ACCEPT_PAUSE = 0.1
#: How long stop() lets requests under way finish.
STOP_GRACE = 5.0


class HttpServer:
    """Serves a WSGI application on (host, port) until stop()."""

    def __init__(
        self,
        app: Callable[..., Any],
        host: str,
        port: int,
        *,
        threads: int,
        timeout: float,
        max_header_bytes: int,
        ssl_context: ssl.SSLContext | None = None,
        reuse_port: bool = False,
        multiprocess: bool = False,
    ) -> None:
        self.app = app
        self.timeout = timeout
        self.max_header_bytes = max_header_bytes
        self.ssl_context = ssl_context
        #: Field name -> environ key, learnt as requests come (bounded by Connection).
        self.header_keys: dict[bytes, str] = {}
        self.stopping = False
        self._threads = threads
        self._ready: queue.SimpleQueue[Connection | None] = queue.SimpleQueue()
        #: Quiet kept-alive connections by descriptor, watched one-shot by the epoll.
        self._parked: dict[int, Connection] = {}
        self._epoll = select.epoll()
        self._idle = threads
        self._idle_lock = threading.Lock()
        self._workers: list[threading.Thread] = []
        self._listener = self._listen(host, port, reuse_port)
        self.port = self._listener.getsockname()[1]
        self.base_environ = base_environ(host, self.port, multiprocess)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)

    @staticmethod
    def _listen(host: str, port: int, reuse_port: bool) -> socket.socket:
        family, kind, proto, _name, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(address)
            sock.listen(1024)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    def may_hold(self) -> bool:
        """Whether a request thread may keep waiting on its quiet connection: another is idle and nobody queues."""
        return self._idle >= 1 and self._ready.empty()

    def alone(self) -> bool:
        """Whether the calling request thread is the only one at work (so a brief spin takes nobody's CPU)."""
        return self._idle == self._threads - 1 and self._ready.empty()

    # -- the selector (the calling thread) --------------------------------------
    def serve_forever(self) -> None:
        for index in range(self._threads):
            worker = threading.Thread(target=self._work, name=f"request-{index}", daemon=True)
            worker.start()
            self._workers.append(worker)
        next_sweep = time.monotonic() + 1.0
        listener, wake = self._listener.fileno(), self._wake_r.fileno()
        self._epoll.register(listener, select.EPOLLIN)
        self._epoll.register(wake, select.EPOLLIN)
        try:
            while not self.stopping:
                for fd, _events in self._epoll.poll(1.0):
                    if fd == listener:
                        self._accept()
                    elif fd == wake:
                        with contextlib.suppress(OSError):
                            self._wake_r.recv(4096)
                    else:
                        conn = self._parked.pop(fd, None)
                        if conn is not None:  # one-shot: the descriptor stays quiet until parked again
                            self._ready.put(conn)
                now = time.monotonic()
                if now >= next_sweep:
                    next_sweep = now + 1.0
                    self._close_quiet(now)
        finally:
            self.stopping = True
            for conn in list(self._parked.values()):
                conn.close()
            self._parked.clear()
            self._epoll.close()
            self._listener.close()
            for _ in self._workers:
                self._ready.put(None)

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, remote = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of descriptors or memory: the listener stays readable, so without a
                    # pause this thread would spin (and log) until a connection closes.
                    log.warning("accept failed (%s); pausing %.1f s", exc, ACCEPT_PAUSE)
                    time.sleep(ACCEPT_PAUSE)
                return  # otherwise the client reset before it was accepted: nothing to do
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._ready.put(Connection(self, sock, remote))

    def _park(self, conn: Connection) -> None:
        """Watch a quiet kept-alive connection (from a request thread: epoll may be changed while it waits)."""
        fd = conn.fileno()
        conn.parked_at = time.monotonic()
        self._parked[fd] = conn
        try:
            if conn.watched:
                self._epoll.modify(fd, select.EPOLLIN | select.EPOLLONESHOT)
            else:
                self._epoll.register(fd, select.EPOLLIN | select.EPOLLONESHOT)
                conn.watched = True
        except (OSError, ValueError):  # closed meanwhile, or the server is stopping
            self._parked.pop(fd, None)
            conn.close()

    def _close_quiet(self, now: float) -> None:
        for fd, conn in list(self._parked.items()):
            if now - conn.parked_at > self.timeout and self._parked.pop(fd, None) is conn:
                conn.close()

    # -- the request threads ------------------------------------------------------
    def _work(self) -> None:
        while (conn := self._ready.get()) is not None:
            with self._idle_lock:
                self._idle -= 1
            try:
                state = conn.serve()
            finally:
                with self._idle_lock:
                    self._idle += 1
            if state == CLOSED:
                continue
            if self.stopping:
                conn.close()
            elif state == WAITING:
                self._ready.put(conn)
            else:
                self._park(conn)

    def stop(self) -> None:
        """Stop accepting, let requests under way finish (up to STOP_GRACE), close the rest."""
        self.stopping = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")
        deadline = time.monotonic() + STOP_GRACE
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        self._wake_r.close()
        self._wake_w.close()
