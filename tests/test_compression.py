"""Image compression on the write path, checked through a real server."""

from __future__ import annotations

import hashlib
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.client import propfind
from tests.images import CORPUS, IMAGES, SHRINK_LOSSLESS, frames, metadata
from tests.server import RunningServer, ServerFactory

DAV = "{DAV:}"
PROPS = (
    '<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop>'
    "<D:getcontentlength/><D:getetag/></D:prop></D:propfind>"
)


def listed(session: requests.Session, url: str) -> tuple[int, str]:
    """(getcontentlength, getetag) that PROPFIND reports for url."""
    r = propfind(session, url, "0", PROPS)
    assert r.status_code == 207, r.text
    tree = ET.fromstring(r.content)
    return int(tree.findtext(f".//{DAV}getcontentlength") or -1), tree.findtext(f".//{DAV}getetag") or ""


def assert_consistent(session: requests.Session, url: str) -> bytes:
    """GET, HEAD and PROPFIND agree on size and ETag; return the body."""
    got = session.get(url)
    assert got.status_code == 200
    head = session.head(url)
    size, etag = listed(session, url)
    assert int(got.headers["Content-Length"]) == len(got.content) == size == int(head.headers["Content-Length"])
    assert got.headers["ETag"] == head.headers["ETag"] == etag  # getetag is the header's entity-tag (RFC 4918 9.1.5)
    assert etag == f'"{hashlib.sha1(got.content).hexdigest()}"'
    return got.content


@pytest.fixture
def lossless(server: RunningServer) -> Iterator[requests.Session]:
    """A session with a key in the pixel mode (lossless is no longer the default)."""
    _key_id, key = server.create_key("--compression", "lossless")
    with requests.Session() as session:
        session.auth = (key, "")
        yield session


@pytest.mark.parametrize("name", IMAGES)
def test_lossless_upload_keeps_pixels_and_metadata_and_never_grows(
    server: RunningServer, lossless: requests.Session, name: str
) -> None:
    dav = lossless
    original = (CORPUS / name).read_bytes()
    r = dav.put(f"{server.url}/{name}", data=original)
    assert r.status_code == 201, r.text
    body = assert_consistent(dav, f"{server.url}/{name}")
    assert r.headers["ETag"] == dav.head(f"{server.url}/{name}").headers["ETag"]
    assert len(body) <= len(original)
    assert frames(body) == frames(original)
    assert metadata(body) == metadata(original)
    if name in SHRINK_LOSSLESS:
        assert len(body) < len(original), "the optimizer did not run"


def test_type_comes_from_the_bytes_so_a_renamed_upload_is_compressed(
    server: RunningServer, lossless: requests.Session
) -> None:
    dav = lossless
    original = (CORPUS / "photo_exif_icc_xmp.jpg").read_bytes()
    dav.put(f"{server.url}/upload.tmp", data=original)
    dav.request("MOVE", f"{server.url}/upload.tmp", headers={"Destination": f"{server.url}/photo.jpg"})
    body = assert_consistent(dav, f"{server.url}/photo.jpg")
    assert len(body) < len(original)
    assert frames(body) == frames(original)


def test_bomb_is_refused_with_413_and_nothing_is_stored(server: RunningServer, dav: requests.Session) -> None:
    dav.put(f"{server.url}/bomb.png", data=b"previous")
    r = dav.put(f"{server.url}/bomb.png", data=(CORPUS / "bomb.png").read_bytes())
    assert r.status_code == 413
    assert "pixel" in r.text
    assert dav.get(f"{server.url}/bomb.png").content == b"previous"
    assert dav.put(f"{server.url}/new-bomb.png", data=(CORPUS / "bomb.png").read_bytes()).status_code == 413
    assert dav.get(f"{server.url}/new-bomb.png").status_code == 404


@pytest.mark.parametrize("name", ["truncated.jpg", "notes.txt"])
def test_corrupt_images_and_non_images_are_stored_as_uploaded(
    server: RunningServer, dav: requests.Session, name: str
) -> None:
    original = (CORPUS / name).read_bytes()
    assert dav.put(f"{server.url}/{name}", data=original).status_code == 201
    assert assert_consistent(dav, f"{server.url}/{name}") == original


@pytest.fixture
def exact(server: RunningServer) -> Iterator[tuple[requests.Session, Path]]:
    key_id, key = server.create_key("--compression", "exact")
    with requests.Session() as session:
        session.auth = (key, "")
        yield session, server.data_dir / "collections" / key_id


@pytest.mark.parametrize("name", ["photo_exif_icc_xmp.jpg", "progressive.jpg", "mpo_gain_map.jpg", "cmyk.jpg"])
def test_exact_mode_returns_the_uploaded_bytes_and_stores_jpegs_smaller(
    server: RunningServer, exact: tuple[requests.Session, Path], name: str
) -> None:
    session, folder = exact
    original = (CORPUS / name).read_bytes()
    r = session.put(f"{server.url}/{name}", data=original)
    assert r.status_code == 201
    assert assert_consistent(session, f"{server.url}/{name}") == original
    assert r.headers["ETag"] == f'"{hashlib.sha1(original).hexdigest()}"'
    stored = (folder / name).stat().st_size
    if name == "cmyk.jpg":  # JPEG XL refuses CMYK: kept as uploaded
        assert stored == len(original)
    else:
        assert stored < len(original)
    part = session.get(f"{server.url}/{name}", headers={"Range": "bytes=10-1009"})
    assert part.status_code == 206 and part.content == original[10:1010]


def test_exact_mode_copy_and_move_keep_the_original_bytes(server: RunningServer, exact: tuple[requests.Session, Path]) -> None:
    session, _folder = exact
    original = (CORPUS / "photo_exif_icc_xmp.jpg").read_bytes()
    session.put(f"{server.url}/a.jpg", data=original)
    session.request("COPY", f"{server.url}/a.jpg", headers={"Destination": f"{server.url}/b.jpg"})
    session.request("MOVE", f"{server.url}/a.jpg", headers={"Destination": f"{server.url}/c.jpg"})
    for name in ("b.jpg", "c.jpg"):
        assert assert_consistent(session, f"{server.url}/{name}") == original


def test_off_mode_stores_exactly_what_was_uploaded(server: RunningServer) -> None:
    key_id, key = server.create_key("--compression", "off")
    original = (CORPUS / "photo_exif_icc_xmp.jpg").read_bytes()
    requests.put(f"{server.url}/p.jpg", data=original, auth=(key, ""))
    assert (server.data_dir / "collections" / key_id / "p.jpg").read_bytes() == original


def test_images_only_refuses_non_images_with_415(make_server: ServerFactory) -> None:
    srv = make_server(images_only=True)
    key = srv.create_key()[1]
    r = requests.put(f"{srv.url}/notes.txt", data=b"just text", auth=(key, ""))
    assert r.status_code == 415 and r.text.strip()
    assert requests.get(f"{srv.url}/notes.txt", auth=(key, "")).status_code == 404
    png = (CORPUS / "rgba.png").read_bytes()
    assert requests.put(f"{srv.url}/ok.png", data=png, auth=(key, "")).status_code == 201
    assert os.listdir(srv.data_dir / "staging") == []
