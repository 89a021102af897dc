"""WebDAV conditions and headers: foreign If resources, Depth and Destination, end to end."""

from __future__ import annotations

import pytest
import requests

from tests.server import RunningServer, collection_dir


@pytest.fixture
def owned(server: RunningServer) -> tuple[requests.Session, str]:
    key_id, key = server.create_key()
    session = requests.Session()
    session.auth = (key, "")
    assert session.put(server.url + "/c.txt", data=b"keep me").status_code == 201
    yield session, key_id
    session.close()


def _intact(server: RunningServer, session: requests.Session, key_id: str) -> None:
    assert session.get(server.url + "/c.txt").content == b"keep me"
    assert (collection_dir(server, key_id) / "c.txt").read_bytes() == b"keep me"


def foreign_tags(server: RunningServer) -> list[str]:
    port = server.port
    return [
        "http://other.invalid/c.txt",
        f"http://127.0.0.1:{port + 1 if port < 65535 else port - 1}/c.txt",  # another port
        f"https://127.0.0.1:{port}/c.txt",  # another scheme
        f"ftp://127.0.0.1:{port}/c.txt",
        "c.txt",  # a relative reference: not a Resource-Tag
        "../c.txt",
        "/../c.txt",
        "//other.invalid/c.txt",  # network-path reference
        f"http://user@other.invalid:{port}/c.txt",
    ]


@pytest.mark.parametrize("method", ["DELETE", "PUT", "MOVE"])
def test_if_on_a_foreign_resource_is_false_412(server: RunningServer, owned, method: str) -> None:
    session, key_id = owned
    for tag in foreign_tags(server):
        headers = {"If": f"<{tag}> (<opaquelocktoken:x>)", "Destination": server.url + "/moved.txt"}
        r = session.request(method, server.url + "/c.txt", headers=headers, data=b"overwritten" if method == "PUT" else None)
        assert r.status_code == 412, (tag, r.status_code, r.text)
        _intact(server, session, key_id)
    assert session.head(server.url + "/moved.txt").status_code == 404


def test_if_on_our_own_resource_still_evaluates(server: RunningServer, owned) -> None:
    session, key_id = owned
    etag = session.head(server.url + "/c.txt").headers["ETag"]
    # A false condition on this resource, tagged with our absolute URL: 412.
    r = session.delete(server.url + "/c.txt", headers={"If": f"<{server.url}/c.txt> ([\"nope\"])"})
    assert r.status_code == 412
    _intact(server, session, key_id)
    # A foreign list OR a true list on ours: true, the DELETE runs.
    r = session.delete(
        server.url + "/c.txt",
        headers={"If": f"<http://other.invalid/c.txt> (<opaquelocktoken:x>) </c.txt> ([{etag}])"},
    )
    assert r.status_code == 204
    assert not (collection_dir(server, key_id) / "c.txt").exists()


@pytest.mark.parametrize("depth", ["", "2", "one", "infinityy", "-1"])
@pytest.mark.parametrize("method", ["PROPFIND", "DELETE", "COPY", "LOCK", "GET"])
def test_bad_depth_is_400(server: RunningServer, owned, method: str, depth: str) -> None:
    session, key_id = owned
    r = session.request(method, server.url + "/c.txt", headers={"Depth": depth, "Destination": server.url + "/d.txt"})
    assert r.status_code == 400, (method, depth, r.status_code)
    _intact(server, session, key_id)
    assert session.head(server.url + "/d.txt").status_code == 404


@pytest.mark.parametrize(
    "destination",
    [
        "not a url",
        "d.txt",  # relative reference
        "%zz",
        "/d%2.txt",  # bad escape
        "/d%ff.txt",  # not UTF-8 once unescaped
        "http://[::1/d.txt",  # unparsable host
        "http://127.0.0.1:notaport/d.txt",
        "/a/../d.txt",
        "/d%00.txt",
        "",
    ],
)
@pytest.mark.parametrize("method", ["COPY", "MOVE"])
def test_malformed_destination_is_400(server: RunningServer, owned, method: str, destination: str) -> None:
    session, key_id = owned
    r = session.request(method, server.url + "/c.txt", headers={"Destination": destination})
    assert r.status_code == 400, (destination, r.status_code, r.text)
    _intact(server, session, key_id)


@pytest.mark.parametrize("destination", ["http://other.invalid/d.txt", "https://127.0.0.1:1/d.txt"])
def test_destination_on_another_server_is_502(server: RunningServer, owned, destination: str) -> None:
    session, key_id = owned
    r = session.request("COPY", server.url + "/c.txt", headers={"Destination": destination})
    assert r.status_code == 502
    _intact(server, session, key_id)


def test_well_formed_destination_still_works(server: RunningServer, owned) -> None:
    session, key_id = owned
    r = session.request("COPY", server.url + "/c.txt", headers={"Destination": server.url + "/d%20e.txt", "Depth": "0"})
    assert r.status_code == 201
    assert (collection_dir(server, key_id) / "d e.txt").read_bytes() == b"keep me"
    _intact(server, session, key_id)
