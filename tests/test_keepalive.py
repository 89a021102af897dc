"""Kept-alive connections stay with their worker only while other workers are free.

uss_dav.engine.connection serves a client's next request on the same
thread when it comes quickly. Two connections that always have a request
waiting must still not keep a third client from being served on a
two-thread server.
"""

from __future__ import annotations

import base64
import socket
import threading
import time

import pytest
import requests

from tests.client import session_for
from tests.server import RunningServer, ServerFactory

THREADS = 2


@pytest.fixture(scope="module")
def two_thread_server(make_module_server: ServerFactory) -> tuple[RunningServer, str]:
    """A server with THREADS request threads, and a key for it."""
    running = make_module_server(threads=THREADS)
    _id, key = running.create_key()
    return running, key


PIPELINED = 1500


def pipeline(running: RunningServer, key: str, count: int, progress: list[int], index: int, failures: list[str]) -> None:
    """`count` GETs written in one go on one connection, then their answers read one by one.

    The server always has this connection's next request at hand, so only
    its own rule (hold while another worker is idle and nobody waits) can
    ever let the connection go before all are answered.
    """
    auth = base64.b64encode(f"{key}:".encode()).decode()
    request = f"GET /file.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", running.port), timeout=30) as sock:
        writer = threading.Thread(target=sock.sendall, args=(request * count,))
        writer.start()
        answers = sock.makefile("rb")
        try:
            for _ in range(count):
                status = answers.readline()
                length = 0
                while (line := answers.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                if not status.startswith(b"HTTP/1.1 200") or len(answers.read(length)) != length:
                    failures.append(f"pipeline {index}: {status!r}")
                    return
                progress[index] += 1
        except OSError as exc:
            failures.append(f"pipeline {index}: {exc}")
        finally:
            writer.join(timeout=30)


def test_busy_connections_do_not_starve_another(two_thread_server: tuple[RunningServer, str]) -> None:
    running, key = two_thread_server
    assert session_for(key).put(running.url + "/file.bin", data=b"x" * 4096, timeout=10).status_code == 201
    progress = [0] * THREADS
    failures: list[str] = []
    busy = [
        threading.Thread(target=pipeline, args=(running, key, PIPELINED, progress, i, failures)) for i in range(THREADS)
    ]
    for thread in busy:
        thread.start()
    try:
        while min(progress) < 20 and not failures:  # both workers are on a pipelined connection
            time.sleep(0.01)
        for _ in range(20):
            # A new connection each time: it must get a worker while the pipelines go on.
            response = requests.get(running.url + "/file.bin", auth=(key, ""), timeout=30)
            assert response.status_code == 200
            assert response.content == b"x" * 4096
        assert max(progress) < PIPELINED, "the other connections were served only once the pipelines had drained"
    finally:
        for thread in busy:
            thread.join(timeout=60)
    assert not failures, failures[:3]
    assert progress == [PIPELINED] * THREADS
