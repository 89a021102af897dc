"""uss_dav.engine's responses, served in this process, with small WSGI apps and the real one.

The headers must leave with the first chunk in one write; the sendfile
callable must send the rest of a file with correct framing on a kept-alive
connection, fall back to chunks when no length was declared, and turn a
client that went away into a closed connection, not an application error.
A returned wsgi.file_wrapper goes by sendfile too; WebDAV GET and the REST
download of the real app take those paths, and a range still does not.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.server import ROOT
from uss_dav.app import build_app
from uss_dav.config import load_config
from uss_dav.engine.listener import HttpServer
from uss_dav.services import open_services
from uss_dav.vocabulary import FIRST_PIECE, SENDFILE, WHOLE_PIECE

App = Callable[[dict[str, Any], Callable[..., Any]], Any]


@contextmanager
def serving(app: App) -> Iterator[str]:
    server = HttpServer(app, "127.0.0.1", 0, threads=2, timeout=10, max_header_bytes=65536)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.stopping = True
        thread.join(10)
        server.stop()


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, bytes]]:
    """Every send on a connection in this process, in order, with the port of its sending end."""
    seen: list[tuple[int, bytes]] = []
    original = socket.socket.sendall

    def spy(self: socket.socket, data: bytes, *args: Any) -> Any:
        seen.append((self.getsockname()[1], bytes(data)))
        return original(self, data, *args)

    monkeypatch.setattr(socket.socket, "sendall", spy)
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


def test_headers_and_a_small_body_leave_in_one_write(writes: list[tuple[int, bytes]]) -> None:
    body = os.urandom(4096)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]

    with serving(app) as url:
        writes.clear()
        response = requests.get(f"{url}/x", timeout=10)
        port = int(url.rsplit(":", 1)[1])
    assert response.content == body
    sent = [data for local, data in writes if local == port]  # the server's end, not the client's
    assert len(sent) == 1, [w[:40] for w in sent]
    assert sent[0].startswith(b"HTTP/1.1 200 OK\r\n") and sent[0].endswith(body)


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


def wrapper_app(make_file: Callable[[], Any], size: int) -> App:
    """Returns environ["wsgi.file_wrapper"] of a fresh file object, as Werkzeug's wrap_file does."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        start_response("200 OK", [("Content-Length", str(size))])
        return environ["wsgi.file_wrapper"](make_file(), 8192)

    return app


def test_a_returned_file_wrapper_goes_by_sendfile(tmp_path: Path, sendfiles: list[int]) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(os.urandom(WHOLE_PIECE * 5 + 11))
    size = path.stat().st_size
    with serving(wrapper_app(lambda: open(path, "rb", buffering=0), size)) as url, requests.Session() as session:
        bodies = [session.get(f"{url}/{n}", timeout=10).content for n in range(2)]
    assert bodies == [path.read_bytes()] * 2
    assert sendfiles == [size - FIRST_PIECE] * 2


def test_a_small_file_goes_whole_with_its_headers(tmp_path: Path, sendfiles: list[int]) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(os.urandom(WHOLE_PIECE))
    with serving(wrapper_app(lambda: open(path, "rb", buffering=0), WHOLE_PIECE)) as url:
        assert requests.get(f"{url}/x", timeout=10).content == path.read_bytes()
    assert sendfiles == []


def test_a_file_wrapper_of_memory_is_iterated(sendfiles: list[int]) -> None:
    data = os.urandom(300_000)
    with serving(wrapper_app(lambda: io.BytesIO(data), len(data))) as url:
        assert requests.get(f"{url}/x", timeout=10).content == data
    assert sendfiles == []


