"""Client compatibility, end to end: what rclone (vendor owncloud), macOS Finder,
Windows Explorer, browsers, scoped keys and davfs2 send, replayed or run for real
against a running server.

README.md ("Clients") sums up what each client needs; the expectations come
from the clients' own sources and issue trackers. Finder and Explorer cannot
run here, so their request sequences are replayed over plain HTTP (raw
sockets where `requests` would add a Content-Length). rclone and davfs2 run
for real; they are skipped (with the reason) where not installed.
"""

from __future__ import annotations

import base64
import calendar
import contextlib
import hashlib
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import unicodedata
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import pytest
import requests

from tests import client
from tests.client import OwncloudRclone as Rclone
from tests.client import copied, get_bytes, local_files, propfind, session_for, url_of
from tests.server import RunningServer, ServerFactory, collection_dir

MOUNT_DAVFS = "/usr/sbin/mount.davfs"
UMOUNT = "/usr/bin/umount" if os.path.exists("/usr/bin/umount") else "/bin/umount"

CORPUS = Path(__file__).parent / "data" / "corpus"
#: A JPEG the lossless mode shrinks (jpegtran): stored bytes differ from the upload.
JPEG = CORPUS / "photo_exif_icc_xmp.jpg"
#: A PNG the lossless mode shrinks (oxipng).
PNG = CORPUS / "rgba.png"

DAV = "{DAV:}"
OC_NS = "http://owncloud.org/ns"
MS_NS = "urn:schemas-microsoft-com:"

#: Fixed past modification times (whole seconds, as rclone and ownCloud carry them).
T_2020 = 1_600_000_000  # 2020-09-13T12:26:40Z
T_2019 = 1_560_000_000  # 2019-06-08T13:20:00Z
T_2018 = 1_530_000_000  # 2018-06-26T08:00:00Z

WIN_UA = "Microsoft-WebDAV-MiniRedir/10.0.19045"
FINDER_UA = "WebDAVFS/3.0.0 (03008000) Darwin/22.6.0 (arm64)"


# --- helpers -------------------------------------------------------------------


def basic(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


def put_ok(session: requests.Session, server: RunningServer, rel: str, data: bytes, **headers: str) -> requests.Response:
    r = session.put(url_of(server, rel), data=data, headers=headers, timeout=30)
    assert r.status_code in (201, 204), f"PUT /{rel}: {r.status_code} {r.text[:300]}"
    return r


def status_of(session: requests.Session, server: RunningServer, rel: str) -> int:
    return session.get(url_of(server, rel), timeout=30).status_code


def propfind_body(props: list[tuple[str, str]] | None) -> str:
    """A PROPFIND body asking for `props` ((namespace, name) pairs) by name; None: allprop."""
    if props is None:
        return '<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>'
    namespaces = sorted({ns for ns, _ in props if ns != "DAV:"})
    prefix = {ns: f"n{i}" for i, ns in enumerate(namespaces)}
    prefix["DAV:"] = "D"
    decl = "".join(f' xmlns:{prefix[ns]}="{ns}"' for ns in namespaces)
    asked = "".join(f"<{prefix[ns]}:{name}/>" for ns, name in props)
    return f'<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"{decl}><D:prop>{asked}</D:prop></D:propfind>'


class Props(dict):  # type: ignore[type-arg]
    """href (unquoted path) -> {"{ns}name": (status code, element)}."""

    def ok(self, href: str, name: str) -> ET.Element:
        assert href in self, f"{href!r} not in PROPFIND answer {sorted(self)}"
        assert name in self[href], f"{name} not in PROPFIND answer for {href}: {sorted(self[href])}"
        status, element = self[href][name]
        assert status == 200, f"{name} of {href}: status {status}"
        return element

    def text(self, href: str, name: str) -> str:
        return self.ok(href, name).text or ""


def propfind_props(
    session: requests.Session,
    url: str,
    props: list[tuple[str, str]] | None = None,
    depth: str = "0",
) -> Props:
    """The properties PROPFIND reports for `props` (None: allprop), which must answer 207."""
    r = propfind(session, url, depth, propfind_body(props).encode(),
                 headers={"Content-Type": "application/xml; charset=utf-8"})
    assert r.status_code == 207, f"PROPFIND {url}: {r.status_code} {r.text[:300]}"
    found = Props()
    for response in ET.fromstring(r.content).iter(f"{DAV}response"):
        href = unquote(urlsplit(response.findtext(f"{DAV}href") or "").path)
        entry = found.setdefault(href, {})
        for propstat in response.iter(f"{DAV}propstat"):
            match = re.search(r"\s(\d{3})\b", propstat.findtext(f"{DAV}status") or "")
            code = int(match.group(1)) if match else 0
            for prop in propstat.find(f"{DAV}prop") or []:
                entry[prop.tag] = (code, prop)
    return found


def last_modified(session: requests.Session, server: RunningServer, rel: str) -> float:
    """getlastmodified of /rel as unix seconds."""
    props = propfind_props(session, url_of(server, rel), [("DAV:", "getlastmodified")])
    return parsedate_to_datetime(props.text("/" + rel, f"{DAV}getlastmodified")).timestamp()


def listing(session: requests.Session, server: RunningServer, folder: str = "/") -> list[str]:
    """Member names of a folder as PROPFIND Depth 1 lists them (unquoted, in the server's form)."""
    props = propfind_props(session, server.url + quote(folder), [("DAV:", "resourcetype")], depth="1")
    names = []
    for href in props:
        if href.rstrip("/") != folder.rstrip("/"):
            names.append(href.rstrip("/").rsplit("/", 1)[-1])
    return names


def oc_checksums(session: requests.Session, server: RunningServer, rel: str) -> dict[str, str]:
    """{"SHA1": hex, "MD5": hex} from oc:checksums, asked by name as rclone does."""
    props = propfind_props(session, url_of(server, rel), [(OC_NS, "checksums"), ("DAV:", "getcontentlength")])
    element = props.ok("/" + rel, f"{{{OC_NS}}}checksums")
    checksum = element.findtext(f"{{{OC_NS}}}checksum") or ""
    assert re.fullmatch(r"SHA1:[0-9a-f]{40} MD5:[0-9a-f]{32}", checksum), repr(checksum)
    return {algo.upper(): value for algo, value in (tok.split(":", 1) for tok in checksum.split())}


def digests(data: bytes) -> dict[str, str]:
    return {"SHA1": hashlib.sha1(data).hexdigest(), "MD5": hashlib.md5(data).hexdigest()}


def http_date(seconds: float) -> str:
    return formatdate(seconds, usegmt=True)


def lock_body(owner: str = "DESKTOP-7Q2\\alice") -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8" ?>'
        '<D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope>'
        "<D:locktype><D:write/></D:locktype>"
        f"<D:owner><D:href>{owner}</D:href></D:owner></D:lockinfo>"
    ).encode()


