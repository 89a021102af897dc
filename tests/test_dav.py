"""End to end: a key's collection over WebDAV, against a real server."""

from __future__ import annotations

import os
import socket
import time
import xml.etree.ElementTree as ET
from typing import Any

import pytest
import requests

from tests.client import LOCK_BODY, hrefs, propfind
from tests.images import CORPUS
from tests.inprocess import request
from tests.server import RunningServer, ServerFactory, collection_dir
from uss_dav.services import Services
from uss_dav.storage import Store

DAV = "{DAV:}"


def set_prop(name: str, value: str) -> str:
    """A PROPPATCH body setting the dead property `name` in the namespace urn:x (prefix Z)."""
    return (
        '<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:x">'
        f"<D:set><D:prop><Z:{name}>{value}</Z:{name}></D:prop></D:set></D:propertyupdate>"
    )


def test_put_get_head_delete_round_trip_is_byte_exact(server: RunningServer, dav: requests.Session) -> None:
    body = os.urandom(300_000) + b"\x00end"
    r = dav.put(f"{server.url}/blob.bin", data=body)
    assert r.status_code == 201, r.text
    put_etag = r.headers["ETag"]

    got = dav.get(f"{server.url}/blob.bin")
    assert got.status_code == 200 and got.content == body
    assert got.headers["ETag"] == put_etag
    head = dav.head(f"{server.url}/blob.bin")
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == len(body)

    assert dav.put(f"{server.url}/blob.bin", data=b"second").status_code == 204
    assert dav.get(f"{server.url}/blob.bin").content == b"second"
    assert dav.delete(f"{server.url}/blob.bin").status_code == 204
    assert dav.get(f"{server.url}/blob.bin").status_code == 404


def test_range_request_returns_the_slice(server: RunningServer, dav: requests.Session) -> None:
    body = bytes(range(256)) * 100
    dav.put(f"{server.url}/r.bin", data=body)
    r = dav.get(f"{server.url}/r.bin", headers={"Range": "bytes=100-199"})
    assert r.status_code == 206 and r.content == body[100:200]


def test_zero_byte_put_and_subfolders(server: RunningServer, dav: requests.Session) -> None:
    assert dav.request("MKCOL", f"{server.url}/a").status_code == 201
    assert dav.request("MKCOL", f"{server.url}/a/b").status_code == 201
    assert dav.put(f"{server.url}/a/b/empty.png", data=b"").status_code == 201
    r = dav.get(f"{server.url}/a/b/empty.png")
    assert r.status_code == 200 and r.content == b""
    listing = propfind(dav, f"{server.url}/a/", "1")
    assert listing.status_code == 207
    assert hrefs(listing) == {"/a/", "/a/b/"}


def test_propfind_lists_members_with_size_and_etag(server: RunningServer, dav: requests.Session) -> None:
    dav.put(f"{server.url}/x.txt", data=b"12345")
    r = propfind(dav, f"{server.url}/", "1")
    assert r.status_code == 207
    tree = ET.fromstring(r.content)
    sizes = {
        resp.findtext(f"{DAV}href"): resp.findtext(f".//{DAV}getcontentlength")
        for resp in tree.iter(f"{DAV}response")
    }
    assert sizes["/x.txt"] == "5"
    etag = dav.head(f"{server.url}/x.txt").headers["ETag"].strip('"')
    assert etag in r.text


def test_propfind_with_empty_body_and_no_depth(server: RunningServer, dav: requests.Session) -> None:
    r = dav.request("PROPFIND", f"{server.url}/")
    assert r.status_code == 207


