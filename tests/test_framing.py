"""HTTP framing (RFC 9112): a request whose end two parsers could read differently gets 400 and a closed connection.

Every case is a raw PUT sent on its own connection to run_server.py, its
body followed by a smuggled DELETE of a canary file. The server must answer
once, with the status in the table, close the connection, store nothing
under the PUT's name and leave the canary alone. Two well-framed requests
on kept-alive connections show the checks can tell the difference.
"""

from __future__ import annotations

from base64 import b64encode
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests

from tests.rawhttp import exchange
from tests.server import RunningServer

CANARY = b"still here"
#: How long a connection the server keeps open is watched before the case gives up on a close.
WATCH = 2.0


@dataclass(frozen=True)
class Case:
    name: str
    #: The request's header lines after the request line (Host included where the case wants one); {AUTH} is filled in.
    headers: bytes
    body: bytes
    status: int
    version: bytes = b"HTTP/1.1"


def chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data)


HOST = b"Host: 127.0.0.1\r\n"
AUTH = b"Authorization: {AUTH}\r\n"
CASES = [
    # Content-Length
    Case("cl_two_different", HOST + AUTH + b"Content-Length: 5\r\nContent-Length: 3\r\n", b"hello", 400),
    Case("cl_two_identical", HOST + AUTH + b"Content-Length: 5\r\nContent-Length: 5\r\n", b"hello", 400),
    Case("cl_list_identical", HOST + AUTH + b"Content-Length: 5, 5\r\n", b"hello", 400),
    Case("cl_list_different", HOST + AUTH + b"Content-Length: 5, 3\r\n", b"hello", 400),
    Case("cl_plus_sign", HOST + AUTH + b"Content-Length: +5\r\n", b"hello", 400),
    Case("cl_underscore", HOST + AUTH + b"Content-Length: 0_5\r\n", b"hello", 400),
    Case("cl_space_before_colon", HOST + AUTH + b"Content-Length : 5\r\n", b"hello", 400),
    Case("cl_obs_fold", HOST + AUTH + b"Content-Length: 5\r\n 3\r\n", b"hello", 400),
    # Host
    Case("host_twice", HOST + b"Host: other.example\r\n" + AUTH + b"Content-Length: 5\r\n", b"hello", 400),
    Case("host_missing", AUTH + b"Content-Length: 5\r\n", b"hello", 400),
    Case("host_with_space", b"Host: a b\r\n" + AUTH + b"Content-Length: 5\r\n", b"hello", 400),
    Case("host_with_slash", b"Host: a/b\r\n" + AUTH + b"Content-Length: 5\r\n", b"hello", 400),
    # header lines
    Case("space_before_colon", HOST + AUTH + b"X-Note : 1\r\nContent-Length: 5\r\n", b"hello", 400),
    Case("tab_before_colon", HOST + AUTH + b"X-Note\t: 1\r\nContent-Length: 5\r\n", b"hello", 400),
    Case("obs_fold_space", HOST + AUTH + b"X-Note: a\r\n b\r\nContent-Length: 5\r\n", b"hello", 400),
    Case("obs_fold_tab", HOST + AUTH + b"X-Note: a\r\n\tb\r\nContent-Length: 5\r\n", b"hello", 400),
    Case("empty_header_name", HOST + AUTH + b": x\r\nContent-Length: 5\r\n", b"hello", 400),
    Case("bare_cr_in_value", HOST + AUTH + b"X-Note: a\rb\r\nContent-Length: 5\r\n", b"hello", 400),
    # Transfer-Encoding
    Case("te_twice", HOST + AUTH + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
         chunked(b"hello"), 400),
    Case("te_chunked_chunked", HOST + AUTH + b"Transfer-Encoding: chunked, chunked\r\n", chunked(b"hello"), 400),
    Case("te_unknown", HOST + AUTH + b"Transfer-Encoding: gzip\r\n", b"hello", 400),
    Case("te_chunked_not_last", HOST + AUTH + b"Transfer-Encoding: chunked, gzip\r\n", chunked(b"hello"), 400),
    Case("te_empty", HOST + AUTH + b"Transfer-Encoding: \r\n", b"hello", 400),
    # A coding we do not implement before a final chunked: the length is known, the coding is not (RFC 9112 6.1: 501).
    Case("te_unknown_then_chunked", HOST + AUTH + b"Transfer-Encoding: gzip, chunked\r\n", chunked(b"hello"), 501),
    Case("te_and_cl", HOST + AUTH + b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n", chunked(b"hello"), 400),
    Case("cl_and_te", HOST + AUTH + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n", chunked(b"hello"), 400),
    Case("te_in_http10", HOST + AUTH + b"Connection: keep-alive\r\nTransfer-Encoding: chunked\r\n",
         chunked(b"hello"), 400, b"HTTP/1.0"),
]


@pytest.fixture(scope="module")
def target(server: RunningServer) -> Iterator[tuple[RunningServer, str]]:
    _key_id, key = server.create_key()
    yield server, "Basic " + b64encode(f"{key}:".encode()).decode()


def smuggled(canary: str, auth: str) -> bytes:
    return f"DELETE /{canary} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {auth}\r\n\r\n".encode()


def render(case: Case, auth: str) -> bytes:
    headers = case.headers.replace(b"{AUTH}", auth.encode())
    return b"PUT /%s.bin %s\r\n%s\r\n%s%s" % (
        case.name.encode(), case.version, headers, case.body, smuggled(f"canary-{case.name}.txt", auth))


def stored(server: RunningServer, auth: str, name: str) -> tuple[int, bytes]:
    r = requests.get(f"{server.url}/{name}", headers={"Authorization": auth}, timeout=10)
    return r.status_code, r.content


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_framing_in_doubt_is_refused_and_the_connection_closed(target: tuple[RunningServer, str], case: Case) -> None:
    server, auth = target
    canary = f"canary-{case.name}.txt"
    put = requests.put(f"{server.url}/{canary}", data=CANARY, headers={"Authorization": auth}, timeout=10)
    assert put.status_code == 201
    ex = exchange(server.port, render(case, auth), timeout=WATCH, shut=False)
    assert ex.statuses == [case.status], f"expected one {case.status}, got {ex.raw[:300]!r}"
    assert ex.closed, f"the connection stayed open {WATCH} s after the {case.status}"
    assert stored(server, auth, f"{case.name}.bin")[0] == 404, "the refused upload was stored"
    assert stored(server, auth, canary) == (200, CANARY), "the smuggled DELETE was served"


@pytest.mark.parametrize("framing, body", [
    (b"Content-Length: 5\r\n", b"hello"),
    (b"Transfer-Encoding: chunked\r\n", chunked(b"hello")),
], ids=["content_length", "chunked"])
def test_well_framed_requests_keep_the_connection(target: tuple[RunningServer, str], framing: bytes, body: bytes) -> None:
    """The control: the same PUT, framed once, is stored and the next request on the connection is served."""
    server, auth = target
    name = "ok-" + framing.split(b":")[0].decode().lower()
    head = f"PUT /{name}.bin HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {auth}\r\n".encode()
    follow = f"GET /{name}.bin HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {auth}\r\n\r\n".encode()
    ex = exchange(server.port, head + framing + b"\r\n" + body + follow, timeout=1.0, shut=False)
    assert ex.statuses == [201, 200], ex.raw[:500]
    assert not ex.closed
    assert stored(server, auth, f"{name}.bin") == (200, b"hello")
