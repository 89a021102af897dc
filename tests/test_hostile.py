"""Hostile input: malformed and abusive requests over raw sockets, one table.

Every case is sent on its own connection (the write side is then shut, so a
server waiting for a body sees EOF instead of a silent client) and must get:

- an answer, within 10 s, whose status is in the case's `expect` set (4xx, or
  the RFC's answer where that is something else: 207, 416, 501, 502, 505);
- never a 5xx the case does not name, never a dropped connection without a
  response;
- afterwards a fresh connection still gets the reference file byte for byte,
  the reference collection (files and metadata, bytes compared) is unchanged
  except for `scratch-*` names a case may create, and staging/ is empty.

On failure the message shows the request, what came back and the server log
lines written meanwhile.
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from tests.client import LOCK_BODY
from tests.rawhttp import CASE_TIMEOUT, Exchange, exchange
from tests.server import RunningServer, ServerFactory

REF_BODY = bytes(range(256)) * 64  # 16 KiB, every byte value at known offsets
SMALL_BODY = b"0123456789" * 10
ALLPROP = b'<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>'


Request = Callable[["Reference"], bytes]


def build(method: str, target: str | bytes, headers: list[tuple[str, str | bytes]] = (), body: bytes = b"", *,
          auth: bool = True, version: str = "HTTP/1.1", close: bool = True) -> Request:
    """A request, rendered once the reference key is known; {AUTH} in the body becomes its Authorization value."""

    def render(ref: Reference) -> bytes:
        target_b = target if isinstance(target, bytes) else target.encode("utf-8", "surrogateescape")
        lines = [method.encode() + b" " + target_b + b" " + version.encode(), b"Host: 127.0.0.1"]
        if auth:
            lines.append(b"Authorization: " + ref.auth.encode())
        for name, value in headers:
            lines.append(name.encode() + b": " + (value if isinstance(value, bytes) else value.encode("latin-1")))
        if isinstance(body, Chunked):
            data = chunked(*(p.replace(b"{AUTH}", ref.auth.encode()) for p in body.pieces))
        else:
            data = body.replace(b"{AUTH}", ref.auth.encode())
        framing = {n.strip().lower() for n, _ in headers} & {"content-length", "transfer-encoding"}
        if data and not framing:
            lines.append(b"Content-Length: %d" % len(data))
        if close:
            lines.append(b"Connection: close")
        return b"\r\n".join(lines) + b"\r\n\r\n" + data

    return render


def seq(*requests_: Request) -> Request:
    """Several requests on one connection (pipelined)."""
    return lambda ref: b"".join(r(ref) for r in requests_)


def literal(data: bytes) -> Request:
    """Bytes sent as they are; {AUTH} becomes the reference key's Authorization value."""
    return lambda ref: data.replace(b"{AUTH}", ref.auth.encode())


class Chunked(bytes):
    """A chunked body that remembers its pieces, so {AUTH} can be filled in before the sizes are written."""

    pieces: tuple[bytes, ...]