def proppatch_body(props: dict[tuple[str, str], str]) -> bytes:
    namespaces = sorted({ns for ns, _ in props if ns != "DAV:"})
    prefix = {ns: f"n{i}" for i, ns in enumerate(namespaces)}
    prefix["DAV:"] = "D"
    decl = "".join(f' xmlns:{prefix[ns]}="{ns}"' for ns in namespaces)
    values = "".join(f"<{prefix[ns]}:{name}>{value}</{prefix[ns]}:{name}>" for (ns, name), value in props.items())
    return (
        f'<?xml version="1.0" encoding="utf-8" ?><D:propertyupdate xmlns:D="DAV:"{decl}>'
        f"<D:set><D:prop>{values}</D:prop></D:set></D:propertyupdate>"
    ).encode()


def proppatch_statuses(r: requests.Response) -> dict[str, int]:
    """{"{ns}name": status} from a PROPPATCH multistatus."""
    assert r.status_code == 207, f"PROPPATCH: {r.status_code} {r.text[:300]}"
    result = {}
    for propstat in ET.fromstring(r.content).iter(f"{DAV}propstat"):
        code = int(re.search(r"\s(\d{3})\b", propstat.findtext(f"{DAV}status") or " 0").group(1))  # type: ignore[union-attr]
        for prop in propstat.find(f"{DAV}prop") or []:
            result[prop.tag] = code
    return result


