"""Isolation: with key A, every trick to reach key B's collection fails and changes nothing of B's.

Each attempt goes over a raw socket (so no client library normalises the
path) and must answer 4xx (a few are allowed a 2xx that provably touched only
A's collection); B's files and metadata are compared byte for byte before and
after, and no response may carry B's content or B's lock token.
"""

from __future__ import annotations

import base64
import os
import secrets
import socket
import time
import unicodedata
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote

import pytest
import requests

from tests.client import LOCK_BODY
from tests.server import RunningServer, ServerFactory

TIMEOUT = 10.0
MARK = secrets.token_hex(8)
B_SECRET = f"B-SECRET-{MARK}".encode()
B_LOCKED = f"B-LOCKED-{MARK}".encode()
B_INNER = f"B-INNER-{MARK}".encode()
B_CAFE = f"B-CAFE-{MARK}".encode()
B_PROP = f"B-PROP-{MARK}"
CAFE_NFC = unicodedata.normalize("NFC", "café.txt")
CAFE_NFD = unicodedata.normalize("NFD", "café.txt")
DAV = "{DAV:}"


@dataclass
class World:
    server: RunningServer
    a_id: str
    a_key: str
    b_id: str
    b_key: str
    b_token: str
    secrets_: tuple[bytes, ...] = field(default=(B_SECRET, B_LOCKED, B_INNER, B_CAFE, B_PROP.encode()))

    def auth(self, key: str) -> str:
        return "Basic " + base64.b64encode(f"{key}:".encode()).decode()

    def dirs(self, cid: str) -> list[Path]:
        data = self.server.data_dir
        return [data / "collections" / cid, data / "meta" / cid, data / "meta" / f"{cid}.p"]

    def snapshot(self, cid: str) -> dict[str, bytes | None]:
        """Every file (bytes), folder (None) and symlink (its target) of a collection and its metadata."""
        snap: dict[str, bytes | None] = {}
        for root in self.dirs(cid):
            if root.is_file():
                snap[str(root)] = root.read_bytes()
                continue
            for dirpath, dirnames, filenames in os.walk(root):
                for name in dirnames + filenames:
                    p = Path(dirpath, name)
                    if p.is_symlink():
                        snap[str(p)] = b"symlink->" + os.readlink(p).encode()
                    elif p.is_dir():
                        snap[str(p)] = None
                    else:
                        snap[str(p)] = p.read_bytes()
        return snap


@pytest.fixture(scope="module")
def world(make_module_server: ServerFactory) -> World:
    srv = make_module_server(auth_failure_limit=0, start=False)
    a_id, a_key = srv.create_key("--compression", "off")
    b_id, b_key = srv.create_key("--compression", "off")
    srv.start()
    url = srv.url
    with requests.Session() as b:
        b.auth = (b_key, "")
        assert b.put(f"{url}/b.txt", data=B_SECRET, timeout=TIMEOUT).status_code == 201
        assert b.put(f"{url}/x", data=B_SECRET, timeout=TIMEOUT).status_code == 201
        assert b.request("MKCOL", f"{url}/sub", timeout=TIMEOUT).status_code == 201
        assert b.put(f"{url}/sub/secret.txt", data=B_INNER, timeout=TIMEOUT).status_code == 201
        assert b.put(f"{url}/{quote(CAFE_NFC)}", data=B_CAFE, timeout=TIMEOUT).status_code == 201
        assert b.put(f"{url}/locked.txt", data=B_LOCKED, timeout=TIMEOUT).status_code == 201
        patch = (f'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:iso"><D:set><D:prop>'
                 f"<Z:note>{B_PROP}</Z:note></D:prop></D:set></D:propertyupdate>")
        assert b.request("PROPPATCH", f"{url}/b.txt", data=patch, timeout=TIMEOUT).status_code == 207
        r = b.request("LOCK", f"{url}/locked.txt", data=LOCK_BODY, headers={"Timeout": "Second-3600"}, timeout=TIMEOUT)
        assert r.status_code == 200, r.text
        b_token = r.headers["Lock-Token"].strip("<>")
    with requests.Session() as a:
        a.auth = (a_key, "")
        assert a.put(f"{url}/a.txt", data=b"A's own file", timeout=TIMEOUT).status_code == 201
        assert a.put(f"{url}/locked.txt", data=b"A's locked.txt", timeout=TIMEOUT).status_code == 201
        assert a.request("MKCOL", f"{url}/adir", timeout=TIMEOUT).status_code == 201
    return World(srv, a_id, a_key, b_id, b_key, b_token)


