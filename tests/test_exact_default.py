"""Exact by default (issue 19): a key made with no flag gives every client back the bytes it uploaded.

What clients see (GET, HEAD, PROPFIND, ETag, oc:checksums, Content-Length,
Range) describes the uploaded bytes; HEAD, PROPFIND and 304 answers never
rebuild a file stored encoded; `recompress` re-encodes stored files without
any client seeing a change.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.client import RCLONE, copied, require_tool, session_for, url_of
from tests.client import OwncloudRclone as Rclone
from tests.inprocess import wsgi_environ
from tests.server import ROOT, RunningServer, write_config
from uss_dav.app import build_app
from uss_dav.config import load_config
from uss_dav.services import Services, open_services

CORPUS = ROOT / "tests" / "data" / "corpus"
REAL_CORPUS = ROOT / "tests" / "data" / "corpus_real"
#: Refused by design (413: it declares more pixels than max_pixels), so it makes no round trip.
REFUSED = {"bomb.png"}
FILES = sorted(p.name for p in CORPUS.iterdir() if p.name not in REFUSED)
#: Real PNGs and JPEGs from Debian packages (tests/data/corpus_real/SOURCES.md): other writers than Pillow.
REAL = sorted(p.name for p in REAL_CORPUS.iterdir() if p.suffix in (".png", ".jpg"))
JPEGS = [n for n in FILES if n.endswith(".jpg")]
IMAGES = [n for n in FILES if n != "notes.txt"]
DAV = "{DAV:}"
OC = "{http://owncloud.org/ns}"


def propfind(session: requests.Session, url: str) -> ET.Element:
    body = (
        '<?xml version="1.0"?><d:propfind xmlns:d="DAV:" xmlns:oc="http://owncloud.org/ns"><d:prop>'
        "<d:getetag/><d:getcontentlength/><oc:checksums/></d:prop></d:propfind>"
    )
    r = session.request("PROPFIND", url, data=body, headers={"Depth": "0"}, timeout=30)
    assert r.status_code == 207, r.text
    return ET.fromstring(r.content)


def described(session: requests.Session, url: str) -> tuple[str, int, str]:
    """(ETag, size, checksums) of one file as PROPFIND reports them."""
    tree = propfind(session, url)
    etag = tree.findtext(f".//{DAV}getetag")  # quoted, exactly as the ETag header carries it
    size = tree.findtext(f".//{DAV}getcontentlength")
    checksums = tree.findtext(f".//{OC}checksums/{OC}checksum")
    assert etag and size and checksums, ET.tostring(tree)
    return etag, int(size), checksums


def expected_checksums(data: bytes) -> str:
    return f"SHA1:{hashlib.sha1(data).hexdigest()} MD5:{hashlib.md5(data).hexdigest()}"


def stored_size(server: RunningServer, key_id: str, name: str) -> int:
    return (server.data_dir / "collections" / key_id / name).stat().st_size


def key_file(server: RunningServer, key_id: str) -> dict[str, Any]:
    for path in (server.data_dir / "keys").glob("*.json"):
        record = json.loads(path.read_text())
        if record["id"] == key_id:
            return record
    raise AssertionError(f"no key file for {key_id}")


# --- the default, and keys keep their mode -------------------------------------------------------


def test_a_key_made_with_no_flag_records_exact_and_keeps_it_when_the_default_changes(
    server: RunningServer, tmp_path: Path
) -> None:
    key_id, _key = server.create_key()
    assert key_file(server, key_id)["compression"] == "exact"
    # The same data directory under a configuration whose default is lossless: the key keeps exact.
    lossless = write_config(tmp_path / "lossless.yaml", compression={"mode": "lossless"})
    config = load_config(lossless, {"data_dir": str(server.data_dir)}, environ={})
    services = open_services(config, with_hook=False)
    record = services.keys.get(key_id)
    assert services.mode_for(record) == "exact"
    # A key made under that configuration records lossless; a record without a mode follows the configuration.
    made, _ = services.create_key("under lossless")
    assert made.compression == "lossless"
    assert services.mode_for(dataclasses.replace(record, compression=None)) == "lossless"


# --- every corpus file, over WebDAV and REST ------------------------------------------------------


@pytest.fixture(scope="module")
def default_key(server: RunningServer) -> tuple[str, str]:
    return server.create_key()


@pytest.mark.parametrize("name", FILES + [f"real/{n}" for n in REAL])
def test_webdav_round_trip_through_a_default_key_is_byte_identical_and_described_truly(
    server: RunningServer, default_key: tuple[str, str], name: str
) -> None:
    key_id, key = default_key
    data = (REAL_CORPUS / name.removeprefix("real/") if name.startswith("real/") else CORPUS / name).read_bytes()
    name = name.replace("/", "-")
    url = url_of(server, f"dav-{name}")
    with session_for(key) as dav:
        assert dav.put(url, data=data, timeout=60).status_code in (201, 204)
        got = dav.get(url, timeout=60)
        assert got.status_code == 200 and got.content == data
        assert int(got.headers["Content-Length"]) == len(data)
        head = dav.head(url, timeout=30)
        assert int(head.headers["Content-Length"]) == len(data)
        etag, size, checksums = described(dav, url)
        assert got.headers["ETag"] == head.headers["ETag"] == etag
        assert size == len(data) and checksums == expected_checksums(data)
        assert dav.get(url, headers={"If-None-Match": etag}, timeout=30).status_code == 304
        part = dav.get(url, headers={"Range": "bytes=100-4195"}, timeout=30)
        assert part.status_code == 206 and part.content == data[100:4196]
        assert part.headers["Content-Range"] == f"bytes 100-{min(4195, len(data) - 1)}/{len(data)}"
        tail = dav.get(url, headers={"Range": "bytes=-17"}, timeout=30)
        assert tail.status_code == 206 and tail.content == data[-17:]
    if name in ("photo_exif_icc_xmp.jpg", "progressive.jpg"):
        # The default stores these JPEGs encoded and smaller: what GET returned was rebuilt.
        assert stored_size(server, key_id, f"dav-{name}") < len(data)


@pytest.mark.parametrize("name", IMAGES)  # the REST API takes images only
def test_rest_round_trip_through_a_default_key_is_byte_identical_and_described_truly(
    server: RunningServer, default_key: tuple[str, str], name: str
) -> None:
    _key_id, key = default_key
    data = (CORPUS / name).read_bytes()
    base = f"{server.url}/api/v1/images"
    with session_for(key) as api:
        r = api.post(base, params={"name": f"rest-{name}"}, data=data, timeout=60)
        if name == "truncated.jpg":  # the REST API takes decodable images only; WebDAV stores it as it came
            assert r.status_code == 415, r.text
            return
        assert r.status_code == 201, r.text
        got = api.get(f"{base}/rest-{name}", timeout=60)
        assert got.status_code == 200 and got.content == data
        assert int(got.headers["Content-Length"]) == len(data)
        head = api.head(f"{base}/rest-{name}", timeout=30)
        assert int(head.headers["Content-Length"]) == len(data) and head.headers["ETag"] == got.headers["ETag"]
        etag, size, checksums = described(api, url_of(server, f"rest-{name}"))
        assert got.headers["ETag"] == etag and size == len(data) and checksums == expected_checksums(data)
        part = api.get(f"{base}/rest-{name}", headers={"Range": "bytes=3-1002"}, timeout=30)
        assert part.status_code == 206 and part.content == data[3:1003]
        assert api.get(f"{base}/rest-{name}", headers={"If-None-Match": etag}, timeout=30).status_code == 304


# --- nothing but a body rebuilds -------------------------------------------------------------------


class CountingHook:
    """The real compressor, counting rebuilds."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.rebuilds = inner, 0

    def process(self, *args: Any, **kwargs: Any) -> Any:
        return self.inner.process(*args, **kwargs)

    def restore_data(self, data: bytes, encoding: str) -> bytes:
        self.rebuilds += 1
        return self.inner.restore_data(data, encoding)


