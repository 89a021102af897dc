"""REST writes honour WebDAV locks: 423 without the lock token, success with it."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from tests.client import LOCK_BODY
from tests.server import RunningServer, collection_dir

CORPUS = Path(__file__).resolve().parent / "data" / "corpus"
PNG = (CORPUS / "rgba.png").read_bytes()
GIF = (CORPUS / "static.gif").read_bytes()


class Collection:
    def __init__(self, server: RunningServer) -> None:
        self.server = server
        self.key_id, key = server.create_key("--compression", "off")
        self.http = requests.Session()
        self.http.auth = (key, "")
        self.api = server.url + "/api/v1"

    def upload(self, name: str, data: bytes = PNG) -> None:
        r = self.http.post(f"{self.api}/images", params={"name": name}, data=data)
        assert r.status_code == 201, r.text

    def lock(self, path: str, depth: str = "0") -> str:
        r = self.http.request("LOCK", self.server.url + path, data=LOCK_BODY, headers={"Depth": depth, "Timeout": "Second-600"})
        assert r.status_code in (200, 201), r.text
        return r.headers["Lock-Token"]

    def stored(self, name: str) -> bytes | None:
        path = collection_dir(self.server, self.key_id) / name
        return path.read_bytes() if path.exists() else None


@pytest.fixture
def col(server: RunningServer):
    c = Collection(server)
    yield c
    c.http.close()


def _locked(r: requests.Response) -> None:
    assert r.status_code == 423, (r.status_code, r.text)
    assert r.headers["Content-Type"] == "application/problem+json"
    assert "locked" in r.json()["detail"]


def test_rest_writes_to_a_locked_image_are_423_and_change_nothing(col: Collection) -> None:
    col.upload("a.png")
    col.upload("other.png", GIF)
    col.lock("/a.png")

    _locked(col.http.delete(f"{col.api}/images/a.png"))
    _locked(col.http.patch(f"{col.api}/images/a.png", data=GIF))
    _locked(col.http.post(f"{col.api}/images/a.png/rename", json={"name": "b.png"}))  # source side
    _locked(col.http.post(f"{col.api}/images/other.png/rename", json={"name": "a.png"}))  # destination side
    _locked(col.http.post(f"{col.api}/images", params={"name": "a.png"}, data=GIF))  # over the locked name
    # The same rule as WebDAV's: its PUT is refused too.
    assert col.http.put(col.server.url + "/a.png", data=GIF).status_code == 423

    assert col.stored("a.png") == PNG
    assert col.stored("other.png") == GIF
    assert col.stored("b.png") is None
    # Unlocked neighbours are still writable.
    assert col.http.delete(f"{col.api}/images/other.png").status_code == 204


@pytest.mark.parametrize("header", ["If", "Lock-Token"])
def test_rest_writes_with_the_lock_token_succeed(col: Collection, header: str) -> None:
    col.upload("a.png")
    token = col.lock("/a.png")
    carry = {"If": f"({token})"} if header == "If" else {"Lock-Token": token}
    r = col.http.patch(f"{col.api}/images/a.png", data=GIF, headers=carry)
    assert r.status_code == 200, r.text
    assert col.stored("a.png") == GIF
    # A wrong token is no token.
    _locked(col.http.delete(f"{col.api}/images/a.png", headers={"Lock-Token": "<opaquelocktoken:wrong>"}))
    assert col.http.delete(f"{col.api}/images/a.png", headers=carry).status_code == 204
    assert col.stored("a.png") is None


def test_new_name_in_a_depth_infinity_locked_collection_is_423(col: Collection) -> None:
    col.upload("a.png")
    token = col.lock("/", depth="infinity")
    _locked(col.http.post(f"{col.api}/images", params={"name": "new.png"}, data=PNG))
    files = {"file": ("new2.png", PNG, "image/png")}
    _locked(col.http.post(f"{col.api}/images", files=files))
    _locked(col.http.delete(f"{col.api}/images/a.png"))
    assert col.stored("new.png") is None and col.stored("new2.png") is None
    assert col.stored("a.png") == PNG
    r = col.http.post(f"{col.api}/images", params={"name": "new.png"}, data=PNG, headers={"If": f"({token})"})
    assert r.status_code == 201, r.text
    assert col.stored("new.png") == PNG


def test_another_keys_lock_on_the_same_name_does_not_block(server: RunningServer, col: Collection) -> None:
    other = Collection(server)
    other.upload("a.png")
    other.lock("/a.png")
    col.upload("a.png")
    assert col.http.delete(f"{col.api}/images/a.png").status_code == 204
    assert other.stored("a.png") == PNG