def test_webdav_get_and_rest_download_go_by_sendfile(tmp_path: Path, sendfiles: list[int]) -> None:
    services = open_services(load_config(ROOT / "config.yaml", {"data_dir": str(tmp_path / "data")}), with_hook=False)
    record, key = services.keys.create("gateway")
    services.store.ensure_collection(record.collection)
    body = os.urandom(3 * 1024 * 1024)
    try:
        with serving(build_app(services)) as url, requests.Session() as session:
            session.auth = (key, "")
            assert session.put(f"{url}/big.bin", data=body, timeout=30).status_code == 201
            assert session.get(f"{url}/big.bin", timeout=30).content == body
            assert session.get(f"{url}/api/v1/images/big.bin", timeout=30).content == body
            assert sendfiles == [len(body) - FIRST_PIECE] * 2
            # A range is answered by WsgiDAV (and Werkzeug) reading the file: the right bytes, no sendfile.
            part = session.get(f"{url}/big.bin", headers={"Range": "bytes=100000-2000000"}, timeout=30)
            rest_part = session.get(f"{url}/api/v1/images/big.bin", headers={"Range": "bytes=100000-2000000"}, timeout=30)
            assert part.status_code == rest_part.status_code == 206
            assert part.content == rest_part.content == body[100000:2000001]
            assert len(sendfiles) == 2
    finally:
        services.close()


def test_an_application_i_o_error_is_a_500_not_a_dropped_connection() -> None:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        raise OSError(28, "No space left on device")

    with serving(app) as url:
        response = requests.get(f"{url}/x", timeout=10)
    assert response.status_code == 500


def test_an_unread_body_is_never_read_as_the_next_request() -> None:
    """A 413 without reading the upload: the body's bytes (a request here) must not be served."""
    served: list[str] = []

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        served.append(environ["REQUEST_METHOD"])
        start_response("413 Content Too Large", [("Content-Length", "0")])
        return []

    smuggled = b"DELETE /victim HTTP/1.1\r\nHost: x\r\n\r\n"
    big = smuggled + b"x" * (6 * 1024 * 1024)  # past what the engine drains
    with serving(app) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"PUT /f HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(big))
            with contextlib.suppress(OSError):
                sock.sendall(big)
            answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413")
    assert served == ["PUT"]


#: A two-thread server on a free port, in a process of its own (its CPU time is measured); {prelude} runs first.
SERVER_SCRIPT = """
{prelude}
from uss_dav.engine.listener import HttpServer
def app(environ, start_response):
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]
server = HttpServer(app, "127.0.0.1", 0, threads=2, timeout=30, max_header_bytes=65536)
print(server.port, flush=True)
try:
    server.serve_forever()
except KeyboardInterrupt:
    pass
"""


def _start_server(prelude: str = "") -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([sys.executable, "-c", SERVER_SCRIPT.format(prelude=prelude)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, int(proc.stdout.readline())  # type: ignore[union-attr]


def test_a_quiet_kept_alive_connection_costs_no_cpu() -> None:
    """A request thread spins briefly for a client's next request (KEEP_SPINNING), then sleeps: never longer."""
    proc, port = _start_server()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            for _ in range(20):  # back to back: each next request lands in the spin
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                assert sock.recv(4096).endswith(b"ok")
            cpu_before = _cpu_seconds(proc.pid)
            time.sleep(2.0)  # kept alive and quiet
            spent = _cpu_seconds(proc.pid) - cpu_before
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(4096).endswith(b"ok")
        assert spent < 0.3, f"the server used {spent:.2f} s of CPU in 2 s with one quiet connection"
    finally:
        proc.kill()
        proc.communicate(timeout=10)


def test_out_of_descriptors_the_server_waits_instead_of_spinning() -> None:
    """Past RLIMIT_NOFILE accept() fails while the listener stays readable: a pause, not a busy loop."""
    proc, port = _start_server("import resource\nresource.setrlimit(resource.RLIMIT_NOFILE, (48, 48))")
    try:
        held = []
        for _ in range(80):  # more than the server has descriptors for
            with contextlib.suppress(OSError):
                held.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        cpu_before = _cpu_seconds(proc.pid)
        time.sleep(2.0)
        spent = _cpu_seconds(proc.pid) - cpu_before
        for sock in held:
            sock.close()
        assert spent < 0.5, f"the server used {spent:.2f} s of CPU in 2 s while out of descriptors"
        deadline = time.monotonic() + 20
        while True:  # once descriptors are free again, it serves
            try:
                assert requests.get(f"http://127.0.0.1:{port}/", timeout=5).content == b"ok"
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    finally:
        proc.kill()
        proc.communicate(timeout=10)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
