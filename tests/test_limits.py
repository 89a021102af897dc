"""Limits from config.yaml, each against a server configured small enough to hit it.

- max_upload_bytes (1 MiB here): 413 from Content-Length before the body is
  read, and for chunked bodies as soon as the limit is passed; nothing stored.
- quota_bytes / quota_files: 507 with a reason, and RFC 4331 quota properties.
- max_xml_bytes, DOCTYPE/entities, max_xml_depth: 413 / 400, never 500.
- PROPFIND Depth: infinity 403 (DAV:propfind-finite-depth); no Depth = Depth 1.
- socket_timeout (2 s here): a silent client is dropped, a slow steady one is not.
- auth_failure_limit (5 in 30 s here): the 6th wrong key gets 429 + Retry-After,
  while a valid key still gets in.
"""

from __future__ import annotations

import base64
import os
import select
import socket
import time
import xml.etree.ElementTree as ET

import pytest
import requests

from providers.limits import SMALL_BODY, small_body_memo
from tests.client import LOCK_BODY, hrefs, propfind
from tests.server import RunningServer, ServerFactory

MiB = 1 << 20
MAX_UPLOAD = MiB
QUOTA_BYTES = 2_500_000
QUOTA_FILES = 4
TIMEOUT = 10.0
DAV = "{DAV:}"


# --- servers and helpers --------------------------------------------------------------


@pytest.fixture(scope="module")
def limited(make_module_server: ServerFactory) -> RunningServer:
    """Small upload limit and quota; a long socket timeout, so a server waiting for a body is obvious."""
    return make_module_server(max_upload_bytes=MAX_UPLOAD, quota_bytes=QUOTA_BYTES, quota_files=QUOTA_FILES,
                              socket_timeout=30, auth_failure_limit=0)


@pytest.fixture(scope="module")
def impatient(make_module_server: ServerFactory) -> RunningServer:
    """socket_timeout 2 s; auth failures limited to 5 in 30 s."""
    return make_module_server(socket_timeout=2, auth_failure_limit=5, auth_failure_window=30)


def new_key(server: RunningServer) -> tuple[str, requests.Session]:
    key_id, key = server.create_key("--compression", "off")
    session = requests.Session()
    session.auth = (key, "")
    # No keep-alive: with socket_timeout 2 the server rightly closes idle connections, and a
    # reused dead connection would fail on the client side.
    session.headers["Connection"] = "close"
    return key_id, session


def basic(session: requests.Session) -> bytes:
    user, _ = session.auth  # type: ignore[misc]
    return b"Basic " + base64.b64encode(f"{user}:".encode())


def staging_empty(server: RunningServer, wait: float = 3.0) -> list[str]:
    """Names left in staging/ after up to `wait` seconds."""
    staging = server.data_dir / "staging"
    deadline = time.monotonic() + wait
    while True:
        left = sorted(os.listdir(staging))
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def collection_files(server: RunningServer, key_id: str) -> dict[str, bytes]:
    root = server.data_dir / "collections" / key_id
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def read_response(sock: socket.socket, timeout: float) -> tuple[bytes, float, bool]:
    """(bytes received, seconds until the first byte or the end, closed?) reading up to `timeout`."""
    start = time.monotonic()
    data = b""
    first = None
    closed = False
    while time.monotonic() - start < timeout:
        ready, _, _ = select.select([sock], [], [], 0.05)
        if not ready:
            if data and b"\r\n\r\n" in data and _complete(data):
                break
            continue
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            closed = True
            break
        if first is None:
            first = time.monotonic() - start
        if not chunk:
            closed = True
            break
        data += chunk
    return data, (first if first is not None else time.monotonic() - start), closed


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


def status_of(data: bytes) -> int | None:
    """The first final status in `data` (skipping 100 Continue)."""
    for line in data.split(b"\r\n"):
        if line.startswith(b"HTTP/1.") and len(line) >= 12:
            code = int(line[9:12])
            if code >= 200:
                return code
    return None


# --- max_upload_bytes -------------------------------------------------------------------