def chunked_put(
    server: RunningServer, key: str, rel: str, chunks: list[bytes], headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """PUT with Transfer-Encoding: chunked and no Content-Length, as Finder sends it."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.putrequest("PUT", "/" + quote(rel), skip_accept_encoding=True)
        for name, value in {
            "Authorization": basic(key),
            "User-Agent": FINDER_UA,
            "Transfer-Encoding": "chunked",
            "X-Expected-Entity-Length": str(sum(map(len, chunks))),
            **(headers or {}),
        }.items():
            conn.putheader(name, value)
        conn.endheaders()
        for chunk in chunks:
            conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        conn.send(b"0\r\n\r\n")
        response = conn.getresponse()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    finally:
        conn.close()


def header_tokens(value: str | None) -> set[str]:
    return {token.strip().lower() for token in (value or "").split(",") if token.strip()}


@pytest.fixture(scope="module")
def strict_server(make_module_server: ServerFactory) -> RunningServer:
    """A server with CORS for http://app.example, apple_files: discard, refuse_case_collisions: true."""
    return make_module_server(cors_origins=["http://app.example"], apple_files="discard", refuse_case_collisions=True)


# --- rclone, vendor owncloud ---------------------------------------------------


def make_sync_tree(root: Path) -> dict[str, int]:
    """Files for the rclone tests, each with its own fixed past mtime; returns path -> mtime."""
    (root / "sub" / "deeper").mkdir(parents=True)
    files = {
        "small.txt": b"hello, owncloud vendor\n",
        "empty.txt": b"",
        "big.bin": os.urandom(2 * 1024 * 1024 + 3),
        "sub/nested.bin": os.urandom(70_001),
        "sub/Grüße ñ.txt": "ünïcödé\n".encode(),
        "sub/deeper/photo.jpg": JPEG.read_bytes(),
    }
    times = {}
    for i, (rel, data) in enumerate(sorted(files.items())):
        path = root / rel
        path.write_bytes(data)
        times[rel] = T_2020 - i * 86_400 - 7
        os.utime(path, (times[rel], times[rel]))
    return times


def parse_hashsum(output: str) -> dict[str, str]:
    result = {}
    for line in output.splitlines():
        digest, _, name = line.partition("  ")
        result[name] = digest
    return result


def test_rclone_owncloud_copy_check_hashes_mtimes_and_sync_is_idempotent(
    server: RunningServer, tmp_path: Path
) -> None:
    """The exact-sync expectations, with a key that stores uploads as they come (--compression off)."""
    client.require_tool(client.RCLONE)
    key_id, key = server.create_key("--compression", "off")
    src = tmp_path / "src"
    times = make_sync_tree(src)
    rc = Rclone(tmp_path, server, key)
    files = local_files(src)

    with session_for(key) as dav:
        messages, stats, log = rc.sync_json("sync", str(src), ":webdav:")
        assert copied(messages) == sorted(files), log[-3000:]
        assert stats.get("errors") == 0, log[-3000:]
        for rel, data in files.items():
            assert get_bytes(dav, server, rel) == data, rel

        # Modification times travelled with X-OC-Mtime: accepted, so no PROPPATCH was needed.
        requests_of_key = [line for line in server.log().splitlines() if f" - {key_id} - " in line]
        assert any('"PUT /' in line for line in requests_of_key)
        assert not any('"PROPPATCH ' in line for line in requests_of_key), "rclone fell back to PROPPATCH"
        lsl = rc.run("lsl", ":webdav:").stdout
        listed = {}
        for line in lsl.splitlines():
            m = re.match(r"^\s*(\d+) (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\.\d+ (.+)$", line)
            assert m, f"unexpected lsl line {line!r}"
            listed[m.group(3)] = (int(m.group(1)), calendar.timegm(time.strptime(m.group(2), "%Y-%m-%d %H:%M:%S")))
        assert listed == {rel: (len(files[rel]), times[rel]) for rel in files}

        # check compares hashes (oc:checksums), not just sizes ...
        done = rc.run("check", "-v", str(src), ":webdav:")
        assert re.search(r"Using (md5|sha1) for hash comparisons", done.stderr), done.stderr
        assert "0 differences found" in done.stderr and f"{len(files)} matching files" in done.stderr, done.stderr
        # ... and the server's hashes are those of the local files.
        for algo, fn in (("sha1", hashlib.sha1), ("md5", hashlib.md5)):
            remote = parse_hashsum(rc.run("hashsum", algo, ":webdav:").stdout)
            assert remote == {rel: fn(data).hexdigest() for rel, data in files.items()}, algo

        # A second sync transfers nothing.
        messages, stats, log = rc.sync_json("sync", str(src), ":webdav:")
        assert copied(messages) == [], log[-3000:]
        assert stats.get("transfers") == 0 and stats.get("errors") == 0, log[-3000:]

        # A local edit (same size, new content, new time) is the only file sent.
        changed = src / "small.txt"
        changed.write_bytes(b"HELLO, OWNCLOUD VENDOR\n")
        os.utime(changed, (T_2019, T_2019))
        messages, stats, log = rc.sync_json("sync", str(src), ":webdav:")
        assert copied(messages) == ["small.txt"], log[-3000:]
        assert get_bytes(dav, server, "small.txt") == changed.read_bytes()
        assert last_modified(dav, server, "small.txt") == T_2019

        # check is able to fail on the hash alone: same size and time, other bytes.
        r = dav.put(url_of(server, "sub/nested.bin"), data=os.urandom(70_001),
                    headers={"X-OC-Mtime": str(times["sub/nested.bin"])}, timeout=30)
        assert r.status_code == 204
        done = rc.run("check", str(src), ":webdav:", check=False)
        assert done.returncode != 0, done.stderr
        assert re.search(r"sub/nested\.bin: (md5|sha1) differ", done.stderr), done.stderr

        # about: Used is what the collection holds, Free is positive.
        about = json.loads(rc.run("about", "--json", ":webdav:").stdout)
        used = sum(len(d) for d in local_files(src).values())
        assert about["used"] == used and about["free"] > 0, about
        text = rc.run("about", ":webdav:").stdout
        assert re.search(r"^Used:\s+\S+", text, re.MULTILINE) and re.search(r"^Free:\s+\S+", text, re.MULTILINE), text


def test_rclone_with_lossless_compression_documents_what_happens(server: RunningServer, tmp_path: Path) -> None:
    """What rclone does with an image the server compresses (mode lossless, no longer the default).

    The server describes the stored bytes (getcontentlength, oc:checksums), which
    are smaller than the source: rclone reports "corrupted on transfer", DELETES
    its upload and fails. Only --ignore-size --ignore-checksum gets the image
    stored; a later plain sync re-uploads it, fails again, and deletes the copy
    that was there. Exact mode ("--compression exact") syncs cleanly.
    If any of this changes, update the report in this docstring deliberately.
    """
    client.require_tool(client.RCLONE)
    src = tmp_path / "src"
    src.mkdir()
    (src / "notes.txt").write_bytes(b"plain text is never compressed\n")
    shutil.copyfile(JPEG, src / "photo.jpg")
    for p in src.iterdir():
        os.utime(p, (T_2020, T_2020))
    source_size = JPEG.stat().st_size

    _, key = server.create_key("--compression", "lossless")
    rc = Rclone(tmp_path, server, key)
    with session_for(key) as dav:
        done = rc.run("copy", "-v", str(src), ":webdav:", check=False)
        assert done.returncode != 0, done.stderr
        m = re.search(rf"photo\.jpg: corrupted on transfer: sizes differ {source_size} vs (\d+)", done.stderr)
        assert m, done.stderr[-3000:]
        stored_size = int(m.group(1))
        assert stored_size < source_size
        assert "photo.jpg: Removing failed copy" in done.stderr
        assert status_of(dav, server, "photo.jpg") == 404, "rclone removed its upload"
        assert get_bytes(dav, server, "notes.txt") == (src / "notes.txt").read_bytes()

        done = rc.run("copy", "--ignore-size", str(src), ":webdav:", check=False)
        assert done.returncode != 0
        assert re.search(r"photo\.jpg: corrupted on transfer: (md5|sha1) hash differ", done.stderr), done.stderr
        assert status_of(dav, server, "photo.jpg") == 404

        messages, stats, log = rc.sync_json("copy", "--ignore-size", "--ignore-checksum", str(src), ":webdav:")
        assert copied(messages) == ["photo.jpg"] and stats.get("errors") == 0, log[-3000:]
        stored = get_bytes(dav, server, "photo.jpg")
        assert len(stored) == stored_size and oc_checksums(dav, server, "photo.jpg") == digests(stored)
        assert last_modified(dav, server, "photo.jpg") == T_2020
        # Same flags again: nothing to do (times are equal, sizes ignored).
        messages, stats, log = rc.sync_json("copy", "--ignore-size", "--ignore-checksum", str(src), ":webdav:")
        assert copied(messages) == [] and stats.get("errors") == 0, log[-3000:]
        # check sees the size difference.
        assert rc.run("check", str(src), ":webdav:", check=False).returncode != 0

        # A plain sync re-uploads (sizes differ), fails, and deletes the stored image.
        done = rc.run("sync", str(src), ":webdav:", check=False)
        assert done.returncode != 0 and "corrupted on transfer: sizes differ" in done.stderr, done.stderr
        assert status_of(dav, server, "photo.jpg") == 404, "the plain sync removed the stored image"

    _, exact_key = server.create_key("--compression", "exact")
    rc = Rclone(tmp_path, server, exact_key)
    with session_for(exact_key) as dav:
        messages, stats, log = rc.sync_json("sync", str(src), ":webdav:")
        assert copied(messages) == ["notes.txt", "photo.jpg"] and stats.get("errors") == 0, log[-3000:]
        assert get_bytes(dav, server, "photo.jpg") == JPEG.read_bytes()
        rc.run("check", str(src), ":webdav:")
        messages, stats, log = rc.sync_json("sync", str(src), ":webdav:")
        assert copied(messages) == [] and stats.get("transfers") == 0, log[-3000:]


# --- ownCloud protocol over plain HTTP -----------------------------------------


def test_oc_checksums_describe_exactly_the_bytes_get_returns(server: RunningServer) -> None:
    for mode in ("lossless", "exact", "off"):
        _, key = server.create_key("--compression", mode)
        with session_for(key) as dav:
            source = JPEG.read_bytes()
            # rclone sends the checksum of the source; the server verifies it before compressing.
            put_ok(dav, server, "photo.jpg", source, **{"OC-Checksum": "SHA1:" + hashlib.sha1(source).hexdigest()})
            put_ok(dav, server, "a.txt", b"text\n")
            body = get_bytes(dav, server, "photo.jpg")
            if mode == "lossless":
                assert body != source and len(body) < len(source), "the lossless mode should have shrunk the JPEG"
            else:
                assert body == source, mode
            assert oc_checksums(dav, server, "photo.jpg") == digests(body), mode
            assert oc_checksums(dav, server, "a.txt") == digests(b"text\n")
            props = propfind_props(dav, url_of(server, "photo.jpg"), [("DAV:", "getcontentlength")])
            assert int(props.text("/photo.jpg", f"{DAV}getcontentlength")) == len(body)
            # Depth 1, as rclone lists: every file carries its checksums.
            listed = propfind_props(dav, server.url + "/", [(OC_NS, "checksums")], depth="1")
            for rel, data in (("photo.jpg", body), ("a.txt", b"text\n")):
                text = listed.ok("/" + rel, f"{{{OC_NS}}}checksums").findtext(f"{{{OC_NS}}}checksum")
                assert text == "SHA1:{SHA1} MD5:{MD5}".format(**digests(data))


def test_oc_checksum_on_put_is_verified(server: RunningServer, dav: requests.Session) -> None:
    v1, v2 = b"version one\n", b"version two, longer\n"
    put_ok(dav, server, "f.txt", v1, **{"OC-Checksum": "SHA1:" + hashlib.sha1(v1).hexdigest()})

    for header in ("SHA1:" + hashlib.sha1(b"something else").hexdigest(), "MD5:" + hashlib.md5(v1).hexdigest()):
        r = dav.put(url_of(server, "f.txt"), data=v2, headers={"OC-Checksum": header}, timeout=30)
        assert r.status_code == 400, f"OC-Checksum {header}: {r.status_code} {r.text[:200]}"
        assert get_bytes(dav, server, "f.txt") == v1, "the previous version must stay intact"
        assert oc_checksums(dav, server, "f.txt") == digests(v1)

    r = dav.put(url_of(server, "new.txt"), data=v2, headers={"OC-Checksum": "MD5:" + "0" * 32}, timeout=30)
    assert r.status_code == 400
    assert status_of(dav, server, "new.txt") == 404
    assert "new.txt" not in listing(dav, server)

    put_ok(dav, server, "f.txt", v2, **{"OC-Checksum": "MD5:" + hashlib.md5(v2).hexdigest()})
    assert get_bytes(dav, server, "f.txt") == v2


def copied_with_mtime(
    dav: requests.Session, server: RunningServer, method: str, src: str, dst: str, mtime: int, status: int
) -> None:
    """COPY or MOVE /src to /dst with X-OC-Mtime: it answers `status`, says "accepted", and /dst has that time."""
    r = dav.request(method, url_of(server, src), timeout=30,
                    headers={"Destination": url_of(server, dst), "X-OC-Mtime": str(mtime)})
    assert r.status_code == status, r.text
    assert r.headers.get("X-OC-Mtime") == "accepted"
    assert last_modified(dav, server, dst) == mtime


def test_x_oc_mtime_on_put_copy_and_move(server: RunningServer, dav: requests.Session) -> None:
    r = put_ok(dav, server, "a.txt", b"a", **{"X-OC-Mtime": str(T_2020)})
    assert r.headers.get("X-OC-Mtime") == "accepted"
    assert last_modified(dav, server, "a.txt") == T_2020

    r = put_ok(dav, server, "plain.txt", b"p")
    assert "X-OC-Mtime" not in r.headers
    assert abs(last_modified(dav, server, "plain.txt") - time.time()) < 120

    copied_with_mtime(dav, server, "COPY", "a.txt", "b.txt", T_2019, 201)
    assert last_modified(dav, server, "a.txt") == T_2020, "the source keeps its time"

    copied_with_mtime(dav, server, "MOVE", "b.txt", "c.txt", T_2018, 201)
    assert get_bytes(dav, server, "c.txt") == b"a"

    # Over an existing destination (204) too.
    copied_with_mtime(dav, server, "MOVE", "c.txt", "plain.txt", T_2019, 204)
    assert get_bytes(dav, server, "plain.txt") == b"a"

    for bad in ("yesterday", "", "12:00", "0x10"):
        r = dav.put(url_of(server, "bad.txt"), data=b"x", headers={"X-OC-Mtime": bad}, timeout=30)
        assert r.status_code == 400, f"X-OC-Mtime {bad!r}: {r.status_code}"
        assert status_of(dav, server, "bad.txt") == 404, f"X-OC-Mtime {bad!r} stored the file"
    r = dav.request("COPY", url_of(server, "a.txt"), timeout=30,
                    headers={"Destination": url_of(server, "d.txt"), "X-OC-Mtime": "soon"})
    assert r.status_code == 400
    assert status_of(dav, server, "d.txt") == 404


def test_proppatch_lastmodified_unix_seconds_and_win32(server: RunningServer, dav: requests.Session) -> None:
    put_ok(dav, server, "a.txt", b"a")
    r = dav.request("PROPPATCH", url_of(server, "a.txt"), timeout=30,
                    data=proppatch_body({("DAV:", "lastmodified"): str(T_2019)}))
    assert proppatch_statuses(r) == {f"{DAV}lastmodified": 200}
    assert last_modified(dav, server, "a.txt") == T_2019

    r = dav.request("PROPPATCH", url_of(server, "a.txt"), timeout=30, headers={"User-Agent": WIN_UA},
                    data=proppatch_body({(MS_NS, "Win32LastModifiedTime"): http_date(T_2018)}))
    assert proppatch_statuses(r) == {f"{{{MS_NS}}}Win32LastModifiedTime": 200}
    assert last_modified(dav, server, "a.txt") == T_2018

    r = dav.request("PROPPATCH", url_of(server, "a.txt"), timeout=30,
                    data=proppatch_body({("DAV:", "lastmodified"): "not a number"}))
    assert proppatch_statuses(r)[f"{DAV}lastmodified"] >= 400
    assert last_modified(dav, server, "a.txt") == T_2018


def test_quota_properties_on_the_root_only_when_asked(server: RunningServer) -> None:
    _, key = server.create_key("--compression", "off")
    with session_for(key) as dav:
        put_ok(dav, server, "a.bin", os.urandom(12_345))
        assert dav.request("MKCOL", url_of(server, "sub"), timeout=30).status_code == 201
        put_ok(dav, server, "sub/b.bin", os.urandom(1_000))
        names = [("DAV:", "quota-used-bytes"), ("DAV:", "quota-available-bytes")]
        props = propfind_props(dav, server.url + "/", names)
        used = int(props.text("/", f"{DAV}quota-used-bytes"))
        available = int(props.text("/", f"{DAV}quota-available-bytes"))
        assert used == 13_345
        assert available > 0

        allprop = propfind_props(dav, server.url + "/", None)
        assert not any("quota" in name for name in allprop["/"]), sorted(allprop["/"])
        plain = dav.request("PROPFIND", server.url + "/", headers={"Depth": "0"}, timeout=30)
        assert plain.status_code == 207 and b"quota" not in plain.content


# --- macOS Finder ----------------------------------------------------------------


def test_finder_options_and_anonymous_first_request(server: RunningServer, dav: requests.Session) -> None:
    r = dav.options(server.url + "/", headers={"User-Agent": FINDER_UA}, timeout=30)
    assert r.status_code == 200
    assert {"1", "2"} <= header_tokens(r.headers.get("DAV")), r.headers.get("DAV")
    for method in ("OPTIONS", "PROPFIND", "GET"):
        r = requests.request(method, server.url + "/", headers={"User-Agent": FINDER_UA, "Depth": "0"}, timeout=30)
        assert r.status_code == 401, method
        challenge = r.headers.get("WWW-Authenticate", "")
        assert re.match(r'Basic realm="uss_dav"(,|$)', challenge), challenge


def test_finder_chunked_put_with_expected_entity_length(server: RunningServer, key: str) -> None:
    data = os.urandom(1_500_000)
    chunks = [data[:1], data[1:65_536], data[65_536:1_000_000], data[1_000_000:]]
    status, _, body = chunked_put(server, key, "chunked.bin", chunks)
    assert status == 201, f"{status} {body[:300]!r}"
    with session_for(key) as dav:
        # Finder reads the properties right after its PUT.
        props = propfind_props(dav, url_of(server, "chunked.bin"), [("DAV:", "getcontentlength"), ("DAV:", "getlastmodified")])
        assert int(props.text("/chunked.bin", f"{DAV}getcontentlength")) == len(data)
        modified = parsedate_to_datetime(props.text("/chunked.bin", f"{DAV}getlastmodified")).timestamp()
        assert abs(modified - time.time()) < 120
        assert get_bytes(dav, server, "chunked.bin") == data

        # Over an existing file: 204 and the new bytes.
        status, _, body = chunked_put(server, key, "chunked.bin", [b"short now"])
        assert status == 204, body[:300]
        assert get_bytes(dav, server, "chunked.bin") == b"short now"

        # An image through the key's mode: PROPFIND reports the size of what GET returns.
        png = PNG.read_bytes()
        status, _, body = chunked_put(server, key, "pic.png", [png[:50_000], png[50_000:]])
        assert status == 201, body[:300]
        stored = get_bytes(dav, server, "pic.png")
        props = propfind_props(dav, url_of(server, "pic.png"), [("DAV:", "getcontentlength")])
        assert int(props.text("/pic.png", f"{DAV}getcontentlength")) == len(stored)


def test_finder_chunked_upload_cut_off_stores_nothing(server: RunningServer) -> None:
    key_id, key = server.create_key()
    with session_for(key) as dav:
        put_ok(dav, server, "keep.bin", b"previous version")
        for rel in ("new.bin", "keep.bin"):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            try:
                sock.sendall(
                    f"PUT /{rel} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {basic(key)}\r\n"
                    "Transfer-Encoding: chunked\r\nX-Expected-Entity-Length: 1000000\r\n\r\n".encode()
                )
                sock.sendall(b"%x\r\n%s\r\n" % (50_000, b"x" * 50_000))
                time.sleep(0.2)
            finally:
                sock.close()

        def logged_puts() -> int:
            return sum(
                1 for line in server.log().splitlines()
                if f" - {key_id} - " in line and re.search(r'"PUT /(new|keep)\.bin"', line)
            )

        deadline = time.monotonic() + 10
        while logged_puts() < 3 and time.monotonic() < deadline:  # one good PUT, two cut off
            time.sleep(0.05)
        assert status_of(dav, server, "new.bin") == 404
        assert get_bytes(dav, server, "keep.bin") == b"previous version"
        assert "new.bin" not in listing(dav, server)


def test_finder_apple_files_are_stored_as_uploaded(server: RunningServer) -> None:
    _, key = server.create_key("--compression", "lossless")
    png = PNG.read_bytes()
    ds_store = b"\x00\x00\x00\x01Bud1" + os.urandom(6_000)
    with session_for(key) as dav:
        put_ok(dav, server, "x.png", png)
        assert get_bytes(dav, server, "x.png") != png, "the lossless mode should compress a plain PNG"
        put_ok(dav, server, "._x.png", png)
        put_ok(dav, server, ".DS_Store", ds_store)
        status, _, body = chunked_put(server, key, "._y.png", [png])  # as Finder sends it
        assert status == 201, body[:300]
        for rel, data in (("._x.png", png), (".DS_Store", ds_store), ("._y.png", png)):
            assert get_bytes(dav, server, rel) == data, f"{rel} was changed"
            props = propfind_props(dav, url_of(server, rel), [("DAV:", "getcontentlength")])
            assert int(props.text("/" + rel, f"{DAV}getcontentlength")) == len(data)
            assert oc_checksums(dav, server, rel) == digests(data)
        assert {"._x.png", ".DS_Store", "._y.png", "x.png"} <= set(listing(dav, server))


def test_apple_files_discard_accepts_and_drops_them(strict_server: RunningServer) -> None:
    _, key = strict_server.create_key()
    with session_for(key) as dav:
        assert dav.request("MKCOL", url_of(strict_server, "album"), timeout=30).status_code == 201
        for rel in ("._x.png", ".DS_Store", "album/._y.jpg", "album/.DS_Store"):
            r = dav.put(url_of(strict_server, rel), data=PNG.read_bytes(), timeout=30)
            assert 200 <= r.status_code < 300, f"PUT /{rel}: {r.status_code} {r.text[:200]}"
            assert status_of(dav, strict_server, rel) == 404, f"{rel} was stored"
        status, _, body = chunked_put(strict_server, key, "._z.png", [b"\x00\x05\x16\x07" + b"a" * 4000])
        assert 200 <= status < 300, body[:300]
        assert status_of(dav, strict_server, "._z.png") == 404
        put_ok(dav, strict_server, "album/real.txt", b"kept")
        assert listing(dav, strict_server) == ["album"]
        assert listing(dav, strict_server, "/album/") == ["real.txt"]


def test_nfc_and_nfd_names_are_one_file(server: RunningServer, dav: requests.Session) -> None:
    def nfd(name: str) -> str:
        return unicodedata.normalize("NFD", name)

    first = unicodedata.normalize("NFC", "Café Zürich.jpg")
    second = unicodedata.normalize("NFC", "Ångström ñ.txt")
    assert nfd(first) != first

    put_ok(dav, server, first, b"stored as NFC")
    assert get_bytes(dav, server, nfd(first)) == b"stored as NFC"
    put_ok(dav, server, nfd(second), b"sent as NFD by Finder")
    assert get_bytes(dav, server, second) == b"sent as NFD by Finder"
    assert get_bytes(dav, server, nfd(second)) == b"sent as NFD by Finder"

    # Overwriting through the other form replaces the one file.
    r = put_ok(dav, server, nfd(first), b"replaced through NFD")
    assert r.status_code == 204
    assert get_bytes(dav, server, first) == b"replaced through NFD"
    assert sorted(listing(dav, server)) == sorted([first, second]), "each name once, in NFC"

    props = propfind_props(dav, url_of(server, nfd(second)), [("DAV:", "getcontentlength")])
    assert len(props) == 1

    assert dav.delete(url_of(server, nfd(first)), timeout=30).status_code == 204
    assert status_of(dav, server, first) == 404
    assert listing(dav, server) == [second]


def test_a_lock_taken_on_the_nfc_name_also_holds_for_the_nfd_name(server: RunningServer, dav: requests.Session) -> None:
    """Finder (NFD) and another client (NFC) editing one file: the lock must cover both spellings."""
    nfc = unicodedata.normalize("NFC", "Réunion.txt")
    nfd = unicodedata.normalize("NFD", nfc)
    put_ok(dav, server, nfc, b"v1")
    r = dav.request("LOCK", url_of(server, nfc), data=lock_body(), headers={"Timeout": "Second-60"}, timeout=30)
    assert r.status_code == 200, r.text
    token = r.headers["Lock-Token"]
    try:
        assert dav.put(url_of(server, nfc), data=b"v2", timeout=30).status_code == 423
        assert dav.delete(url_of(server, nfc), timeout=30).status_code == 423
        seen = {
            "PUT via NFD": dav.put(url_of(server, nfd), data=b"v3", timeout=30).status_code,
            "PROPPATCH via NFD": dav.request("PROPPATCH", url_of(server, nfd), timeout=30,
                                             data=proppatch_body({("urn:x-test:", "tag"): "v"})).status_code,
            "DELETE via NFD": dav.delete(url_of(server, nfd), timeout=30).status_code,
        }
        assert seen == {name: 423 for name in seen}, f"requests through the NFD name ignored the lock: {seen}"
        assert get_bytes(dav, server, nfc) == b"v1"
    finally:
        dav.request("UNLOCK", url_of(server, nfc), headers={"Lock-Token": token}, timeout=30)


# --- Windows Explorer ----------------------------------------------------------


def test_windows_options_at_the_root(server: RunningServer, dav: requests.Session) -> None:
    r = dav.options(server.url + "/", headers={"User-Agent": WIN_UA}, timeout=30)
    assert r.status_code == 200
    assert {"1", "2"} <= header_tokens(r.headers.get("DAV")), r.headers.get("DAV")
    assert r.headers.get("MS-Author-Via") == "DAV"


def test_windows_save_sequence(server: RunningServer, dav: requests.Session) -> None:
    ua = {"User-Agent": WIN_UA}
    rel = "Report 2024.docx"
    content = os.urandom(40_000)
    created, modified, accessed = T_2018, T_2019, T_2020

    assert dav.put(url_of(server, rel), data=b"", headers=ua, timeout=30).status_code == 201
    r = dav.request("LOCK", url_of(server, rel), data=lock_body(),
                    headers={**ua, "Timeout": "Second-3600", "Depth": "0"}, timeout=30)
    assert r.status_code == 200, r.text
    token = r.headers["Lock-Token"].strip("<>")
    lock = ET.fromstring(r.content)
    assert lock.find(f".//{DAV}exclusive") is not None
    assert "alice" in (lock.findtext(f".//{DAV}owner/{DAV}href") or "")
    if_header = {"If": f"(<{token}>)"}

    # The lock holds against anyone without the token.
    assert dav.put(url_of(server, rel), data=b"intruder", headers=ua, timeout=30).status_code == 423
    r = dav.put(url_of(server, rel), data=content, headers={**ua, **if_header}, timeout=30)
    assert r.status_code == 204, r.text
    r = dav.request("PROPPATCH", url_of(server, rel), headers={**ua, **if_header}, timeout=30, data=proppatch_body({
        (MS_NS, "Win32CreationTime"): http_date(created),
        (MS_NS, "Win32LastAccessTime"): http_date(accessed),
        (MS_NS, "Win32LastModifiedTime"): http_date(modified),
        (MS_NS, "Win32FileAttributes"): "00000020",
    }))
    statuses = proppatch_statuses(r)
    assert statuses == {f"{{{MS_NS}}}{name}": 200 for name in (
        "Win32CreationTime", "Win32LastAccessTime", "Win32LastModifiedTime", "Win32FileAttributes")}, statuses
    r = dav.request("UNLOCK", url_of(server, rel), headers={**ua, "Lock-Token": f"<{token}>"}, timeout=30)
    assert r.status_code == 204, r.text

    assert get_bytes(dav, server, rel) == content
    assert last_modified(dav, server, rel) == modified
    props = propfind_props(dav, url_of(server, rel), [("DAV:", "lockdiscovery")])
    assert props.ok("/" + rel, f"{DAV}lockdiscovery").find(f"{DAV}activelock") is None
    assert dav.put(url_of(server, rel), data=b"after unlock", timeout=30).status_code == 204


def test_case_twins_are_allowed_by_default(server: RunningServer, dav: requests.Session) -> None:
    put_ok(dav, server, "photo.jpg", b"lower")
    put_ok(dav, server, "Photo.JPG", b"upper")
    assert dav.request("MKCOL", url_of(server, "Dir"), timeout=30).status_code == 201
    assert dav.request("MKCOL", url_of(server, "dir"), timeout=30).status_code == 201
    assert sorted(listing(dav, server)) == ["Dir", "Photo.JPG", "dir", "photo.jpg"]
    assert get_bytes(dav, server, "photo.jpg") == b"lower"
    assert get_bytes(dav, server, "Photo.JPG") == b"upper"


def test_refuse_case_collisions(strict_server: RunningServer) -> None:
    srv = strict_server
    _, key = srv.create_key()
    with session_for(key) as dav:
        put_ok(dav, srv, "photo.jpg", b"lower")
        put_ok(dav, srv, "other.txt", b"other")
        assert dav.request("MKCOL", url_of(srv, "Album"), timeout=30).status_code == 201

        r = dav.put(url_of(srv, "Photo.JPG"), data=b"upper", timeout=30)
        assert r.status_code == 409, r.status_code
        r = dav.request("MKCOL", url_of(srv, "PHOTO.jpg"), timeout=30)
        assert r.status_code == 409, r.status_code
        r = dav.request("MKCOL", url_of(srv, "album"), timeout=30)
        assert r.status_code == 409, r.status_code
        r = dav.request("MOVE", url_of(srv, "other.txt"), headers={"Destination": url_of(srv, "PHOTO.JPG")}, timeout=30)
        assert r.status_code == 409, r.status_code
        r = dav.request("COPY", url_of(srv, "other.txt"), headers={"Destination": url_of(srv, "Photo.jpg")}, timeout=30)
        assert r.status_code == 409, r.status_code
        # davfs2 and Office create files with a LOCK on the new name.
        r = dav.request("LOCK", url_of(srv, "pHoto.jpg"), data=lock_body(), headers={"Timeout": "Second-60"}, timeout=30)
        assert r.status_code == 409, r.status_code
        # Nothing changed.
        assert sorted(listing(dav, srv)) == ["Album", "other.txt", "photo.jpg"]
        assert get_bytes(dav, srv, "photo.jpg") == b"lower" and get_bytes(dav, srv, "other.txt") == b"other"

        # The same name is no collision: overwriting works.
        assert put_ok(dav, srv, "photo.jpg", b"lower v2").status_code == 204
        # Inside a folder too.
        put_ok(dav, srv, "Album/a.txt", b"a")
        assert dav.put(url_of(srv, "Album/A.TXT"), data=b"A", timeout=30).status_code == 409


def test_refuse_case_collisions_still_allows_renaming_by_case(strict_server: RunningServer) -> None:
    """Explorer renaming photo.jpg to Photo.jpg sends MOVE onto the case twin of the file itself."""
    srv = strict_server
    _, key = srv.create_key()
    with session_for(key) as dav:
        put_ok(dav, srv, "photo.jpg", b"lower")
        r = dav.request("MOVE", url_of(srv, "photo.jpg"), headers={"Destination": url_of(srv, "Photo.jpg")}, timeout=30)
        assert r.status_code == 201, f"case-only rename refused: MOVE /photo.jpg -> /Photo.jpg: {r.status_code} {r.text[:200]}"
        assert listing(dav, srv) == ["Photo.jpg"]
        assert get_bytes(dav, srv, "Photo.jpg") == b"lower"


# --- browsers (CORS) -----------------------------------------------------------


def test_cors_preflight_and_exposed_headers(strict_server: RunningServer) -> None:
    srv = strict_server
    _, key = srv.create_key()
    origin = "http://app.example"
    with session_for(key) as dav:
        put_ok(dav, srv, "a.txt", b"hello")
        for path in ("/", "/a.txt", "/missing.jpg"):
            r = requests.options(srv.url + path, timeout=30, headers={
                "Origin": origin,
                "Access-Control-Request-Method": "PROPFIND",
                "Access-Control-Request-Headers": "authorization, depth, content-type",
            })
            assert r.status_code != 401 and 200 <= r.status_code < 300, f"preflight {path}: {r.status_code}"
            assert r.headers.get("Access-Control-Allow-Origin") == origin
            assert {"propfind", "put", "get"} <= header_tokens(r.headers.get("Access-Control-Allow-Methods"))
            assert {"authorization", "depth", "content-type"} <= header_tokens(r.headers.get("Access-Control-Allow-Headers"))

        r = dav.get(url_of(srv, "a.txt"), headers={"Origin": origin}, timeout=30)
        assert r.status_code == 200 and r.content == b"hello"
        assert r.headers.get("Access-Control-Allow-Origin") == origin
        assert {"etag", "dav", "content-length"} <= header_tokens(r.headers.get("Access-Control-Expose-Headers"))
        r = dav.request("PROPFIND", srv.url + "/", headers={"Origin": origin, "Depth": "1"}, timeout=30)
        assert r.status_code == 207 and r.headers.get("Access-Control-Allow-Origin") == origin

        other = "http://evil.example"
        r = dav.get(url_of(srv, "a.txt"), headers={"Origin": other}, timeout=30)
        assert r.status_code == 200 and "Access-Control-Allow-Origin" not in r.headers
        r = requests.options(srv.url + "/a.txt", timeout=30,
                             headers={"Origin": other, "Access-Control-Request-Method": "GET"})
        assert "Access-Control-Allow-Origin" not in r.headers

        # A preflight is never a way in: the real request still needs the key; the
        # 401 carries the CORS headers, so the script can read that status.
        r = requests.get(url_of(srv, "a.txt"), headers={"Origin": origin}, timeout=30)
        assert r.status_code == 401
        assert r.headers.get("Access-Control-Allow-Origin") == origin


def test_cors_is_off_by_default(server: RunningServer, dav: requests.Session) -> None:
    put_ok(dav, server, "a.txt", b"hello")
    origin = "http://app.example"
    responses = [
        dav.get(url_of(server, "a.txt"), headers={"Origin": origin}, timeout=30),
        dav.options(server.url + "/", headers={"Origin": origin}, timeout=30),
        requests.options(server.url + "/a.txt", timeout=30,
                         headers={"Origin": origin, "Access-Control-Request-Method": "GET"}),
    ]
    assert responses[0].status_code == 200
    for r in responses:
        assert not [h for h in r.headers if h.lower().startswith("access-control-")], dict(r.headers)


# --- scoped and expiring keys --------------------------------------------------


def test_read_only_key(server: RunningServer) -> None:
    key_id, key = server.create_key("--scope", "ro")
    root = collection_dir(server, key_id)
    (root / "a.txt").write_bytes(b"readable")
    (root / "folder").mkdir()
    before = sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))
    with session_for(key) as ro:
        assert get_bytes(ro, server, "a.txt") == b"readable"
        assert ro.head(url_of(server, "a.txt"), timeout=30).status_code == 200
        assert sorted(listing(ro, server)) == ["a.txt", "folder"]
        assert ro.options(server.url + "/", timeout=30).status_code == 200

        dest = {"Destination": url_of(server, "b.txt")}
        attempts = [
            ("PUT", "a.txt", b"changed", {}),
            ("PUT", "new.txt", b"new", {}),
            ("DELETE", "a.txt", None, {}),
            ("DELETE", "folder", None, {}),
            ("MKCOL", "made", None, {}),
            ("MOVE", "a.txt", None, dest),
            ("COPY", "a.txt", None, dest),
            ("PROPPATCH", "a.txt", proppatch_body({("urn:x-test:", "tag"): "v"}), {}),
            ("LOCK", "a.txt", lock_body(), {"Timeout": "Second-60"}),
            ("LOCK", "locknull.txt", lock_body(), {"Timeout": "Second-60"}),
        ]
        for method, rel, body, headers in attempts:
            r = ro.request(method, url_of(server, rel), data=body, headers=headers, timeout=30)
            assert r.status_code == 403, f"{method} /{rel} with a read-only key: {r.status_code}"
        assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) == before
        assert (root / "a.txt").read_bytes() == b"readable"
        props = propfind_props(ro, url_of(server, "a.txt"), [("urn:x-test:", "tag"), ("DAV:", "lockdiscovery")])
        assert props["/a.txt"]["{urn:x-test:}tag"][0] == 404
        assert props.ok("/a.txt", f"{DAV}lockdiscovery").find(f"{DAV}activelock") is None


