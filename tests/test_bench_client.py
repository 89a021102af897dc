"""The load generator's HTTP client (bench/harness/client.py) against a scripted server in this process.

The server answers each request with bytes a test writes out by hand, so
every way an HTTP/1.1 body can be framed (Content-Length, chunked, until
close, none) and every way a connection can end is exercised exactly.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from bench.harness.client import Conn

AUTH = "Basic YmVuY2g6c2VjcmV0"


@dataclass
class Request:
    connection: int  # 0 for the first connection accepted, 1 for the next...
    head: bytes
    body: bytes

    @property
    def line(self) -> str:
        return self.head.split(b"\r\n", 1)[0].decode()


#: Called with each request; returns the bytes to answer and whether to close the connection after them.
Script = Callable[[Request], tuple[bytes, bool]]


@dataclass
class ScriptedServer:
    """A one-thread HTTP server on 127.0.0.1 that answers each request as `script` says."""

    script: Script
    host: str = "127.0.0.1"
    auth: str = AUTH
    requests: list[Request] = field(default_factory=list)
    active: socket.socket | None = None  # the connection being served, ended by stop()

    def __post_init__(self) -> None:
        self.listener = socket.create_server((self.host, 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def connections(self) -> int:
        return len({r.connection for r in self.requests})

    def _serve(self) -> None:
        index = 0
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self.active = sock
            with sock:
                try:
                    self._converse(sock, index)
                except OSError:
                    return
            index += 1

    def _converse(self, sock: socket.socket, index: int) -> None:
        data = b""
        while True:
            while b"\r\n\r\n" not in data:
                more = sock.recv(65536)
                if not more:
                    return
                data += more
            head, _, data = data.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while len(data) < length:
                if not (more := sock.recv(65536)):
                    return  # the client went away mid-body
                data += more
            req = Request(index, head, data[:length])
            data = data[length:]
            self.requests.append(req)
            answer, close = self.script(req)
            sock.sendall(answer)
            if close:
                return

    def stop(self) -> None:
        for sock in (self.listener, self.active):  # shutdown, not close, wakes a thread blocked on the socket
            try:
                if sock is not None:
                    sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # not connected, or already closed
        self.listener.close()
        self.thread.join(5)


@pytest.fixture
def serve() -> Iterator[Callable[[Script], ScriptedServer]]:
    servers: list[ScriptedServer] = []

    def start(script: Script) -> ScriptedServer:
        servers.append(ScriptedServer(script))
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


def sized(status: int, body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n%s\r\n%s" % (status, len(body), extra, body)


def chunked(body: bytes, piece: int) -> bytes:
    chunks = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(body[i:i + piece]), body[i:i + piece])
                      for i in range(0, len(body), piece))
    return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\nX-Trailer: t\r\n\r\n"


BODY = bytes(range(256)) * 40  # 10 KiB
BIG = bytes(range(251)) * (3 * 4200)  # about 3 MiB: more than the client's 1 MiB buffer


def test_content_length_body_is_returned_and_the_request_carries_credentials_and_body(serve):
    server = serve(lambda req: (sized(201 if req.body else 200, BODY), False))
    conn = Conn(server, timeout=5)
    put = conn.call("PUT", "/a.bin", b"payload", {"X-Test": "1"})
    got = conn.call("GET", "/a.bin")
    assert (put.status, got.status, got.nbytes, got.body) == (201, 200, len(BODY), BODY)
    head = server.requests[0].head.decode()
    assert head.startswith("PUT /a.bin HTTP/1.1\r\n")
    assert f"Authorization: {AUTH}\r\n" in head and "Content-Length: 7\r\n" in head and "X-Test: 1" in head
    assert server.requests[0].body == b"payload"
    assert conn.last == "GET /a.bin -> 200"


def test_a_caller_header_replaces_the_fixed_one_of_that_name(serve):
    server = serve(lambda req: (sized(200, b""), False))
    Conn(server, timeout=5).call("GET", "/", headers={"authorization": "Bearer k"})
    head = server.requests[0].head.decode()
    assert "authorization: Bearer k" in head and AUTH not in head


@pytest.mark.parametrize("body", [BODY, BIG], ids=["10KiB", "3MiB"])
def test_counted_body_is_measured_not_kept(serve, body):
    server = serve(lambda req: (sized(200, body), False))
    conn = Conn(server, timeout=5)
    res = conn.call("GET", "/f", keep_body=False)
    assert (res.status, res.nbytes, res.body) == (200, len(body), b"")
    assert conn.call("GET", "/f").body == body  # and the next answer on the same connection is whole
    assert server.connections == 1


def test_body_larger_than_the_buffer_is_kept_whole(serve):
    server = serve(lambda req: (sized(200, BIG), False))
    res = Conn(server, timeout=5).call("GET", "/big")
    assert res.nbytes == len(BIG) and res.body == BIG


@pytest.mark.parametrize("keep", [True, False])
def test_chunked_body_with_extensions_and_trailer(serve, keep):
    server = serve(lambda req: (chunked(BIG, 70_000), False))
    conn = Conn(server, timeout=5)
    res = conn.call("GET", "/c", keep_body=keep)
    assert (res.status, res.nbytes, res.body) == (200, len(BIG), BIG if keep else b"")
    assert conn.call("GET", "/c").body == BIG  # the trailer was consumed: the next head parses
    assert server.connections == 1


def test_body_delimited_by_close_then_a_fresh_connection(serve):
    server = serve(lambda req: (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + BODY, True))
    conn = Conn(server, timeout=5)
    first, second = conn.call("GET", "/x"), conn.call("GET", "/x", keep_body=False)
    assert (first.status, first.body) == (200, BODY)
    assert (second.status, second.nbytes) == (200, len(BODY))
    assert server.connections == 2


def test_keep_alive_carries_every_request_on_one_connection(serve):
    server = serve(lambda req: (sized(200, BODY), False))
    conn = Conn(server, timeout=5)
    assert [conn.call("GET", f"/{i}").status for i in range(5)] == [200] * 5
    assert server.connections == 1


def test_connection_the_server_closed_while_idle_is_retried_once_on_a_fresh_one(serve):
    server = serve(lambda req: (sized(201, b""), True))  # closes after each answer, without saying so
    conn = Conn(server, timeout=5)
    results = [conn.call("PUT", f"/p{i}", b"x" * 100) for i in range(3)]
    assert [r.status for r in results] == [201] * 3
    assert [r.line for r in server.requests] == [f"PUT /p{i} HTTP/1.1" for i in range(3)]  # each arrived once
    assert server.connections == 3


def test_fresh_connection_closed_without_an_answer_is_an_error_not_a_retry(serve):
    server = serve(lambda req: (b"", True))
    conn = Conn(server, timeout=5)
    res = conn.call("DELETE", "/d")
    assert res.status == -1 and res.body.startswith(b"RemoteDisconnected: ")
    assert len(server.requests) == 1
    assert conn.last == "DELETE /d -> RemoteDisconnected"


def test_answer_cut_short_is_an_error_and_not_sent_again(serve):
    def script(req: Request) -> tuple[bytes, bool]:
        if req.line.startswith("GET /first"):
            return sized(200, b"ok"), False
        return b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part", True

    server = serve(script)
    conn = Conn(server, timeout=5)
    assert conn.call("GET", "/first").status == 200
    res = conn.call("GET", "/second")
    assert res.status == -1 and res.body.startswith(b"IncompleteBody: ")
    assert conn.last == "GET /second -> 200 -> IncompleteBody"
    assert [r.line for r in server.requests] == ["GET /first HTTP/1.1", "GET /second HTTP/1.1"]
    assert conn.call("GET", "/first").status == 200  # and the next request opens a new connection


def test_non_2xx_body_is_kept_even_when_only_counting(serve):
    server = serve(lambda req: (sized(404, b"<h1>no such file</h1>"), False))
    res = Conn(server, timeout=5).call("GET", "/gone", keep_body=False)
    assert (res.status, res.body) == (404, b"<h1>no such file</h1>")


def test_answers_without_a_body_leave_the_connection_in_step(serve):
    answers = {
        "HEAD": sized(200, b"").replace(b"Content-Length: 0", b"Content-Length: 5000"),
        "DELETE": b"HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n",
        "GET": b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
        "PUT": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n" + sized(201, b"made"),
        "OPTIONS": sized(200, b"fine"),
    }
    server = serve(lambda req: (answers[req.line.split()[0]], False))
    conn = Conn(server, timeout=5)
    got = [(r.status, r.body) for r in (conn.call(m, "/n", b"1" if m == "PUT" else None) for m in answers)]
    assert got == [(200, b""), (204, b""), (304, b""), (201, b"made"), (200, b"fine")]
    assert server.connections == 1


def test_a_silent_server_times_out(serve):
    release = threading.Event()

    def script(req: Request) -> tuple[bytes, bool]:
        release.wait(5)
        return b"", True

    server = serve(script)
    res = Conn(server, timeout=0.3).call("GET", "/slow")
    release.set()
    assert res.status == -1 and res.body == b"TimeoutError: timed out"


def test_garbage_instead_of_a_response_is_an_error(serve):
    server = serve(lambda req: (b"SSH-2.0-OpenSSH\r\n\r\n", True))
    res = Conn(server, timeout=5).call("GET", "/")
    assert res.status == -1 and res.body.startswith(b"BadResponse: ")