def test_move_and_copy_keep_bytes_and_dead_properties(server: RunningServer, dav: requests.Session) -> None:
    body = os.urandom(5000)
    dav.put(f"{server.url}/src.bin", data=body)
    assert dav.request("PROPPATCH", f"{server.url}/src.bin", data=set_prop("color", "blue")).status_code == 207

    r = dav.request("COPY", f"{server.url}/src.bin", headers={"Destination": f"{server.url}/copy.bin"})
    assert r.status_code == 201
    r = dav.request("MOVE", f"{server.url}/src.bin", headers={"Destination": f"{server.url}/moved.bin"})
    assert r.status_code == 201
    assert dav.get(f"{server.url}/src.bin").status_code == 404
    for name in ("copy.bin", "moved.bin"):
        assert dav.get(f"{server.url}/{name}").content == body
        props = propfind(dav, f"{server.url}/{name}", "0", (
            '<?xml version="1.0"?><D:propfind xmlns:D="DAV:" xmlns:Z="urn:x"><D:prop><Z:color/></D:prop></D:propfind>'
        ))
        assert "blue" in props.text, name


def test_move_folder_moves_members_and_their_properties(server: RunningServer, dav: requests.Session) -> None:
    dav.request("MKCOL", f"{server.url}/f")
    dav.put(f"{server.url}/f/in.txt", data=b"inside")
    dav.request("PROPPATCH", f"{server.url}/f/in.txt", data=set_prop("tag", "kept"))
    r = dav.request("MOVE", f"{server.url}/f", headers={"Destination": f"{server.url}/g"})
    assert r.status_code == 201
    assert dav.get(f"{server.url}/g/in.txt").content == b"inside"
    props = propfind(dav, f"{server.url}/g/in.txt", "0", (
        '<?xml version="1.0"?><D:propfind xmlns:D="DAV:" xmlns:Z="urn:x"><D:prop><Z:tag/></D:prop></D:propfind>'
    ))
    assert "kept" in props.text


def test_if_none_match_star_makes_put_create_only(server: RunningServer, dav: requests.Session) -> None:
    url = f"{server.url}/once.txt"
    assert dav.put(url, data=b"first", headers={"If-None-Match": "*"}).status_code == 201
    r = dav.put(url, data=b"second", headers={"If-None-Match": "*"})
    assert r.status_code == 412
    assert dav.get(url).content == b"first"


def test_if_match_star_makes_put_update_only(server: RunningServer, dav: requests.Session) -> None:
    url = f"{server.url}/update.txt"
    r = dav.put(url, data=b"nope", headers={"If-Match": "*"})
    assert r.status_code == 412
    assert dav.get(url).status_code == 404
    dav.put(url, data=b"v1")
    assert dav.put(url, data=b"v2", headers={"If-Match": "*"}).status_code == 204
    assert dav.get(url).content == b"v2"


def test_bad_requests_get_4xx_and_store_nothing(server: RunningServer, dav: requests.Session) -> None:
    dav.put(f"{server.url}/keep.txt", data=b"keep")
    dav.request("MKCOL", f"{server.url}/dir")
    cases = [
        ("PROPFIND", "/", {"Depth": "1"}, b"<D:propfind xmlns:D='DAV:'><D:prop>", 400),
        ("PROPPATCH", "/keep.txt", {}, b"<not-xml", 400),
        ("MKCOL", "/dir", {}, b"", 405),
        ("MKCOL", "/withbody", {"Content-Type": "text/plain"}, b"hello", 415),
        ("PUT", "/missing/parent.txt", {}, b"x", 409),
        ("PUT", "/dir", {}, b"x", 405),
        ("DELETE", "/nothing-here", {}, b"", 404),
    ]
    for method, path, headers, body, status in cases:
        r = dav.request(method, server.url + path, headers=headers, data=body)
        assert r.status_code == status, (method, path, r.status_code, r.text)
    assert dav.get(f"{server.url}/keep.txt").content == b"keep"
    assert dav.get(f"{server.url}/withbody").status_code == 404
    assert dav.get(f"{server.url}/missing/parent.txt").status_code == 404


def test_unknown_key_is_401_with_basic_challenge_and_stores_nothing(server: RunningServer, dav: requests.Session) -> None:
    r = requests.put(f"{server.url}/intruder.txt", data=b"x", auth=("uss_wrong", ""))
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith('Basic realm="uss_dav"')
    assert dav.get(f"{server.url}/intruder.txt").status_code == 404