def test_upload_only_key(server: RunningServer) -> None:
    key_id, key = server.create_key("--scope", "upload")
    root = collection_dir(server, key_id)
    with session_for(key) as up:
        r = up.put(url_of(server, "new.txt"), data=b"first", timeout=30)
        assert r.status_code == 201, r.text
        assert (root / "new.txt").read_bytes() == b"first"
        r = up.put(url_of(server, "new.txt"), data=b"second", timeout=30)
        assert r.status_code == 403, r.status_code
        r = up.put(url_of(server, unicodedata.normalize("NFD", "né.txt")), data=b"x", timeout=30)
        assert r.status_code == 201
        r = up.put(url_of(server, "né.txt"), data=b"overwrite through the other form", timeout=30)
        assert r.status_code == 403, r.status_code
        assert (root / "new.txt").read_bytes() == b"first"
        for method in ("GET", "HEAD", "DELETE", "PROPFIND", "MKCOL", "PROPPATCH", "LOCK"):
            r = up.request(method, url_of(server, "new.txt" if method != "MKCOL" else "dir"), timeout=30)
            assert r.status_code == 403, f"{method} with an upload-only key: {r.status_code}"
        r = up.request("MOVE", url_of(server, "new.txt"), headers={"Destination": url_of(server, "m.txt")}, timeout=30)
        assert r.status_code == 403
        assert sorted(p.name for p in root.iterdir()) == ["new.txt", "né.txt"]