def chunked(*pieces: bytes) -> bytes:
    body = Chunked(b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n")
    body.pieces = pieces
    return body


# --- the reference collection ---------------------------------------------------


@dataclass
class Reference:
    """Key A's collection with known files; `token` locks /locked.txt."""

    server: RunningServer
    key_id: str = ""
    key: str = ""
    token: str = ""
    baseline: dict[str, bytes | None] = field(default_factory=dict)

    @property
    def auth(self) -> str:
        return "Basic " + base64.b64encode(f"{self.key}:".encode()).decode()

    def seed(self) -> None:
        """A fresh key and collection (used again whenever a case changed the old one)."""
        self.key_id, self.key = self.server.create_key("--compression", "off")
        url = self.server.url
        with requests.Session() as s:
            s.auth = (self.key, "")
            for path, body in [("/ref.bin", REF_BODY), ("/small.txt", SMALL_BODY), ("/locked.txt", b"locked")]:
                assert s.put(url + path, data=body, timeout=10).status_code == 201
            assert s.request("MKCOL", url + "/sub", timeout=10).status_code == 201
            assert s.put(url + "/sub/in.txt", data=b"inner", timeout=10).status_code == 201
            for i in range(1, 4):
                assert s.put(url + f"/lockme{i}.txt", data=b"lock target", timeout=10).status_code == 201
            r = s.request("LOCK", url + "/locked.txt", data=LOCK_BODY, headers={"Timeout": "Second-3600"}, timeout=10)
        assert r.status_code == 200, r.text
        self.token = r.headers["Lock-Token"].strip("<>")
        self.baseline = self.snapshot()

    def snapshot(self) -> dict[str, bytes | None]:
        """Bytes of every file of the collection and its metadata (None for folders), scratch-* excluded."""
        data = self.server.data_dir
        roots = {"c": data / "collections" / self.key_id, "m": data / "meta" / self.key_id}
        snap: dict[str, bytes | None] = {}
        for tag, root in roots.items():
            for dirpath, dirnames, filenames in os.walk(root):
                rel_dir = Path(dirpath).relative_to(root)
                for d in dirnames:
                    snap[f"{tag}:{rel_dir / d}/"] = None
                for f in filenames:
                    snap[f"{tag}:{rel_dir / f}"] = Path(dirpath, f).read_bytes()
        root_props = data / "meta" / f"{self.key_id}.p"
        if root_props.exists():
            snap["m:<root>.p"] = root_props.read_bytes()
        return {k: v for k, v in snap.items() if "scratch-" not in k}

    def diff(self) -> list[str]:
        now = self.snapshot()
        changed = [k for k in self.baseline if k not in now or now[k] != self.baseline[k]]
        added = [k for k in now if k not in self.baseline]
        return [f"changed/removed {k}" for k in changed] + [f"added {k}" for k in added]


@pytest.fixture(scope="module")
def hostile(make_module_server: ServerFactory) -> Reference:
    ref = Reference(make_module_server(auth_failure_limit=0))
    ref.seed()
    return ref


# --- checks some cases add --------------------------------------------------------


def body_contains(*needles: bytes) -> Callable[[Exchange, Reference], None]:
    def check(ex: Exchange, ref: Reference) -> None:
        body = ex.final[0].body
        for needle in needles:
            assert needle in body, f"{needle!r} not in response body {body[:500]!r}"
    return check


def full_or_partial(expected: bytes) -> Callable[[Exchange, Reference], None]:
    """A 200 must carry the whole file, a 206 exactly the range its Content-Range names."""

    def check(ex: Exchange, ref: Reference) -> None:
        r = ex.final[0]
        if r.status == 200:
            assert r.body == expected, "200 without the whole file"
        elif r.status == 206:
            unit, _, spec = r.headers.get("content-range", "").partition(" ")
            span, _, total = spec.partition("/")
            first, _, last = span.partition("-")
            assert unit == "bytes" and int(total) == len(expected), r.headers
            assert 0 <= int(first) <= int(last) < len(expected), f"impossible Content-Range {spec}"
            assert r.body == expected[int(first):int(last) + 1], "206 body is not the announced range"
    return check


def scratch_holds(name: str, allowed: set[bytes]) -> Callable[[Exchange, Reference], None]:
    """If the case created scratch file `name`, it holds one of `allowed`."""

    def check(ex: Exchange, ref: Reference) -> None:
        path = ref.server.data_dir / "collections" / ref.key_id / name
        if path.exists():
            assert path.read_bytes() in allowed, f"{name} holds {path.read_bytes()[:100]!r}"
    return check


def lock_timeout_sane(ex: Exchange, ref: Reference) -> None:
    """A granted lock reports a positive or infinite timeout."""
    r = ex.final[0]
    if r.status == 200:
        body = r.body.decode("utf-8", "replace")
        assert "Second-" in body or "Infinite" in body, body
        if "Second-" in body:
            seconds = body.split("Second-", 1)[1].split("<", 1)[0]
            assert seconds.isdigit() and int(seconds) > 0, f"granted timeout Second-{seconds}"


def exactly_one_response(ex: Exchange, ref: Reference) -> None:
    """A body the server did not read must be discarded or the connection closed, never parsed as a request."""
    assert len(ex.final) == 1, f"the body was taken as further request(s): {[r.status for r in ex.final]}"


def connection_closed_after_first(ex: Exchange, ref: Reference) -> None:
    """RFC 9112 6.3: with both Transfer-Encoding and Content-Length the server MUST close after responding."""
    assert len(ex.final) == 1, f"connection kept open, further responses: {[r.status for r in ex.final]}"


def pipelined_ok(ex: Exchange, ref: Reference) -> None:
    assert [r.status for r in ex.final] == [200, 207, 200], [r.status for r in ex.final]
    assert ex.final[0].body == REF_BODY and ex.final[2].body == SMALL_BODY


# --- the table ----------------------------------------------------------------------


@dataclass
class Case:
    name: str
    request: Request
    expect: set[int]
    check: Callable[[Exchange, Reference], None] | None = None
    head: bool = False
    shut: bool = True


def _deep(levels: int) -> bytes:
    return b'<?xml version="1.0"?>' + b"<a>" * levels + b"</a>" * levels


BILLION_LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    + b"".join(b'<!ENTITY lol%d "%s">' % (i, b"&lol%d;" % (i - 1) * 10 if i > 1 else b"&lol;" * 10) for i in range(1, 10))
    + b']><D:propfind xmlns:D="DAV:"><D:prop><D:x>&lol9;</D:x></D:prop></D:propfind>'
)
XXE = (
    b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    b'<D:propfind xmlns:D="DAV:"><D:prop><D:x>&x;</D:x></D:prop></D:propfind>'
)
PROTECTED_SET = (
    b'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:"><D:set><D:prop>'
    b"<D:getetag>forged</D:getetag><D:getcontentlength>1</D:getcontentlength></D:prop></D:set></D:propertyupdate>"
)
PROTECTED_REMOVE = (
    b'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:"><D:remove><D:prop>'
    b"<D:resourcetype/></D:prop></D:remove></D:propertyupdate>"
)
SMUGGLED_DELETE = b"DELETE /ref.bin HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {AUTH}\r\n\r\n"