def test_two_keys_never_see_each_others_files(server: RunningServer) -> None:
    a, b = requests.Session(), requests.Session()
    a.auth, b.auth = (server.create_key()[1], ""), (server.create_key()[1], "")
    a.put(f"{server.url}/mine.txt", data=b"A's secret")
    assert b.get(f"{server.url}/mine.txt").status_code == 404
    assert "/mine.txt" not in hrefs(propfind(b, f"{server.url}/", "1"))
    b.put(f"{server.url}/mine.txt", data=b"B's own")
    assert a.get(f"{server.url}/mine.txt").content == b"A's secret"


def test_two_keys_lock_the_same_path_independently(server: RunningServer) -> None:
    sessions = []
    for _ in range(2):
        s = requests.Session()
        s.auth = (server.create_key()[1], "")
        s.put(f"{server.url}/doc.txt", data=b"x")
        sessions.append(s)
    for s in sessions:
        r = s.request("LOCK", f"{server.url}/doc.txt", data=LOCK_BODY, headers={"Timeout": "Second-60"})
        assert r.status_code == 200, r.text
        assert s.put(f"{server.url}/doc.txt", data=b"y").status_code == 423


def test_a_201_has_no_status_page_and_a_locks_201_keeps_its_xml(server: RunningServer, dav: requests.Session) -> None:
    # WsgiDAV answers these with an HTML page naming its version, which `curl -T` printed.
    created = [
        dav.put(f"{server.url}/plain.bin", data=b"p"),
        dav.put(f"{server.url}/conditional.bin", data=b"c", headers={"If-None-Match": "*"}),
        dav.request("MKCOL", f"{server.url}/made"),
        dav.request("COPY", f"{server.url}/plain.bin", headers={"Destination": f"{server.url}/made/copied.bin"}),
        dav.request("MOVE", f"{server.url}/conditional.bin", headers={"Destination": f"{server.url}/made/moved.bin"}),
    ]
    for r in created:
        assert (r.status_code, r.content, r.headers["Content-Length"]) == (201, b"", "0"), (r.request.method, r.text)
        assert "Content-Type" not in r.headers
    assert "ETag" in created[0].headers and "ETag" in created[1].headers
    assert dav.get(f"{server.url}/made/moved.bin").content == b"c"
    lock = dav.request("LOCK", f"{server.url}/locked.bin", data=LOCK_BODY)
    assert lock.status_code == 201 and lock.headers["Content-Type"].startswith("application/xml")
    assert b"lockdiscovery" in lock.content


def test_lock_on_unmapped_url_creates_an_empty_file(server: RunningServer, dav: requests.Session) -> None:
    r = dav.request("LOCK", f"{server.url}/new.docx", data=LOCK_BODY)
    assert r.status_code in (200, 201), r.text
    token = r.headers["Lock-Token"]
    assert dav.get(f"{server.url}/new.docx").content == b""
    r = dav.put(f"{server.url}/new.docx", data=b"content", headers={"If": f"({token})"})
    assert r.status_code == 204
    assert dav.request("UNLOCK", f"{server.url}/new.docx", headers={"Lock-Token": token}).status_code == 204
    assert dav.get(f"{server.url}/new.docx").content == b"content"