def test_expired_key_is_refused(server: RunningServer) -> None:
    _, expired = server.create_key("--expires", "2000-01-01T00:00:00Z")
    _, alive = server.create_key("--expires", "30d")
    with session_for(alive) as dav:
        put_ok(dav, server, "a.txt", b"a")
    for auth in ({"Authorization": basic(expired)}, {"Authorization": f"Bearer {expired}"}):
        for method in ("GET", "PROPFIND", "PUT"):
            r = requests.request(method, url_of(server, "a.txt"), headers={**auth, "Depth": "0"}, data=b"x", timeout=30)
            assert r.status_code == 401, f"{method} with an expired key: {r.status_code}"
            assert r.headers.get("WWW-Authenticate", "").startswith('Basic realm="uss_dav"')


# --- davfs2 ------------------------------------------------------------------------


def davfs2_unavailable() -> str | None:
    """Why davfs2 cannot mount here, or None."""
    if not os.access(MOUNT_DAVFS, os.X_OK):
        return f"{MOUNT_DAVFS} is not installed (apt-get install davfs2)"
    if os.geteuid() != 0:
        return "mounting davfs2 needs root"
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse does not exist (no FUSE support in this kernel or container)"
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR))
    except OSError as exc:
        return f"/dev/fuse cannot be opened: {exc}"
    if "fuse" not in Path("/proc/filesystems").read_text():
        return "the kernel does not list the fuse file system"
    try:
        import grp

        grp.getgrnam("davfs2")
    except KeyError:
        return "the davfs2 group does not exist (the davfs2 package sets it up)"
    return None