def test_upload_limit_413_from_content_length_before_any_body(limited: RunningServer) -> None:
    key_id, dav = new_key(limited)
    v1 = os.urandom(1000)
    assert dav.put(f"{limited.url}/f.bin", data=v1, timeout=TIMEOUT).status_code == 201
    with socket.create_connection(("127.0.0.1", limited.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"PUT /f.bin HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: " + basic(dav)
                     + b"\r\nContent-Length: %d\r\n\r\n" % (1024 * MiB))
        data, elapsed, closed = read_response(sock, 5.0)
    reason = data.partition(b"\r\n\r\n")[2][:100]
    print(f"413 from Content-Length after {elapsed:.3f} s: {reason!r}")
    assert status_of(data) == 413, data[:500]
    assert data.startswith(b"HTTP/1.1 413 Content Too Large\r\n"), data[:100]
    assert elapsed < 2.0, f"413 took {elapsed:.2f} s: was the server waiting for the body?"
    assert b"limit" in data.split(b"\r\n\r\n", 1)[1].lower() or b"large" in data.lower(), data[:500]
    assert b"connection: close" in data.lower() or closed, "the unread body must not be parsed as a next request"
    assert dav.get(f"{limited.url}/f.bin", timeout=TIMEOUT).content == v1
    assert collection_files(limited, key_id) == {"f.bin": v1}
    assert staging_empty(limited) == []


def test_upload_limit_413_with_expect_100_continue(limited: RunningServer) -> None:
    key_id, dav = new_key(limited)
    with socket.create_connection(("127.0.0.1", limited.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"PUT /big.bin HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: " + basic(dav)
                     + b"\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n" % (MAX_UPLOAD + 1))
        data, elapsed, _closed = read_response(sock, 5.0)
    status_lines = [line for line in data.splitlines() if line.startswith(b"HTTP/")]
    print(f"Expect: 100-continue over the limit: {status_lines}")
    assert status_of(data) == 413, data[:500]
    assert elapsed < 2.0
    assert collection_files(limited, key_id) == {}
    assert staging_empty(limited) == []


def test_upload_exactly_at_limit_is_accepted_one_more_byte_is_not(limited: RunningServer) -> None:
    _key_id, dav = new_key(limited)
    body = os.urandom(MAX_UPLOAD)
    assert dav.put(f"{limited.url}/at.bin", data=body, timeout=TIMEOUT).status_code == 201
    r = dav.put(f"{limited.url}/at.bin", data=body + b"x", timeout=TIMEOUT)
    assert r.status_code == 413, r.text
    assert dav.get(f"{limited.url}/at.bin", timeout=TIMEOUT).content == body
    assert staging_empty(limited) == []


def test_chunked_upload_refused_as_soon_as_it_passes_the_limit(limited: RunningServer) -> None:
    """Send one 64 KiB piece past the limit, never the last chunk: the 413 must come without more data.

    If it does not come within 3 s, more pieces are sent (up to 4 MiB) only to report how far past
    the limit the server read before refusing.
    """
    key_id, dav = new_key(limited)
    v1 = b"previous version"
    assert dav.put(f"{limited.url}/c.bin", data=v1, timeout=TIMEOUT).status_code == 201
    piece = os.urandom(64 * 1024)
    with socket.create_connection(("127.0.0.1", limited.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"PUT /c.bin HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: " + basic(dav)
                     + b"\r\nTransfer-Encoding: chunked\r\n\r\n")
        sent = 0
        while sent <= MAX_UPLOAD:
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            sent += len(piece)
        data, _elapsed, _closed = read_response(sock, 3.0)
        sent_at_limit = sent
        while status_of(data) is None and sent < 4 * MiB:
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            except OSError:
                break
            sent += len(piece)
            more, _e, _c = read_response(sock, 0.2)
            data += more
        if status_of(data) is None:
            more, _e, _c = read_response(sock, 3.0)
            data += more
    assert status_of(data) == 413, f"no 413 even after {sent} bytes: {data[:300]!r}"
    assert data.startswith(b"HTTP/1.1 413 Content Too Large\r\n"), data[:100]  # as for a declared length
    assert sent == sent_at_limit, (
        f"no answer while {sent_at_limit} bytes ({sent_at_limit - MAX_UPLOAD} past the limit) were in; "
        f"the 413 came only after {sent} bytes had been sent")
    assert dav.get(f"{limited.url}/c.bin", timeout=TIMEOUT).content == v1
    assert collection_files(limited, key_id) == {"c.bin": v1}
    assert staging_empty(limited) == []


# --- quota ----------------------------------------------------------------------------------


QUOTA_PROPS = ('<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:prop>'
               "<D:quota-used-bytes/><D:quota-available-bytes/></D:prop></D:propfind>")


def quota(dav: requests.Session, url: str) -> tuple[int, int]:
    r = propfind(dav, url + "/", "0", QUOTA_PROPS)
    assert r.status_code == 207, r.text
    tree = ET.fromstring(r.content)
    used = tree.findtext(f".//{DAV}quota-used-bytes")
    available = tree.findtext(f".//{DAV}quota-available-bytes")
    assert used is not None and available is not None, r.text
    return int(used), int(available)


def test_quota_bytes_507_and_quota_properties(limited: RunningServer) -> None:
    key_id, dav = new_key(limited)
    url = limited.url
    assert quota(dav, url) == (0, QUOTA_BYTES)
    files = {f"q{i}.bin": os.urandom(800_000) for i in range(3)}
    for name, body in files.items():
        assert dav.put(f"{url}/{name}", data=body, timeout=TIMEOUT).status_code == 201
    assert quota(dav, url) == (2_400_000, QUOTA_BYTES - 2_400_000)

    r = dav.put(f"{url}/over.bin", data=os.urandom(200_000), timeout=TIMEOUT)
    assert r.status_code == 507, r.text
    assert "quota" in r.text.lower(), f"507 without a reason: {r.text!r}"

    # Chunked: the size is known only at the end; still refused, nothing kept.
    r = dav.put(f"{url}/over-chunked.bin", data=iter([os.urandom(100_000), os.urandom(100_000)]), timeout=TIMEOUT)
    assert r.status_code == 507, r.text

    # Replacing a file counts the difference only.
    bigger = os.urandom(850_000)
    assert dav.put(f"{url}/q0.bin", data=bigger, timeout=TIMEOUT).status_code == 204
    files["q0.bin"] = bigger
    assert quota(dav, url) == (2_450_000, QUOTA_BYTES - 2_450_000)

    # COPY past the quota.
    r = dav.request("COPY", f"{url}/q0.bin", headers={"Destination": f"{url}/copy.bin"}, timeout=TIMEOUT)
    assert r.status_code == 507, r.text

    assert collection_files(limited, key_id) == files
    assert staging_empty(limited) == []


def test_quota_files_507(limited: RunningServer) -> None:
    key_id, dav = new_key(limited)
    url = limited.url
    for i in range(QUOTA_FILES):
        assert dav.put(f"{url}/f{i}.txt", data=b"x" * 10, timeout=TIMEOUT).status_code == 201
    r = dav.put(f"{url}/one-too-many.txt", data=b"x", timeout=TIMEOUT)
    assert r.status_code == 507, r.text
    assert r.text.strip(), "507 without a reason"
    r = dav.request("COPY", f"{url}/f0.txt", headers={"Destination": f"{url}/copy.txt"}, timeout=TIMEOUT)
    assert r.status_code == 507, r.text
    # Overwriting an existing file adds no file.
    assert dav.put(f"{url}/f0.txt", data=b"y" * 10, timeout=TIMEOUT).status_code == 204
    assert sorted(collection_files(limited, key_id)) == [f"f{i}.txt" for i in range(QUOTA_FILES)]
    assert staging_empty(limited) == []


# --- XML bodies -----------------------------------------------------------------------------------


ALLPROP = b'<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>'
PATCH = (b'<?xml version="1.0" encoding="utf-8"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:z"><D:set><D:prop>'
         b"<Z:a>1</Z:a></D:prop></D:set></D:propertyupdate>")
BILLION_LAUGHS = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
                  + b"".join(b'<!ENTITY lol%d "%s">' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10)
                             for i in range(1, 10))
                  + b']><D:propfind xmlns:D="DAV:"><D:prop><D:x>&lol9;</D:x></D:prop></D:propfind>')
XXE = (b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
       b'<D:propfind xmlns:D="DAV:"><D:prop><D:x>&x;</D:x></D:prop></D:propfind>')


def _nested(levels: int) -> bytes:
    return b'<?xml version="1.0"?>' + b"<D:a xmlns:D='DAV:'>" + b"<D:a>" * (levels - 1) + b"</D:a>" * levels


@pytest.mark.parametrize("method,path,body,expected", [
    ("PROPFIND", "/", ALLPROP + b" " * MiB, 413),
    ("PROPPATCH", "/x.txt", PATCH + b" " * MiB, 413),
    ("LOCK", "/x.txt", LOCK_BODY + b" " * MiB, 413),
    ("PROPFIND", "/", BILLION_LAUGHS, 400),
    ("PROPFIND", "/", XXE, 400),
    ("PROPPATCH", "/x.txt", XXE.replace(b"propfind", b"propertyupdate"), 400),
    ("LOCK", "/x.txt", BILLION_LAUGHS.replace(b"propfind", b"lockinfo"), 400),
    ("PROPFIND", "/", _nested(10_000), 400),
    ("PROPPATCH", "/x.txt", _nested(10_000), 400),
    ("PROPFIND", "/", _nested(65), 400),
], ids=["propfind-over-1mib", "proppatch-over-1mib", "lock-over-1mib", "billion-laughs", "external-entity",
        "proppatch-external-entity", "lock-billion-laughs", "nesting-10000", "proppatch-nesting-10000", "nesting-65"])
def test_xml_body_limits(limited: RunningServer, method: str, path: str, body: bytes, expected: int) -> None:
    key_id, dav = new_key(limited)
    assert dav.put(f"{limited.url}/x.txt", data=b"x", timeout=TIMEOUT).status_code == 201
    before = collection_files(limited, key_id)
    for _again in range(2):  # a refused body is refused every time: nothing of it is kept (small_body_memo)
        r = dav.request(method, limited.url + path, data=body, headers={"Depth": "0"}, timeout=TIMEOUT)
        assert r.status_code == expected, r.text[:500]
    assert collection_files(limited, key_id) == before
    assert not (limited.data_dir / "meta" / key_id / "x.txt.p").exists()
    assert dav.get(f"{limited.url}/x.txt", timeout=TIMEOUT).status_code == 200


def test_small_body_memo_keeps_what_was_read_from_small_bodies_only() -> None:
    calls: list[bytes] = []

    def read(body: bytes) -> int:
        calls.append(body)
        if body.startswith(b"<!"):
            raise ValueError("refused")
        return len(body)

    memo = small_body_memo(read, entries=2)
    small, large = b"<a/>", b"<a>" + b" " * SMALL_BODY + b"</a>"
    assert [memo(small), memo(small), memo(large), memo(large)] == [4, 4, len(large), len(large)]
    assert calls == [small, large, large], "a small body is read once, a large one every time"
    for _ in range(2):
        with pytest.raises(ValueError):
            memo(b"<!DOCTYPE x>")
    assert calls[-2:] == [b"<!DOCTYPE x>"] * 2, "a refusal is not kept"
    for body in (b"<b/>", b"<c/>", small):
        memo(body)
    assert calls[-1] == small, "only the last `entries` bodies are kept"


def test_xml_just_under_limit_is_parsed(limited: RunningServer) -> None:
    _key_id, dav = new_key(limited)
    body = ALLPROP.replace(b"<D:allprop/>", b"<D:allprop/>" + b" " * (MiB - len(ALLPROP) - 100))
    assert len(body) < MiB
    assert propfind(dav, limited.url + "/", "0", body).status_code == 207


# --- PROPFIND depth ---------------------------------------------------------------------------------


def test_propfind_depth_infinity_403_and_no_depth_is_depth_1(limited: RunningServer) -> None:
    _key_id, dav = new_key(limited)
    url = limited.url
    assert dav.request("MKCOL", f"{url}/d", timeout=TIMEOUT).status_code == 201
    assert dav.request("MKCOL", f"{url}/d/e", timeout=TIMEOUT).status_code == 201
    assert dav.put(f"{url}/d/e/f.txt", data=b"deep", timeout=TIMEOUT).status_code == 201

    r = propfind(dav, url + "/", "infinity")
    assert r.status_code == 403, r.text
    assert "propfind-finite-depth" in r.text
    tree = ET.fromstring(r.content)
    assert tree.tag == f"{DAV}error" and tree.find(f"{DAV}propfind-finite-depth") is not None, r.text

    assert hrefs(propfind(dav, url + "/d/", None)) == {"/d/", "/d/e/"}
    assert hrefs(propfind(dav, url + "/d/", None, ALLPROP.decode())) == {"/d/", "/d/e/"}
    assert hrefs(propfind(dav, url + "/d/", "1")) == {"/d/", "/d/e/"}
    assert hrefs(propfind(dav, url + "/d/", "0")) == {"/d/"}


# --- header size ---------------------------------------------------------------------------------------


def test_headers_over_64k_refused_under_accepted(limited: RunningServer) -> None:
    _key_id, dav = new_key(limited)
    assert dav.put(f"{limited.url}/h.txt", data=b"h", timeout=TIMEOUT).status_code == 201
    r = dav.get(f"{limited.url}/h.txt", headers={"X-Pad": "a" * 60_000}, timeout=TIMEOUT)
    assert r.status_code == 200
    with socket.create_connection(("127.0.0.1", limited.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"GET /h.txt HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: " + basic(dav)
                     + b"\r\nX-Pad: " + b"a" * 70_000 + b"\r\n\r\n")
        data, elapsed, _closed = read_response(sock, 5.0)
    assert status_of(data) in (413, 431), data[:300]
    assert elapsed < 2.0


# --- socket timeout ------------------------------------------------------------------------------------


def test_silent_client_is_dropped(impatient: RunningServer) -> None:
    with socket.create_connection(("127.0.0.1", impatient.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"GET /some-fi")
        start = time.monotonic()
        data, _first, closed = read_response(sock, 8.0)
        elapsed = time.monotonic() - start
    print(f"silent client: closed={closed} after {elapsed:.2f} s, answer {status_of(data)}")
    assert closed, f"still open after {elapsed:.1f} s"
    assert elapsed < 5.0, f"dropped only after {elapsed:.1f} s"
    code = status_of(data)
    assert code is None or 400 <= code < 500, data[:300]


def test_slow_but_steady_upload_is_not_cut_off(impatient: RunningServer) -> None:
    _key_id, dav = new_key(impatient)
    pieces = [os.urandom(64 * 1024) for _ in range(13)]  # one piece now, then one every 0.5 s for 6 s
    body = b"".join(pieces)
    with socket.create_connection(("127.0.0.1", impatient.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"PUT /slow.bin HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: " + basic(dav)
                     + b"\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body))
        start = time.monotonic()
        for i, piece in enumerate(pieces):
            if i:
                time.sleep(0.5)
            sock.sendall(piece)
        duration = time.monotonic() - start
        data, _first, _closed = read_response(sock, TIMEOUT)
    assert duration >= 6.0
    assert status_of(data) == 201, data[:500]
    assert dav.get(f"{impatient.url}/slow.bin", timeout=TIMEOUT).content == body
    assert staging_empty(impatient) == []


def test_upload_that_stalls_is_dropped_and_changes_nothing(impatient: RunningServer) -> None:
    key_id, dav = new_key(impatient)
    v1 = b"version one"
    assert dav.put(f"{impatient.url}/s.bin", data=v1, timeout=TIMEOUT).status_code == 201
    with socket.create_connection(("127.0.0.1", impatient.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"PUT /s.bin HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: " + basic(dav)
                     + b"\r\nContent-Length: %d\r\n\r\n" % (256 * 1024) + os.urandom(64 * 1024))
        start = time.monotonic()
        data, _first, closed = read_response(sock, 8.0)
        elapsed = time.monotonic() - start
    code = status_of(data)
    print(f"stalled upload: answer {code} after {elapsed:.2f} s, closed={closed}")
    assert dav.get(f"{impatient.url}/s.bin", timeout=TIMEOUT).content == v1
    assert collection_files(impatient, key_id) == {"s.bin": v1}
    assert staging_empty(impatient) == []
    assert closed and elapsed < 5.0, f"connection of a stalled upload still open after {elapsed:.1f} s"
    # A client that went silent is owed 408 or nothing; a 5xx reports a server fault that is not there.
    assert code is None or code in (400, 408), f"stalled upload answered {code}: {data[:300]!r}"


# --- failed authentication -------------------------------------------------------------------------------


def test_sixth_wrong_key_gets_429_but_a_valid_key_gets_in(impatient: RunningServer) -> None:
    _key_id, dav = new_key(impatient)
    assert dav.put(f"{impatient.url}/ok.txt", data=b"ok", timeout=TIMEOUT).status_code == 201
    url = f"{impatient.url}/ok.txt"
    for i in range(5):
        r = requests.get(url, auth=(f"uss_wrong_key_{i}", ""), timeout=TIMEOUT)
        assert r.status_code == 401, (i, r.status_code)
    r = requests.get(url, auth=("uss_wrong_key_6", ""), timeout=TIMEOUT)
    assert r.status_code == 429, r.status_code
    retry = r.headers.get("Retry-After", "")
    assert retry.isdigit() and 1 <= int(retry) <= 30, f"Retry-After: {retry!r}"
    start = time.monotonic()
    ok = dav.get(url, timeout=TIMEOUT)
    assert ok.status_code == 200 and ok.content == b"ok"
    assert time.monotonic() - start < 1.0
    r = requests.get(url, headers={"Authorization": "Bearer uss_still_wrong"}, timeout=TIMEOUT)
    assert r.status_code == 429
    assert dav.put(f"{impatient.url}/ok2.txt", data=b"still fine", timeout=TIMEOUT).status_code == 201