def test_traversal_and_encoded_slashes_stay_inside_the_collection(server: RunningServer) -> None:
    victim = requests.Session()
    victim_id, victim_key = server.create_key()
    victim.auth = (victim_key, "")
    victim.put(f"{server.url}/secret.txt", data=b"victim")
    attacker = requests.Session()
    attacker.auth = (server.create_key()[1], "")
    for path in (
        f"/../{victim_id}/secret.txt",
        f"/%2e%2e/{victim_id}/secret.txt",
        f"/..%2f{victim_id}%2fsecret.txt",
        f"/%2e%2e%2f%2e%2e%2fcollections%2f{victim_id}%2fsecret.txt",
        f"/..%5c{victim_id}%5csecret.txt",
    ):
        r = attacker.get(server.url + path)
        assert r.status_code in (400, 403, 404), (path, r.status_code)
        assert b"victim" not in r.content
    for dest in (
        f"{server.url}/../{victim_id}/stolen.txt",
        f"{server.url}/%2e%2e/{victim_id}/stolen.txt",
        f"http://other.example/{victim_id}/stolen.txt",
    ):
        attacker.put(f"{server.url}/mine.txt", data=b"attacker")
        r = attacker.request("MOVE", f"{server.url}/mine.txt", headers={"Destination": dest})
        assert r.status_code in (201, 204, 400, 403, 502), (dest, r.status_code)
    assert sorted(os.listdir(collection_dir(server, victim_id))) == ["secret.txt"]
    assert victim.get(f"{server.url}/secret.txt").content == b"victim"


def test_symlink_planted_in_a_collection_is_not_followed(server: RunningServer) -> None:
    victim_id, victim_key = server.create_key()
    requests.put(f"{server.url}/secret.txt", data=b"victim", auth=(victim_key, ""))
    attacker_id, attacker_key = server.create_key()
    attacker = requests.Session()
    attacker.auth = (attacker_key, "")
    attacker_dir = collection_dir(server, attacker_id)
    os.symlink(collection_dir(server, victim_id), attacker_dir / "link")
    os.symlink(collection_dir(server, victim_id) / "secret.txt", attacker_dir / "file-link")
    for path in ("/link/secret.txt", "/file-link", "/link/"):
        r = attacker.get(server.url + path)
        assert r.status_code in (403, 404), (path, r.status_code)
        assert b"victim" not in r.content
    assert attacker.put(f"{server.url}/link/new.txt", data=b"x").status_code in (403, 409)
    assert attacker.put(f"{server.url}/file-link", data=b"x").status_code in (403, 409, 405)
    listing = propfind(attacker, f"{server.url}/", "1")
    assert "link" not in listing.text
    assert os.listdir(collection_dir(server, victim_id)) == ["secret.txt"]
    assert requests.get(f"{server.url}/secret.txt", auth=(victim_key, "")).content == b"victim"


def test_client_that_disconnects_mid_upload_leaves_previous_version(server: RunningServer, dav: requests.Session) -> None:
    key = dav.auth[0]  # type: ignore[index]
    dav.put(f"{server.url}/photo.bin", data=b"old version")
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        import base64

        auth = base64.b64encode(f"{key}:".encode()).decode()
        sock.sendall(
            f"PUT /photo.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\n"
            f"Content-Length: 1000000\r\n\r\n".encode() + b"partial" * 1000
        )
        time.sleep(0.3)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and os.listdir(server.data_dir / "staging"):
        time.sleep(0.1)
    assert dav.get(f"{server.url}/photo.bin").content == b"old version"
    assert os.listdir(server.data_dir / "staging") == []


def test_dead_properties_and_files_survive_a_restart(make_server: ServerFactory) -> None:
    srv = make_server()
    key = srv.create_key()[1]
    s = requests.Session()
    s.auth = (key, "")
    s.put(f"{srv.url}/p.txt", data=b"persist")
    s.request("PROPPATCH", f"{srv.url}/p.txt", data=set_prop("note", "survives"))
    srv.stop()
    (srv.data_dir / "staging" / "deadbeef.part").write_bytes(b"torn upload")
    srv.start()
    assert s.get(f"{srv.url}/p.txt").content == b"persist"
    props = propfind(s, f"{srv.url}/p.txt", "0", (
        '<?xml version="1.0"?><D:propfind xmlns:D="DAV:" xmlns:Z="urn:x"><D:prop><Z:note/></D:prop></D:propfind>'
    ))
    assert "survives" in props.text
    assert os.listdir(srv.data_dir / "staging") == []