@pytest.fixture
def inprocess(tmp_path: Path) -> Iterator[tuple[Any, Services, CountingHook, str]]:
    services = open_services(load_config(ROOT / "config.yaml", {"data_dir": str(tmp_path / "data")}, environ={}))
    hook = CountingHook(services.hook)
    services.store.hook = hook  # type: ignore[assignment]
    _record, key = services.create_key("in-process")
    try:
        yield build_app(services), services, hook, key
    finally:
        services.close()


def call(app: Any, environ: dict[str, Any]) -> tuple[str, dict[str, str], bytes]:
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        seen["status"], seen["headers"] = status, dict(headers)

    result = app(environ, start_response)
    try:
        body = b"".join(result)
    finally:
        getattr(result, "close", lambda: None)()
    return seen["status"], seen["headers"], body


def test_head_propfind_304_and_etags_never_rebuild_only_a_body_does(
    inprocess: tuple[Any, Services, CountingHook, str],
) -> None:
    app, _services, hook, key = inprocess
    data = (CORPUS / "photo_exif_icc_xmp.jpg").read_bytes()
    status, _h, _b = call(app, wsgi_environ("PUT", "/p.jpg", key, data))
    assert status.startswith("201")
    status, headers, body = call(app, wsgi_environ("HEAD", "/p.jpg", key))
    assert status.startswith("200") and body == b"" and int(headers["Content-Length"]) == len(data)
    etag = headers["ETag"]
    for method, path, extra in [
        ("PROPFIND", "/", {"depth": "1"}),
        ("PROPFIND", "/p.jpg", {"depth": "0"}),
        ("GET", "/p.jpg", {"if_none_match": etag}),
        ("HEAD", "/p.jpg", {"range": "bytes=0-9"}),
        ("HEAD", "/api/v1/images/p.jpg", {}),
        ("GET", "/api/v1/images/p.jpg", {"if_none_match": etag}),
        ("GET", "/api/v1/images/p.jpg/meta", {}),
        ("GET", "/api/v1/images", {}),
    ]:
        status, headers, _body = call(app, wsgi_environ(method, path, key, **extra))
        assert status[:3] in ("200", "206", "207", "304"), (method, path, status)
        assert hook.rebuilds == 0, f"{method} {path} rebuilt the file"
    status, headers, body = call(app, wsgi_environ("GET", "/p.jpg", key))
    assert body == data and headers["ETag"] == etag and hook.rebuilds == 1
    status, headers, body = call(app, wsgi_environ("GET", "/p.jpg", key, range="bytes=5000-5099"))
    assert status.startswith("206") and body == data[5000:5100]
    status, headers, body = call(app, wsgi_environ("GET", "/api/v1/images/p.jpg", key, range="bytes=-10"))
    assert status.startswith("206") and body == data[-10:]
    assert hook.rebuilds == 3