@contextlib.contextmanager
def davfs2_mount(server: RunningServer, key: str) -> Iterator[Path]:
    """Mount the key's collection with davfs2 (locks on, as by default); unmounted on exit."""
    import grp

    base = Path(tempfile.mkdtemp(prefix="uss-davfs-"))
    base.chmod(0o755)  # the davfs2 daemon runs as user davfs2 and must reach its cache
    mnt, cache = base / "mnt", base / "cache"
    mnt.mkdir()
    cache.mkdir()
    os.chown(cache, 0, grp.getgrnam("davfs2").gr_gid)
    cache.chmod(0o775)
    secrets = base / "secrets"
    secrets.write_text(f"{server.url}/ any {key}\n")
    secrets.chmod(0o600)
    conf = base / "davfs2.conf"
    conf.write_text(f"buf_size 64\ncache_dir {cache}\nsecrets {secrets}\nask_auth 0\ndelay_upload 0\n")
    try:
        done = subprocess.run([MOUNT_DAVFS, f"{server.url}/", str(mnt), "-o", f"conf={conf}"],
                              check=False, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, f"mount.davfs exited {done.returncode}: {done.stderr}"
        assert is_mounted(mnt), f"mount.davfs exited 0 but {mnt} is not mounted: {done.stderr}"
        yield mnt
    finally:
        if is_mounted(mnt):
            # umount.davfs waits until the daemon has uploaded every changed file.
            subprocess.run([UMOUNT, str(mnt)], check=False, capture_output=True, timeout=60)
        if is_mounted(mnt):
            subprocess.run([UMOUNT, "-l", str(mnt)], check=False, capture_output=True, timeout=30)
        if not is_mounted(mnt):  # never delete through a live mount: that would delete on the server
            shutil.rmtree(base, ignore_errors=True)


def is_mounted(path: Path) -> bool:
    """Whether `path` is a mount point (read from the kernel; works for a dead FUSE mount too)."""
    target = os.path.realpath(path)
    with open("/proc/self/mounts", encoding="utf-8", errors="replace") as fh:
        return any(line.split()[1].replace("\\040", " ") == target for line in fh if len(line.split()) > 1)


def test_davfs2_mount_read_write(server: RunningServer) -> None:
    reason = davfs2_unavailable()
    if reason:
        pytest.skip(reason)
    _, key = server.create_key()
    blob = os.urandom(300_000)
    with session_for(key) as dav:
        put_ok(dav, server, "from_http.txt", b"written over HTTP\n")
        with davfs2_mount(server, key) as mnt:
            assert (mnt / "from_http.txt").read_bytes() == b"written over HTTP\n"
            (mnt / "blob.bin").write_bytes(blob)
            (mnt / "folder").mkdir()
            (mnt / "folder" / "note.txt").write_text("through davfs2\n")
            shutil.copyfile(PNG, mnt / "folder" / "pic.png")
            (mnt / "from_http.txt").rename(mnt / "folder" / "moved.txt")
            assert sorted(os.listdir(mnt / "folder")) == ["moved.txt", "note.txt", "pic.png"]
        # Unmounting waits for every upload.
        assert get_bytes(dav, server, "blob.bin") == blob
        assert get_bytes(dav, server, "folder/note.txt") == b"through davfs2\n"
        assert get_bytes(dav, server, "folder/moved.txt") == b"written over HTTP\n"
        assert status_of(dav, server, "from_http.txt") == 404
        stored_png = get_bytes(dav, server, "folder/pic.png")
        assert 0 < len(stored_png) <= PNG.stat().st_size
        # Mounted again: davfs2 sees what the server holds, deletes through the mount.
        with davfs2_mount(server, key) as mnt:
            assert (mnt / "blob.bin").read_bytes() == blob
            assert (mnt / "folder" / "pic.png").read_bytes() == stored_png
            (mnt / "blob.bin").unlink()
        assert status_of(dav, server, "blob.bin") == 404