def test_options_advertises_class_2_and_write_methods(server: RunningServer, dav: requests.Session) -> None:
    r = dav.options(f"{server.url}/")
    assert r.status_code == 200
    assert r.headers["DAV"].replace(" ", "").startswith("1,2")
    assert r.headers["MS-Author-Via"] == "DAV"
    for method in ("PROPFIND", "LOCK", "PROPPATCH", "COPY", "MOVE"):
        assert method in r.headers["Allow"]
    unmapped = dav.options(f"{server.url}/new-name.png")
    for method in ("PUT", "MKCOL"):
        assert method in unmapped.headers["Allow"]


def test_move_onto_a_file_replaces_it_with_its_properties_thumbnails_and_locks(server: RunningServer) -> None:
    key_id, key = server.create_key()
    dav, url = requests.Session(), server.url
    dav.auth = (key, "")
    new, old = (CORPUS / "rgba.png").read_bytes(), (CORPUS / "static.gif").read_bytes()
    for name, body in (("new.png", new), ("old.gif", old)):
        assert dav.put(f"{url}/{name}", data=body).status_code == 201
        assert dav.request("PROPPATCH", f"{url}/{name}", data=set_prop("note", name)).status_code == 207
    assert dav.get(f"{url}/api/v1/images/old.gif/thumbnail", params={"size": 32}).status_code == 200
    thumbs = server.data_dir / "thumbs" / key_id
    assert len(list(thumbs.iterdir())) == 1
    r = dav.request("MOVE", f"{url}/new.png", headers={"Destination": f"{url}/old.gif", "Overwrite": "T"})
    assert r.status_code == 204, r.text
    assert dav.get(f"{url}/old.gif").content == new and dav.get(f"{url}/new.png").status_code == 404
    note = propfind(dav, f"{url}/old.gif", "0", '<D:propfind xmlns:D="DAV:"><D:prop><Z:note xmlns:Z="urn:x"/></D:prop></D:propfind>')
    assert ">new.png</Z:note>" in note.text and ">old.gif</Z:note>" not in note.text, note.text
    assert list(thumbs.iterdir()) == [], "the replaced image's thumbnails went with it"
    # A locked target: refused without its token; with it, replaced, and the lock went with the old file.
    assert dav.put(f"{url}/locked.gif", data=old).status_code == 201
    token = dav.request("LOCK", f"{url}/locked.gif", data=LOCK_BODY).headers["Lock-Token"]
    assert dav.put(f"{url}/mover.png", data=new).status_code == 201
    move = {"Destination": f"{url}/locked.gif"}
    assert dav.request("MOVE", f"{url}/mover.png", headers=move).status_code == 423
    assert dav.get(f"{url}/locked.gif").content == old
    assert dav.request("MOVE", f"{url}/mover.png", headers={**move, "If": f"<{url}/locked.gif> ({token})"}).status_code == 204
    assert dav.get(f"{url}/locked.gif").content == new
    assert dav.put(f"{url}/locked.gif", data=b"no token needed").status_code == 204
    # Onto a new name it is still a 201.
    assert dav.request("MOVE", f"{url}/locked.gif", headers={"Destination": f"{url}/fresh.gif"}).status_code == 201


def test_move_onto_a_file_never_deletes_the_target_first(served: tuple[Any, str, Services], monkeypatch: pytest.MonkeyPatch) -> None:
    # WsgiDAV deletes an existing target, then renames: a reader between the two got a 404.
    app, key, _ = served
    deleted: list[str] = []
    real = Store.delete
    monkeypatch.setattr(Store, "delete", lambda self, cid, rel: (deleted.append(rel), real(self, cid, rel))[1])
    for name in ("from.txt", "onto.txt"):
        assert request(app, key, "PUT", f"/{name}", name.encode())[0].startswith("201")
    status = request(app, key, "MOVE", "/from.txt", destination="http://localhost/onto.txt", overwrite="T")[0]
    assert status == "204 No Content" and deleted == []
    assert request(app, key, "GET", "/onto.txt")[2] == b"from.txt"