# --- rclone with a default key ---------------------------------------------------------------------


def test_rclone_owncloud_with_a_default_key_copies_checks_and_syncs_nothing_twice(
    server: RunningServer, tmp_path: Path
) -> None:
    require_tool(RCLONE)
    key_id, key = server.create_key()
    src = tmp_path / "photos"
    src.mkdir()
    for name in FILES:
        shutil.copy2(CORPUS / name, src / name)
    rc = Rclone(tmp_path, server, key)
    done = rc.run("copy", "-v", str(src), ":webdav:", check=False)
    assert done.returncode == 0 and "corrupted on transfer" not in done.stderr, done.stderr[-3000:]
    for args in (("check",), ("check", "--download")):
        done = rc.run(*args, str(src), ":webdav:", check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "0 differences found" in done.stderr and f"{len(FILES)} matching files" in done.stderr, done.stderr
    messages, stats, log = rc.sync_json("sync", str(src), ":webdav:")
    assert copied(messages) == [] and stats.get("transfers") == 0 and stats.get("errors") == 0, log[-3000:]
    # The JPEGs were stored smaller all the same.
    assert sum(stored_size(server, key_id, n) for n in JPEGS) < sum((CORPUS / n).stat().st_size for n in JPEGS)


# --- recompress ----------------------------------------------------------------------------------


def cli(server: RunningServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "uss_dav", "--config", str(server.config), "--data-dir", str(server.data_dir), *args],
        cwd=ROOT, env=server.env, capture_output=True, text=True, timeout=300, check=False,
    )


def tree_state(root: Path) -> dict[str, tuple[int, int, int, int]]:
    """Every file under root: inode, size, mtime, ctime: any rewrite shows, and so does a changed record (xattr)."""
    return {
        str(p.relative_to(root)): (p.stat().st_ino, p.stat().st_size, p.stat().st_mtime_ns, p.stat().st_ctime_ns)
        for p in sorted(root.rglob("*")) if p.is_file()
    }


def client_view(server: RunningServer, key: str, names: list[str]) -> dict[str, tuple[bytes, str, str, str, str]]:
    """What a client sees of each file: bytes, ETag, Last-Modified, PROPFIND's ETag and checksums."""
    view = {}
    with session_for(key) as dav:
        for name in names:
            got = dav.get(url_of(server, name), timeout=60)
            etag, size, checksums = described(dav, url_of(server, name))
            assert size == len(got.content)
            view[name] = (got.content, got.headers["ETag"], got.headers["Last-Modified"], etag, checksums)
    return view