def _only_protected_refused(ex: Exchange, ref: Reference) -> None:
    r = ex.final[0]
    if r.status == 207:
        assert b"200 OK" not in r.body, f"a protected property was reported as set: {r.body[:600]!r}"


CASES: list[Case] = [
    # -- XML bodies
    Case("xml_malformed", build("PROPFIND", "/", [("Depth", "0")], b"<D:propfind xmlns:D='DAV:'><D:prop>"), {400}),
    Case("xml_not_xml_at_all", build("PROPFIND", "/", [("Depth", "0")], b"hello world"), {400}),
    Case("xml_wrong_root_element", build("PROPFIND", "/", [("Depth", "0")], b"<?xml version='1.0'?><foo/>"), {400}),
    Case("xml_billion_laughs", build("PROPFIND", "/", [("Depth", "0")], BILLION_LAUGHS), {400}),
    Case("xml_external_entity", build("PROPFIND", "/", [("Depth", "0")], XXE), {400}),
    Case("xml_nesting_10000", build("PROPFIND", "/", [("Depth", "0")], _deep(10_000)), {400}),
    Case("xml_over_1mib", build("PROPFIND", "/", [("Depth", "0")], ALLPROP + b" " * (1 << 20)), {413}),
    Case("xml_invalid_utf8", build("PROPFIND", "/", [("Depth", "0")],
                                   b'<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:\xff\xfe/></D:propfind>'), {400}),
    Case("xml_undeclared_prefix", build("PROPFIND", "/", [("Depth", "0")], b"<x:propfind><x:allprop/></x:propfind>"), {400}),
    Case("xml_20000_unknown_props", build("PROPFIND", "/ref.bin", [("Depth", "0")],
                                          b'<D:propfind xmlns:D="DAV:"><D:prop>' + b"".join(b"<D:p%d/>" % i for i in range(20000))
                                          + b"</D:prop></D:propfind>"), {207}),
    Case("proppatch_garbage", build("PROPPATCH", "/ref.bin", [], b"<<<>>>"), {400}),
    Case("proppatch_protected_set", build("PROPPATCH", "/ref.bin", [], PROTECTED_SET), {207, 403, 409}, _only_protected_refused),
    Case("proppatch_protected_remove", build("PROPPATCH", "/ref.bin", [], PROTECTED_REMOVE), {207, 403, 409}, _only_protected_refused),
    Case("lock_body_not_xml", build("LOCK", "/lockme1.txt", [], b"not xml"), {400}),
    # -- header size
    Case("header_over_64k", build("GET", "/ref.bin", [("X-Big", "a" * 70_000)]), {413, 431}),
    Case("header_count_8000", build("GET", "/ref.bin", [(f"X-H{i}", "v") for i in range(8000)]), {413, 431}),
    Case("authorization_60k", build("GET", "/ref.bin", [("Authorization", "Bearer " + "A" * 60_000)], auth=False), {401}),
    # -- Range
    Case("range_not_a_number", build("GET", "/ref.bin", [("Range", "bytes=abc")]), {200, 416}, full_or_partial(REF_BODY)),
    Case("range_last_before_first", build("GET", "/ref.bin", [("Range", "bytes=5-1")]), {200, 416}, full_or_partial(REF_BODY)),
    Case("range_past_end", build("GET", "/ref.bin", [("Range", "bytes=99999999-")]), {416}),
    Case("range_suffix_zero", build("GET", "/ref.bin", [("Range", "bytes=-0")]), {416}),
    Case("range_overflowing_last", build("GET", "/ref.bin", [("Range", "bytes=0-" + "9" * 30)]), {200, 206}, full_or_partial(REF_BODY)),
    Case("range_2000_ranges", build("GET", "/ref.bin", [("Range", "bytes=" + ",".join(f"{i}-{i}" for i in range(2000)))]),
         {200, 206, 416}, full_or_partial(REF_BODY)),
    Case("range_unknown_unit", build("GET", "/ref.bin", [("Range", "pages=1-2")]), {200}, full_or_partial(REF_BODY)),
    # -- Content-Length
    Case("content_length_negative", build("PUT", "/ref.bin", [("Content-Length", "-5")], b"hello"), {400}),
    Case("content_length_not_a_number", build("PUT", "/ref.bin", [("Content-Length", "abc")], b"hello"), {400}),
    Case("content_length_overflow", build("PUT", "/ref.bin", [("Content-Length", "9" * 32)], b"hello"), {400, 413}),
    Case("content_length_conflicting", build("PUT", "/scratch-cl.bin", [("Content-Length", "5"), ("Content-Length", "3")],
                                             b"hello", close=False), {400},
         scratch_holds("scratch-cl.bin", {b"hello"})),
    Case("content_length_longer_than_body", build("PUT", "/ref.bin", [("Content-Length", "100")], b"short"), {400}),
    # -- Depth / Overwrite / Destination
    Case("depth_2", build("PROPFIND", "/", [("Depth", "2")]), {400}),
    Case("depth_garbage", build("PROPFIND", "/", [("Depth", "yes please")]), {400}),
    Case("depth_infinity", build("PROPFIND", "/", [("Depth", "infinity")]), {403}, body_contains(b"propfind-finite-depth")),
    Case("copy_depth_1", build("COPY", "/sub", [("Depth", "1"), ("Destination", "/scratch-sub")]), {400}),
    Case("overwrite_garbage", build("COPY", "/ref.bin", [("Destination", "/sub/in.txt"), ("Overwrite", "maybe")]), {400}),
    Case("overwrite_f_on_existing", build("COPY", "/ref.bin", [("Destination", "/sub/in.txt"), ("Overwrite", "F")]), {412}),
    Case("copy_onto_itself", build("COPY", "/ref.bin", [("Destination", "/ref.bin")]), {403}),
    Case("move_onto_itself", build("MOVE", "/ref.bin", [("Destination", "/ref.bin")]), {403}),
    Case("move_without_destination", build("MOVE", "/ref.bin"), {400}),
    Case("copy_without_destination", build("COPY", "/ref.bin"), {400}),
    Case("move_destination_not_a_uri", build("MOVE", "/ref.bin", [("Destination", "::::not a uri")]), {400}),
    Case("copy_destination_empty", build("COPY", "/ref.bin", [("Destination", "")]), {400}),
    Case("copy_destination_root", build("COPY", "/ref.bin", [("Destination", "/")]), {403, 405, 409, 412}),
    Case("copy_destination_invalid_utf8", build("COPY", "/ref.bin", [("Destination", "/scratch-%ff%fe")]), {400}),
    Case("copy_destination_many_segments", build("COPY", "/ref.bin", [("Destination", "/" + "a/" * 3000 + "x")]), {400, 409, 414}),
    Case("move_destination_other_host", build("MOVE", "/ref.bin", [("Destination", "http://evil.example/ref.bin")]), {400, 403, 502}),
    Case("move_folder_into_itself", build("MOVE", "/sub", [("Destination", "/sub/deeper")]), {403, 409}),
    # -- LOCK / UNLOCK / If
    Case("lock_timeout_garbage", build("LOCK", "/lockme1.txt", [("Timeout", "Banana-12")], LOCK_BODY), {200, 400}, lock_timeout_sane),
    Case("lock_timeout_overflow", build("LOCK", "/lockme2.txt", [("Timeout", "Second-" + "9" * 40)], LOCK_BODY), {200, 400}, lock_timeout_sane),
    Case("lock_timeout_negative", build("LOCK", "/lockme3.txt", [("Timeout", "Second--5")], LOCK_BODY), {200, 400}, lock_timeout_sane),
    Case("lock_on_locked", build("LOCK", "/locked.txt", [("Timeout", "Second-60")], LOCK_BODY), {423}),
    Case("lock_shared_on_exclusive", build("LOCK", "/locked.txt", [], LOCK_BODY.replace(b"exclusive", b"shared")), {423}),
    Case("lock_refresh_without_if", build("LOCK", "/locked.txt"), {400, 412}),
    Case("unlock_wrong_token", build("UNLOCK", "/locked.txt", [("Lock-Token", "<opaquelocktoken:not-a-lock>")]), {400, 403, 409, 412}),
    Case("unlock_without_token", build("UNLOCK", "/locked.txt"), {400}),
    Case("unlock_token_garbage", build("UNLOCK", "/locked.txt", [("Lock-Token", "\x01\x02<<<")]), {400, 409}),
    Case("put_locked_without_token", build("PUT", "/locked.txt", [], b"overwrite"), {423}),
    Case("delete_locked_wrong_token", build("DELETE", "/locked.txt", [("If", "(<opaquelocktoken:not-a-lock>)")]), {412, 423}),
    Case("if_garbage", build("DELETE", "/ref.bin", [("If", "((((<<garbage")]), {400, 412}),
    Case("if_unclosed_list", build("DELETE", "/ref.bin", [("If", "(<opaquelocktoken:x>")]), {400, 412}),
    Case("if_unknown_token_on_unlocked", build("DELETE", "/ref.bin", [("If", "(<opaquelocktoken:not-a-lock>)")]), {412}),
    Case("if_tagged_wrong_etag", build("DELETE", "/ref.bin", [("If", '</ref.bin> (["wrong-etag"])')]), {412}),
    Case("if_tagged_absolute_wrong_etag", lambda ref: build("DELETE", "/ref.bin", [
        ("If", f'<http://127.0.0.1:{ref.server.port}/ref.bin> (["wrong-etag"])')])(ref), {412}),
    Case("if_match_mismatch", build("DELETE", "/ref.bin", [("If-Match", '"nope"')]), {412}),
    # -- methods
    Case("method_brew", build("BREW", "/ref.bin"), {405, 501}),
    Case("method_trace", build("TRACE", "/ref.bin"), {405, 501}),
    Case("method_connect", build("CONNECT", "127.0.0.1:80"), {400, 405, 501}),
    Case("method_lowercase_get", build("get", "/ref.bin"), {400, 405, 501}),
    Case("method_patch", build("PATCH", "/ref.bin", [], b"x"), {405, 501}),
    Case("mkcol_with_body", build("MKCOL", "/scratch-col", [("Content-Type", "application/xml")], b"<x/>"), {415}),
    Case("mkcol_existing", build("MKCOL", "/sub"), {405}),
    Case("delete_root", build("DELETE", "/"), {403, 405}),
    Case("put_root", build("PUT", "/", [], b"x"), {405, 409}),
    Case("move_root", build("MOVE", "/", [("Destination", "/scratch-root")]), {403, 405}),
    # -- paths
    Case("path_invalid_utf8_get", build("GET", "/%ff%fe"), {400, 404}),
    Case("path_invalid_utf8_put", build("PUT", "/scratch-%ff%fe", [], b"x"), {400}),
    Case("path_nul_get", build("GET", "/ref.bin%00.txt"), {400, 404}),
    Case("path_nul_put", build("PUT", "/scratch-%00", [], b"x"), {400}),
    Case("path_raw_latin1_bytes", build("GET", b"/\xe9t\xe9"), {400, 404}),
    Case("path_segment_8000_bytes", build("GET", "/" + "a" * 8000), {400, 404, 414}),
    Case("path_name_300_bytes_put", build("PUT", "/scratch-" + "a" * 300, [], b"x"), {400}),
    Case("path_3000_segments", build("GET", "/" + "a/" * 3000 + "x"), {400, 404, 414}),
    Case("path_over_header_limit", build("GET", "/" + "a" * 70_000), {400, 413, 414, 431}),
    Case("path_dot_dot", build("GET", "/../../etc/passwd"), {400}),
    Case("path_encoded_dot_dot", build("GET", "/%2e%2e/%2e%2e/etc/passwd"), {400}),
    Case("path_backslashes", build("GET", "/..\\..\\etc\\passwd"), {400, 404}),
    Case("path_asterisk_get", build("GET", "*"), {400}),
    Case("path_without_slash", build("GET", "ref.bin"), {400}),
    # -- Authorization
    Case("auth_basic_not_base64", build("GET", "/ref.bin", [("Authorization", "Basic !!!not-base64")], auth=False), {401}),
    Case("auth_basic_empty", build("GET", "/ref.bin", [("Authorization", "Basic")], auth=False), {401}),
    Case("auth_unknown_scheme", build("GET", "/ref.bin", [("Authorization", "Digest username=x")], auth=False), {401}),
    Case("auth_bearer_empty", build("GET", "/ref.bin", [("Authorization", "Bearer ")], auth=False), {401}),
    Case("auth_non_ascii_bytes", build("GET", "/ref.bin", [("Authorization", b"Basic \xff\xfe\xfd")], auth=False), {400, 401}),
    Case("auth_base64_of_non_utf8", build("GET", "/ref.bin", [("Authorization", "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode())],
                                          auth=False), {401}),
    # -- request line and header syntax
    Case("tls_hello_on_plain_port", literal(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(32) + b"\r\n\r\n"), {400}),
    Case("request_line_without_version", literal(b"GET /ref.bin\r\n\r\n"), {400}),
    Case("http_version_9_9", literal(b"GET /ref.bin HTTP/9.9\r\nHost: x\r\n\r\n"), {400, 505}),
    Case("header_without_colon", literal(b"GET /ref.bin HTTP/1.1\r\nHost: x\r\nNoColonHere\r\nAuthorization: {AUTH}\r\n\r\n"), {400}),
    Case("transfer_encoding_space_before_colon",
         build("PUT", "/scratch-te.bin", [("Transfer-Encoding ", "chunked"), ("Content-Length", "3")], chunked(b"hello")), {400},
         scratch_holds("scratch-te.bin", {b"hel", b"hello"})),
    Case("http10_get", build("GET", "/ref.bin", version="HTTP/1.0", close=False), {200}, full_or_partial(REF_BODY)),
    Case("http10_without_host", literal(b"GET /small.txt HTTP/1.0\r\nAuthorization: {AUTH}\r\n\r\n"), {200}, full_or_partial(SMALL_BODY)),
    Case("pipelined_three", seq(build("GET", "/ref.bin", close=False), build("PROPFIND", "/", [("Depth", "0")], close=False),
                                build("GET", "/small.txt")), {200}, pipelined_ok),
    # -- chunked framing
    Case("chunked_size_not_hex", build("PUT", "/ref.bin", [("Transfer-Encoding", "chunked")], b"zz\r\nhello\r\n0\r\n\r\n"), {400}),
    Case("chunked_without_last_chunk", build("PUT", "/ref.bin", [("Transfer-Encoding", "chunked")], b"5\r\nhello\r\n"), {400}),
    Case("chunked_size_mismatch", build("PUT", "/ref.bin", [("Transfer-Encoding", "chunked")], b"3\r\nhello\r\n0\r\n\r\n"), {400}),
    Case("chunked_size_2_80", build("PUT", "/ref.bin", [("Transfer-Encoding", "chunked")], b"f" * 20 + b"\r\nhello\r\n0\r\n\r\n"), {400, 413}),
    Case("chunked_size_2_63", build("PUT", "/ref.bin", [("Transfer-Encoding", "chunked")], b"7" + b"f" * 15 + b"\r\nhello\r\n0\r\n\r\n"),
         {400, 413}),
    Case("chunked_size_9_gib", build("PUT", "/ref.bin", [("Transfer-Encoding", "chunked")], b"240000000\r\nhello\r\n0\r\n\r\n"), {400, 413}),
    Case("chunked_and_content_length", seq(build("PUT", "/scratch-tecl.bin", [("Transfer-Encoding", "chunked"), ("Content-Length", "3")],
                                             chunked(b"hello"), close=False), build("GET", "/small.txt")),
         {201, 204, 400}, lambda ex, ref: (connection_closed_after_first(ex, ref),
                                           scratch_holds("scratch-tecl.bin", {b"hello"})(ex, ref))),
    Case("transfer_encoding_unknown", build("PUT", "/ref.bin", [("Transfer-Encoding", "gzip")], b"hello"), {400, 501}),
    Case("unread_chunked_body_not_a_request", build("PROPFIND", "/", [("Depth", "0"), ("Transfer-Encoding", "chunked")],
                                                     chunked(SMUGGLED_DELETE), close=False), {207, 400, 411, 413, 415},
         exactly_one_response),
    Case("unread_length_body_not_a_request", build("GET", "/small.txt", [], SMUGGLED_DELETE, close=False), {200, 400, 413, 415},
         exactly_one_response),
    # -- Expect
    Case("expect_100_without_body", build("PUT", "/ref.bin", [("Expect", "100-continue"), ("Content-Length", "10")]), {400}),
    Case("expect_100_over_upload_limit", build("PUT", "/scratch-big.bin", [("Expect", "100-continue"),
                                                                           ("Content-Length", str(20 * 1024**3))]), {413}),
    Case("expect_unknown", build("GET", "/small.txt", [("Expect", "200-ok")]), {200, 417}),
    # -- ownCloud extras
    Case("x_oc_mtime_garbage", build("PUT", "/scratch-mtime.bin", [("X-OC-Mtime", "yesterday")], b"x"), {400}),
    Case("oc_checksum_mismatch", build("PUT", "/scratch-sum.bin", [("OC-Checksum", "SHA1:" + "0" * 40)], b"x"), {400}),
]


def _log_since(server: RunningServer, offset: int) -> str:
    text = server.log()[offset:]
    return text if len(text) < 4000 else text[:1500] + "\n[...]\n" + text[-2500:]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_request(hostile: Reference, case: Case) -> None:
    ref = hostile
    if ref.diff():  # an earlier case changed the reference collection: start again from a new one
        ref.seed()
    log_offset = len(ref.server.log())
    data = case.request(ref)
    ex = exchange(ref.server.port, data, head=case.head, shut=case.shut)

    def context() -> str:
        return (f"\n--- request ({len(data)} bytes, first 400) ---\n{data[:400]!r}\n{ex.describe()}"
                f"\n--- server log meanwhile ---\n{_log_since(ref.server, log_offset)}")

    print(f"CASE {case.name}: {[r.status for r in ex.responses]}")
    assert ex.final, f"no response at all{context()}"
    assert not ex.timed_out, f"no end of answer within {CASE_TIMEOUT} s{context()}"
    status = ex.final[0].status
    assert status in case.expect, f"status {status}, expected one of {sorted(case.expect)}{context()}"
    unexpected_5xx = [r.status for r in ex.final if r.status >= 500 and r.status not in case.expect]
    assert not unexpected_5xx, f"5xx among the responses{context()}"
    if case.check:
        try:
            case.check(ex, ref)
        except AssertionError as exc:
            raise AssertionError(f"{exc}{context()}") from None

    # The server still serves, unchanged.
    assert ref.server.proc is not None and ref.server.proc.poll() is None, f"server died{context()}"
    after = requests.get(ref.server.url + "/ref.bin", auth=(ref.key, ""), timeout=CASE_TIMEOUT)
    assert after.status_code == 200 and after.content == REF_BODY, f"reference file now {after.status_code}{context()}"
    diff = ref.diff()
    assert not diff, f"reference collection changed: {diff}{context()}"
    staging = ref.server.data_dir / "staging"
    deadline = time.monotonic() + 2
    while any(staging.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(staging.iterdir()), f"staging not empty: {list(staging.iterdir())}{context()}"


def test_table_is_big_enough() -> None:
    assert len(CASES) >= 40
    assert len({c.name for c in CASES}) == len(CASES)


def test_server_survived_the_table_and_etags_match(hostile: Reference) -> None:
    """Run last in this module: the reference file's ETag is still the SHA-1 of its bytes."""
    r = requests.get(hostile.server.url + "/ref.bin", auth=(hostile.key, ""), timeout=CASE_TIMEOUT)
    assert r.status_code == 200 and r.content == REF_BODY
    assert r.headers["ETag"].strip('"') == hashlib.sha1(REF_BODY).hexdigest()
