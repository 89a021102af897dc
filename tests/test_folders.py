"""A folder answers HEAD and GET: webdavclient3 checks folders with HEAD before mkdir and upload."""

from __future__ import annotations

import hashlib
from pathlib import Path

import requests

from tests.server import RunningServer, collection_dir


def test_head_and_get_of_folders_answer_200_with_an_escaped_listing(server: RunningServer, dav: requests.Session) -> None:
    assert dav.request("MKCOL", server.url + "/album").status_code == 201
    assert dav.put(server.url + "/album/a%20b.txt", data=b"one").status_code == 201
    # A name that would be markup, or break a line, in a naive listing.
    assert dav.put(server.url + "/album/%3Cscript%3Ex.txt", data=b"two").status_code == 201
    assert dav.request("MKCOL", server.url + "/album/sub").status_code == 201

    for path in ("/", "/album", "/album/"):
        head = dav.head(server.url + path)
        assert head.status_code == 200, path
        assert head.text == ""
    root = dav.get(server.url + "/")
    assert root.status_code == 200
    assert root.text == "album/\n"

    listing = dav.get(server.url + "/album/")
    assert listing.status_code == 200
    assert listing.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert listing.headers["X-Content-Type-Options"] == "nosniff"
    assert listing.text.splitlines() == ["%3Cscript%3Ex.txt", "a%20b.txt", "sub/"]
    assert int(dav.head(server.url + "/album/").headers["Content-Length"]) == len(listing.content)
    # The files are untouched.
    assert dav.get(server.url + "/album/a%20b.txt").content == b"one"


def test_browser_page_load_of_root_still_gets_the_gallery(server: RunningServer, dav: requests.Session) -> None:
    page = dav.get(server.url + "/", headers={"Accept": "text/html,*/*", "Sec-Fetch-Mode": "navigate",
                                              "Sec-Fetch-Dest": "document"}, allow_redirects=False)
    assert page.status_code in (301, 302, 303, 307, 308)
    assert page.headers["Location"].endswith("/ui/")


def test_head_of_missing_folder_is_404(server: RunningServer, dav: requests.Session) -> None:
    assert dav.head(server.url + "/nothing/").status_code == 404


def test_webdavclient3_mkdir_upload_list_download_copy_delete(server: RunningServer, tmp_path: Path) -> None:
    from webdav3.client import Client

    key_id, key = server.create_key()
    client = Client({"webdav_hostname": server.url + "/", "webdav_login": "any", "webdav_password": key, "webdav_timeout": 30})
    data = bytes(range(256)) * 400 + b"end"
    src = tmp_path / "photo.bin"
    src.write_bytes(data)

    client.mkdir("trip")
    assert client.check("trip/")
    client.upload_sync(remote_path="trip/photo.bin", local_path=str(src))
    listed = client.list("trip/")
    assert [n for n in listed if n.rstrip("/") != "trip"] == ["photo.bin"]
    out = tmp_path / "back.bin"
    client.download_sync(remote_path="trip/photo.bin", local_path=str(out))
    assert out.read_bytes() == data
    client.copy(remote_path_from="trip/photo.bin", remote_path_to="trip/copy.bin")
    assert sorted(n for n in client.list("trip/") if n.rstrip("/") != "trip") == ["copy.bin", "photo.bin"]
    client.clean("trip/photo.bin")
    assert not client.check("trip/photo.bin")

    stored = collection_dir(server, key_id) / "trip"
    assert sorted(p.name for p in stored.iterdir() if not p.name.startswith(".")) == ["copy.bin"]
    assert hashlib.sha256((stored / "copy.bin").read_bytes()).digest() == hashlib.sha256(data).digest()
