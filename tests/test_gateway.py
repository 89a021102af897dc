"""uss_dav.gateway under a real cheroot server in this process, with small WSGI apps.

The headers must leave with the first chunk in one write; the sendfile
callable must send the rest of a file with correct framing on a kept-alive
connection, fall back to chunks when no length was declared, and turn a
client that went away into a closed connection, not an application error.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
from cheroot import makefile, wsgi

from uss_dav.gateway import SENDFILE, Gateway

App = Callable[[dict[str, Any], Callable[..., Any]], Any]


@contextmanager
def serving(app: App) -> Iterator[str]:
    server = wsgi.Server(("127.0.0.1", 0), app, numthreads=2, timeout=10)
    server.gateway = Gateway
    server.prepare()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.bind_addr[1]}"
    finally:
        server.stop()
        thread.join(10)


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every write to a connection, in order."""
    seen: list[bytes] = []
    original = makefile.StreamWriter.write

    def spy(self: Any, data: bytes, *args: Any, **kwargs: Any) -> Any:
        seen.append(bytes(data))
        return original(self, data, *args, **kwargs)

    monkeypatch.setattr(makefile.StreamWriter, "write", spy)
    return seen


@pytest.fixture
def sendfiles(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The count of every socket.sendfile call."""
    counts: list[int] = []
    original = socket.socket.sendfile

    def spy(self: socket.socket, file: Any, offset: int = 0, count: int | None = None) -> int:
        counts.append(count or 0)
        return original(self, file, offset, count)

    monkeypatch.setattr(socket.socket, "sendfile", spy)
    return counts


def test_headers_and_a_small_body_leave_in_one_write(writes: list[bytes]) -> None:
    body = os.urandom(4096)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]

    with serving(app) as url:
        writes.clear()
        response = requests.get(f"{url}/x", timeout=10)
    assert response.content == body
    assert len(writes) == 1, [w[:40] for w in writes]
    assert writes[0].startswith(b"HTTP/1.1 200 OK\r\n") and writes[0].endswith(body)


def file_app(path: Path, first: int, *, declare_length: bool = True, done: list[str] | None = None) -> App:
    """Yields the file's first bytes, then hands the rest to environ[SENDFILE]."""
    size = path.stat().st_size

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Length", str(size))] if declare_length else [])
        with open(path, "rb", buffering=0) as fh:
            try:
                yield fh.read(first)
                sent = environ[SENDFILE](fh, size - first)
                if done is not None:
                    done.append(f"returned {sent}")
            except BaseException as exc:
                if done is not None:
                    done.append(f"raised {exc!r}")
                raise

    return app


def test_sendfile_sends_the_rest_on_a_kept_alive_connection(tmp_path: Path, sendfiles: list[int]) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(os.urandom(3 * 1024 * 1024 + 7))
    with serving(file_app(path, 1000)) as url, requests.Session() as session:
        first = session.get(f"{url}/a", timeout=10)
        second = session.get(f"{url}/b", timeout=10)  # same connection: the first response was framed exactly
    assert first.content == second.content == path.read_bytes()
    assert sendfiles == [path.stat().st_size - 1000] * 2


def test_sendfile_without_a_declared_length_falls_back_to_chunks(tmp_path: Path, sendfiles: list[int]) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(os.urandom(2 * 1024 * 1024 + 3))
    with serving(file_app(path, 10, declare_length=False)) as url:
        response = requests.get(f"{url}/a", timeout=10)
    assert response.headers.get("Transfer-Encoding") == "chunked"
    assert response.content == path.read_bytes()
    assert sendfiles == []


def test_a_client_gone_during_sendfile_is_not_an_application_error(tmp_path: Path, sendfiles: list[int]) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(64 * 1024 * 1024))
    done: list[str] = []
    with serving(file_app(path, 1000, done=done)) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", port))
            sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.1 200")
        for _ in range(200):
            if done:
                break
            threading.Event().wait(0.05)
        # The server goes on serving.
        assert requests.get(f"{url}/again", timeout=30).content == path.read_bytes()
    assert done[0] == "returned 0", done
    assert len(sendfiles) == 2