def test_recompress_shrinks_as_is_jpegs_invisibly_and_is_idempotent_and_dry_run_changes_nothing(
    server: RunningServer, tmp_path: Path
) -> None:
    seed_key = f"seedkey-{tmp_path.name[-12:]}"
    files = tmp_path / "seed" / "files"
    (files / seed_key).mkdir(parents=True)
    for name in IMAGES:
        shutil.copy2(CORPUS / name, files / seed_key / name)
    (files / "key_list.txt").write_text(f"{seed_key}\n")
    done = cli(server, "import", str(tmp_path / "seed"), "--as-is")
    assert done.returncode == 0, done.stderr
    record = json.loads((server.data_dir / "keys" / f"{hashlib.sha256(seed_key.encode()).hexdigest()}.json").read_text())
    key_id = record["collection"]
    collection = server.data_dir / "collections" / key_id
    assert all(stored_size(server, key_id, n) == (CORPUS / n).stat().st_size for n in JPEGS)
    before = client_view(server, seed_key, IMAGES)
    assert all(view[0] == (CORPUS / n).read_bytes() for n, view in before.items())
    state = tree_state(server.data_dir / "meta" / key_id) | tree_state(collection)

    dry = cli(server, "recompress", "--key", key_id, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    m = re.search(r"would re-encode (\d+) of \d+ file\(s\).* (\d+) bytes to save", dry.stdout)
    assert m and int(m.group(1)) >= 2 and int(m.group(2)) > 0, dry.stdout
    assert tree_state(server.data_dir / "meta" / key_id) | tree_state(collection) == state

    first = cli(server, "recompress", "--key", key_id)
    assert first.returncode == 0, first.stderr
    m2 = re.search(r"re-encoded (\d+) of \d+ file\(s\).* (\d+) bytes saved", first.stdout)
    assert m2 and m2.groups() == m.groups(), (dry.stdout, first.stdout)
    shrunk = [n for n in JPEGS if stored_size(server, key_id, n) < (CORPUS / n).stat().st_size]
    assert {"photo_exif_icc_xmp.jpg", "progressive.jpg"} <= set(shrunk), shrunk
    assert client_view(server, seed_key, IMAGES) == before

    state = tree_state(server.data_dir / "meta" / key_id) | tree_state(collection)
    second = cli(server, "recompress", "--key", key_id)
    assert second.returncode == 0, second.stderr
    assert re.search(r"re-encoded 0 of \d+ file\(s\)", second.stdout), second.stdout
    assert tree_state(server.data_dir / "meta" / key_id) | tree_state(collection) == state
    assert client_view(server, seed_key, IMAGES) == before


def test_a_file_a_client_overwrites_during_recompress_keeps_the_clients_version(
    inprocess: tuple[Any, Services, CountingHook, str],
) -> None:
    app, services, _hook, key = inprocess
    record = services.keys.verify(key)
    assert record is not None
    cid, store = record.collection, services.store
    original = (CORPUS / "photo_exif_icc_xmp.jpg").read_bytes()
    client = (CORPUS / "progressive.jpg").read_bytes()
    upload = store.begin_upload(cid, "/race.jpg")
    upload.write(original)
    store.commit(upload, mode="off")  # as an --as-is import stores it

    def client_writes() -> None:
        # A client's PUT lands between the re-encode and its commit.
        status, _h, _b = call(app, wsgi_environ("PUT", "/race.jpg", key, client))
        assert status.startswith("204")

    result = store.recompress(cid, "/race.jpg", "exact", before_commit=client_writes)
    assert result.action == "changed meanwhile"
    status, headers, body = call(app, wsgi_environ("GET", "/race.jpg", key))
    assert body == client and headers["ETag"] == f'"{hashlib.sha1(client).hexdigest()}"'
    # The client's PUT went through the key's mode (exact): nothing is left to do.
    assert store.recompress(cid, "/race.jpg", "exact").action == "unchanged"
    assert call(app, wsgi_environ("GET", "/race.jpg", key))[2] == client


def test_recompress_runs_one_file_per_worker_at_a_time(
    inprocess: tuple[Any, Services, CountingHook, str],
) -> None:
    from uss_dav.recompress import recompress

    _app, services, _hook, key = inprocess
    record = services.keys.verify(key)
    assert record is not None
    for i, name in enumerate(JPEGS * 2):
        upload = services.store.begin_upload(record.collection, f"/{i}-{name}")
        upload.write((CORPUS / name).read_bytes())
        services.store.commit(upload, mode="off")
    busy, most, lock = 0, 0, threading.Lock()
    inner = services.store.hook

    class Watching:
        def process(self, *args: Any, **kwargs: Any) -> Any:
            nonlocal busy, most
            with lock:
                busy += 1
                most = max(most, busy)
            try:
                return inner.process(*args, **kwargs)  # type: ignore[union-attr]
            finally:
                with lock:
                    busy -= 1

        def restore_data(self, data: bytes, encoding: str) -> bytes:
            return inner.restore_data(data, encoding)  # type: ignore[union-attr]

    services.store.hook = Watching()  # type: ignore[assignment]
    summary = recompress(services, [record], None)
    assert summary.changed >= 2 and not summary.skipped, summary
    assert 1 <= most <= services.config.compression.workers