def send(world: World, key: str, method: str, target: str | bytes, headers: list[tuple[str, str]] = (),
         body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """One request on its own connection, the target sent byte for byte; (status, headers, body)."""
    target_b = target if isinstance(target, bytes) else target.encode("utf-8")
    lines = [method.encode() + b" " + target_b + b" HTTP/1.1", f"Host: 127.0.0.1:{world.server.port}".encode(),
             b"Authorization: " + world.auth(key).encode(), b"Connection: close"]
    lines += [f"{n}: {v}".encode() for n, v in headers]
    if body:
        lines.append(b"Content-Length: %d" % len(body))
    data = b"\r\n".join(lines) + b"\r\n\r\n" + body
    received = b""
    with socket.create_connection(("127.0.0.1", world.server.port), timeout=TIMEOUT) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            received += chunk
    head, _, rest = received.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/"):
        raise AssertionError(f"no HTTP response to {data[:300]!r}: {received[:300]!r}")
    status = int(head.split(b" ", 2)[1])
    hdrs = {}
    for line in head.split(b"\r\n")[1:]:
        n, _, v = line.partition(b":")
        hdrs[n.strip().lower().decode("latin-1")] = v.strip().decode("latin-1")
    return status, hdrs, rest


def u(text: str) -> str:
    """Percent-encode the non-ASCII characters of a path (UTF-8), keeping '/' and '%'."""
    return quote(text, safe="/%\\:@!$&'()*+,;=-._~")


@dataclass
class Attempt:
    name: str
    method: str
    target: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    expect: frozenset[int] = frozenset(range(400, 500))
    #: A 2xx is accepted if it changed nothing but this file of A's, to the request body.
    own_ok: str | None = None


def A(name: str, method: str, target: str, headers: list[tuple[str, str]] = (), body: bytes = b"",
      expect: set[int] | None = None, own_ok: str | None = None) -> Attempt:
    codes = frozenset(expect) if expect else frozenset(range(400, 500))
    if own_ok:
        codes |= {200, 201, 204}
    return Attempt(name, method, target, list(headers), body, codes, own_ok)


PUT_BODY = b"written by key A"
ATTEMPTS = [
    # -- dot segments, plain and encoded, with slashes and backslashes
    A("get_dotdot", "GET", "/../{B}/b.txt"),
    A("get_dotdot_deep", "GET", "/adir/../../{B}/b.txt"),
    A("get_enc_dotdot", "GET", "/%2e%2e/{B}/b.txt"),
    A("get_enc_dotdot_upper", "GET", "/%2E%2E/{B}/b.txt"),
    A("get_mixed_dotdot", "GET", "/.%2e/{B}/b.txt"),
    A("get_enc_slash", "GET", "/..%2f{B}%2fb.txt"),
    A("get_all_encoded", "GET", "/%2e%2e%2f{B}%2fb.txt"),
    A("get_double_encoded", "GET", "/%252e%252e/{B}/b.txt"),
    A("get_backslash", "GET", "/..\\{B}\\b.txt"),
    A("get_enc_backslash", "GET", "/..%5c{B}%5cb.txt"),
    A("get_enc_dotdot_backslash", "GET", "/%2e%2e%5c{B}%5cb.txt"),
    A("put_dotdot", "PUT", "/../{B}/b.txt", body=PUT_BODY),
    A("put_enc_dotdot", "PUT", "/%2e%2e/{B}/b.txt", body=PUT_BODY),
    A("put_enc_backslash", "PUT", "/..%5c{B}%5cb.txt", body=PUT_BODY),
    A("delete_enc_dotdot", "DELETE", "/%2e%2e/{B}/b.txt"),
    A("propfind_enc_dotdot", "PROPFIND", "/%2e%2e/{B}/", [("Depth", "1")]),
    A("mkcol_enc_dotdot", "MKCOL", "/%2e%2e/{B}/newdir"),
    A("lock_enc_dotdot", "LOCK", "/%2e%2e/{B}/b.txt", body=LOCK_BODY),
    A("proppatch_enc_dotdot", "PROPPATCH", "/%2e%2e/{B}/b.txt",
      body=b'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:"><D:set><D:prop><D:x>A</D:x></D:prop></D:set></D:propertyupdate>'),
    A("move_source_in_b", "MOVE", "/%2e%2e/{B}/b.txt", [("Destination", "/stolen.txt")]),
    A("copy_source_in_b", "COPY", "/%2e%2e/{B}/b.txt", [("Destination", "/stolen.txt")]),
    # -- Unicode look-alikes of '.' and '/'
    A("get_u2024_one_dot_leader", "GET", u("/\u2024\u2024/{B}/b.txt")),
    A("get_u2025_two_dot_leader", "GET", u("/\u2025/{B}/b.txt")),
    A("get_uff0e_fullwidth_dot", "GET", u("/\uff0e\uff0e/{B}/b.txt")),
    A("get_u2215_division_slash", "GET", u("/..\u2215{B}\u2215b.txt")),
    A("get_uff0f_fullwidth_solidus", "GET", u("/\uff0e\uff0e\uff0f{B}\uff0fb.txt")),
    A("put_uff0e_fullwidth_dot", "PUT", u("/\uff0e\uff0e/{B}/b.txt"), body=PUT_BODY),
    A("get_overlong_utf8_dot", "GET", "/%c0%ae%c0%ae/{B}/b.txt"),
    A("get_overlong_utf8_slash", "GET", "/..%c0%af{B}%c0%afb.txt"),
    # -- Unicode normalisation: B's café.txt is not A's
    A("get_b_name_nfc", "GET", u("/" + CAFE_NFC), expect={404}),
    A("get_b_name_nfd", "GET", u("/" + CAFE_NFD), expect={404}),
    # -- overlong names
    A("put_name_300_bytes", "PUT", "/" + "a" * 300, body=PUT_BODY, expect={400}),
    A("put_name_300_bytes_utf8", "PUT", u("/" + "é" * 150), body=PUT_BODY, expect={400}),
    A("put_name_300_bytes_in_b_path", "PUT", "/%2e%2e/{B}/" + "b" * 300, body=PUT_BODY),
    # -- B's collection id as a path
    A("get_b_id", "GET", "/{B}/b.txt", expect={404}),
    A("propfind_b_id", "PROPFIND", "/{B}/", [("Depth", "1")], expect={404}),
    A("put_b_id", "PUT", "/{B}/b.txt", body=PUT_BODY, expect={409}),
    A("delete_b_id", "DELETE", "/{B}/b.txt", expect={404}),
    A("get_collections_b", "GET", "/collections/{B}/b.txt", expect={404}),
    A("get_absolute_form", "GET", "http://127.0.0.1:{PORT}/../{B}/b.txt"),
    A("get_double_slash", "GET", "//{B}/b.txt"),
    A("rest_api_b_id", "GET", "/api/v1/../../{B}/b.txt"),
    # -- Destination headers
    A("move_dest_abs_dotdot", "MOVE", "/a.txt", [("Destination", "http://127.0.0.1:{PORT}/../{B}/x")]),
    A("copy_dest_abs_dotdot", "COPY", "/a.txt", [("Destination", "http://127.0.0.1:{PORT}/../{B}/x")]),
    A("copy_dest_abs_enc_dotdot", "COPY", "/a.txt", [("Destination", "http://127.0.0.1:{PORT}/%2e%2e/{B}/x")]),
    A("copy_dest_abs_b_id", "COPY", "/a.txt", [("Destination", "http://127.0.0.1:{PORT}/{B}/x")], expect={409}),
    A("copy_dest_other_host", "COPY", "/a.txt", [("Destination", "http://other.host/x")], expect={400, 403, 502}),
    A("move_dest_other_host", "MOVE", "/a.txt", [("Destination", "http://other.host/x")], expect={400, 403, 502}),
    A("copy_dest_file_scheme", "COPY", "/a.txt", [("Destination", "file:///{DATA}/collections/{B}/x")], expect={400, 403, 502}),
    A("copy_dest_enc_dotdot", "COPY", "/a.txt", [("Destination", "/%2e%2e/{B}/x")]),
    A("move_dest_enc_dotdot", "MOVE", "/a.txt", [("Destination", "/%2e%2e/{B}/x")]),
    A("copy_dest_dotdot", "COPY", "/a.txt", [("Destination", "/../{B}/x")]),
    A("copy_dest_enc_slash", "COPY", "/a.txt", [("Destination", "/..%2f{B}%2fx")]),
    A("copy_dest_backslash", "COPY", "/a.txt", [("Destination", "/..\\{B}\\x")]),
    A("copy_dest_enc_backslash", "COPY", "/a.txt", [("Destination", "/..%5c{B}%5cx")]),
    A("copy_dest_fullwidth", "COPY", "/a.txt", [("Destination", u("/\uff0e\uff0e/{B}/x"))]),
    A("copy_dest_b_id_overwrite", "COPY", "/a.txt", [("Destination", "/{B}/b.txt"), ("Overwrite", "T")], expect={409}),
    A("move_dest_data_dir_path", "MOVE", "/a.txt", [("Destination", "/../../collections/{B}/b.txt")]),
    # -- B's lock token
    A("put_own_file_with_b_token", "PUT", "/locked.txt", [("If", "(<{TB}>)")], PUT_BODY),
    # WsgiDAV does not evaluate a tagged list naming another resource, so this PUT is unconditional (RFC 4918
    # 10.4 would make it 412); it may only ever touch A's own /locked.txt.
    A("put_own_file_tagged_b_url", "PUT", "/locked.txt", [("If", "<http://127.0.0.1:{PORT}/../{B}/locked.txt> (<{TB}>)")], PUT_BODY,
      own_ok="locked.txt"),
    # Tagged lists are compared with "/<collection id>/path", so none ever applies (see test_hostile's
    # if_tagged_wrong_etag): the PUT is unconditional, and may only touch A's own file.
    A("put_own_file_tagged_own_url", "PUT", "/locked.txt", [("If", "</locked.txt> (<{TB}>)")], PUT_BODY, own_ok="locked.txt"),
    A("put_b_path_with_b_token", "PUT", "/%2e%2e/{B}/locked.txt", [("If", "(<{TB}>)")], PUT_BODY),
    A("delete_own_file_with_b_token", "DELETE", "/locked.txt", [("If", "(<{TB}>)")]),
    A("unlock_own_file_with_b_token", "UNLOCK", "/locked.txt", [("Lock-Token", "<{TB}>")]),
    A("unlock_b_path_with_b_token", "UNLOCK", "/%2e%2e/{B}/locked.txt", [("Lock-Token", "<{TB}>")]),
    A("lock_refresh_with_b_token", "LOCK", "/locked.txt", [("If", "(<{TB}>)"), ("Timeout", "Second-60")]),
    A("move_own_file_with_b_token", "MOVE", "/locked.txt", [("Destination", "/moved.txt"), ("If", "(<{TB}>)")]),
]


def _fill(text: str, world: World) -> str:
    return (text.replace("{B}", world.b_id).replace("{PORT}", str(world.server.port)).replace("{TB}", world.b_token)
            .replace("{DATA}", str(world.server.data_dir).lstrip("/")))


def _assert_no_leak(world: World, body: bytes, what: str) -> None:
    for s in world.secrets_:
        assert s not in body, f"{what}: response carries B's data {s!r}"
    assert world.b_token.encode() not in body, f"{what}: response carries B's lock token"


@pytest.mark.parametrize("attempt", ATTEMPTS, ids=[a.name for a in ATTEMPTS])
def test_key_a_cannot_reach_b(world: World, attempt: Attempt) -> None:
    before_b = world.snapshot(world.b_id)
    before_a = world.snapshot(world.a_id)
    target = _fill(attempt.target, world)
    headers = [(n, _fill(v, world)) for n, v in attempt.headers]
    status, _hdrs, body = send(world, world.a_key, attempt.method, target, headers, attempt.body)
    what = f"{attempt.method} {target!r} {headers} -> {status} {body[:300]!r}"
    print(f"ATTEMPT {attempt.name}: {status}")
    assert status in attempt.expect, what
    _assert_no_leak(world, body, what)
    assert world.snapshot(world.b_id) == before_b, f"B's collection changed after {what}"
    after_a = world.snapshot(world.a_id)
    if status < 300:
        assert attempt.own_ok, what
        a_file = world.server.data_dir / "collections" / world.a_id / attempt.own_ok
        assert a_file.read_bytes() == attempt.body, f"{what}: A's {attempt.own_ok} does not hold the body"
        meta = str(world.server.data_dir / "meta" / world.a_id / attempt.own_ok)
        changed = {k for k in set(before_a) | set(after_a) if before_a.get(k) != after_a.get(k)}
        assert changed <= {str(a_file), meta + ".m"}, f"{what}: more than A's {attempt.own_ok} changed: {changed}"
    else:
        # A 4xx must not have changed A's collection either.
        assert after_a == before_a, f"A's collection changed by a refused request: {what}"


def test_nfd_and_nfc_names_stay_in_a_collection(world: World) -> None:
    """A writes B's file name in NFD: it lands in A's collection (as NFC) and B's café.txt is untouched."""
    before_b = world.snapshot(world.b_id)
    url = world.server.url
    with requests.Session() as a:
        a.auth = (world.a_key, "")
        r = a.put(f"{url}/{quote(CAFE_NFD)}", data=b"A's cafe", timeout=TIMEOUT)
        assert r.status_code == 201, r.text
        for name in (CAFE_NFC, CAFE_NFD):
            got = a.get(f"{url}/{quote(name)}", timeout=TIMEOUT)
            assert got.status_code == 200 and got.content == b"A's cafe"
        assert a.delete(f"{url}/{quote(CAFE_NFC)}", timeout=TIMEOUT).status_code == 204
    on_disk = os.listdir(world.server.data_dir / "collections" / world.a_id)
    assert CAFE_NFC not in on_disk and CAFE_NFD not in on_disk
    assert world.snapshot(world.b_id) == before_b
    with requests.Session() as b:
        b.auth = (world.b_key, "")
        assert b.get(f"{url}/{quote(CAFE_NFD)}", timeout=TIMEOUT).content == B_CAFE


def test_folder_named_like_b_id_is_a_own(world: World) -> None:
    """MKCOL /<B id> and PUT into it: a 2xx, and provably only in A's collection."""
    before_b = world.snapshot(world.b_id)
    b = world.b_id
    assert send(world, world.a_key, "MKCOL", f"/{b}")[0] == 201
    try:
        assert send(world, world.a_key, "PUT", f"/{b}/b.txt", body=PUT_BODY)[0] == 201
        assert (world.server.data_dir / "collections" / world.a_id / b / "b.txt").read_bytes() == PUT_BODY
        status, _, body = send(world, world.a_key, "GET", f"/{b}/b.txt")
        assert status == 200 and body == PUT_BODY
        assert world.snapshot(world.b_id) == before_b
    finally:
        assert send(world, world.a_key, "DELETE", f"/{b}")[0] == 204


def _hrefs(body: bytes) -> set[str]:
    return {unicodedata.normalize("NFC", unquote(el.text or "")) for el in ET.fromstring(body).iter(f"{DAV}href")}


def test_propfind_root_lists_only_a_files(world: World) -> None:
    for depth in ("0", "1"):
        status, _, body = send(world, world.a_key, "PROPFIND", "/", [("Depth", depth)])
        assert status == 207
        _assert_no_leak(world, body, f"PROPFIND / depth {depth}")
        assert world.b_id.encode() not in body
    names = _hrefs(body)
    assert names == {"/", "/a.txt", "/locked.txt", "/adir/"}, names
    # A's lockdiscovery of its own locked.txt shows no lock (B's lock is B's).
    status, _, body = send(world, world.a_key, "PROPFIND", "/locked.txt", [("Depth", "0")],
                           b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:lockdiscovery/></D:prop></D:propfind>')
    assert status == 207
    assert b"locktoken" not in body and world.b_token.encode() not in body


def test_a_can_lock_its_own_same_named_file(world: World) -> None:
    """B's lock on /locked.txt does not lock A's /locked.txt, and A's lock does not touch B's."""
    before_b = world.snapshot(world.b_id)
    status, hdrs, body = send(world, world.a_key, "LOCK", "/locked.txt", [("Timeout", "Second-60")], LOCK_BODY)
    assert status == 200, body
    token = hdrs["lock-token"]
    assert world.b_token not in token
    status, _, _ = send(world, world.a_key, "UNLOCK", "/locked.txt", [("Lock-Token", token)])
    assert status == 204
    assert world.snapshot(world.b_id) == before_b


@pytest.fixture
def planted(world: World) -> Iterator[dict[str, Path]]:
    """Symlinks planted on disk in A's collection: to B's folder, to B's file, to /etc/passwd."""
    a_dir = world.server.data_dir / "collections" / world.a_id
    b_dir = world.server.data_dir / "collections" / world.b_id
    links = {
        "to-b-dir": b_dir,
        "to-b-file": b_dir / "b.txt",
        "to-b-relative": Path("..") / world.b_id / "b.txt",
        "to-passwd": Path("/etc/passwd"),
    }
    for name, target in links.items():
        os.symlink(target, a_dir / name)
    try:
        yield links
    finally:
        for name in links:
            p = a_dir / name
            if p.is_symlink():
                p.unlink()


SYMLINK_ATTEMPTS = [
    ("GET", "/to-b-file", [], b""),
    ("GET", "/to-b-relative", [], b""),
    ("GET", "/to-b-dir/b.txt", [], b""),
    ("GET", "/to-b-dir/sub/secret.txt", [], b""),
    ("GET", "/to-passwd", [], b""),
    ("HEAD", "/to-passwd", [], b""),
    ("PROPFIND", "/to-b-dir/", [("Depth", "1")], b""),
    ("PROPFIND", "/to-b-file", [("Depth", "0")], b""),
    ("PUT", "/to-b-file", [], PUT_BODY),
    ("PUT", "/to-b-relative", [], PUT_BODY),
    ("PUT", "/to-passwd", [], PUT_BODY),
    ("PUT", "/to-b-dir/b.txt", [], PUT_BODY),
    ("PUT", "/to-b-dir/new.txt", [], PUT_BODY),
    ("MKCOL", "/to-b-dir/newdir", [], b""),
    ("DELETE", "/to-b-file", [], b""),
    ("DELETE", "/to-b-dir/b.txt", [], b""),
    ("DELETE", "/to-b-dir", [], b""),
    ("MOVE", "/to-b-file", [("Destination", "/stolen.txt")], b""),
    ("COPY", "/to-b-file", [("Destination", "/stolen.txt")], b""),
    ("COPY", "/to-b-dir", [("Destination", "/stolen-dir")], b""),
    ("COPY", "/a.txt", [("Destination", "/to-b-file")], b""),
    ("COPY", "/a.txt", [("Destination", "/to-b-dir/b.txt")], b""),
    ("MOVE", "/a.txt", [("Destination", "/to-b-dir/x")], b""),
    ("LOCK", "/to-b-file", [], LOCK_BODY),
    ("LOCK", "/to-b-dir/new-locked.txt", [], LOCK_BODY),
    ("PROPPATCH", "/to-b-file", [],
     b'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:"><D:set><D:prop><D:x>A</D:x></D:prop></D:set></D:propertyupdate>'),
]


@pytest.mark.parametrize("method,target,headers,body", SYMLINK_ATTEMPTS,
                         ids=[f"{m}-{t.strip('/').replace('/', '_')}-{i}" for i, (m, t, _h, _b) in enumerate(SYMLINK_ATTEMPTS)])
def test_planted_symlinks_are_not_followed(world: World, planted: dict[str, Path], method: str, target: str,
                                           headers: list[tuple[str, str]], body: bytes) -> None:
    before_b = world.snapshot(world.b_id)
    passwd = Path("/etc/passwd").read_bytes()
    status, _, got = send(world, world.a_key, method, target, headers, body)
    what = f"{method} {target} {headers} -> {status} {got[:300]!r}"
    print(f"SYMLINK {method} {target}: {status}")
    assert 400 <= status < 500, what
    _assert_no_leak(world, got, what)
    assert b"root:" not in got, f"{what}: /etc/passwd leaked"
    assert world.snapshot(world.b_id) == before_b, f"B changed after {what}"
    assert Path("/etc/passwd").read_bytes() == passwd
    a_dir = world.server.data_dir / "collections" / world.a_id
    for name, link in planted.items():
        assert (a_dir / name).is_symlink() and Path(os.readlink(a_dir / name)) == link, f"{name} replaced by {what}"
    assert not (a_dir / "stolen.txt").exists() and not (a_dir / "stolen-dir").exists()


def test_propfind_does_not_list_planted_symlinks(world: World, planted: dict[str, Path]) -> None:
    status, _, body = send(world, world.a_key, "PROPFIND", "/", [("Depth", "1")])
    assert status == 207
    _assert_no_leak(world, body, "PROPFIND / with symlinks")
    assert not any(name in body.decode() for name in planted), body[:1000]


def test_b_lock_and_files_survived(world: World) -> None:
    """Run last: B's lock still holds (A never removed it) and B's files are B's."""
    url = world.server.url
    with requests.Session() as b:
        b.auth = (world.b_key, "")
        assert b.get(f"{url}/b.txt", timeout=TIMEOUT).content == B_SECRET
        assert b.get(f"{url}/sub/secret.txt", timeout=TIMEOUT).content == B_INNER
        assert b.put(f"{url}/locked.txt", data=b"no token", timeout=TIMEOUT).status_code == 423
        r = b.request("UNLOCK", f"{url}/locked.txt", headers={"Lock-Token": f"<{world.b_token}>"}, timeout=TIMEOUT)
        assert r.status_code == 204
        assert b.get(f"{url}/locked.txt", timeout=TIMEOUT).content == B_LOCKED
        listing = b.request("PROPFIND", f"{url}/", headers={"Depth": "1"}, timeout=TIMEOUT)
        assert _hrefs(listing.content) == {"/", "/b.txt", "/x", "/sub/", f"/{CAFE_NFC}", "/locked.txt"}
