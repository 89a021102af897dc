"""The REST API under /api/v1, end to end against a running server.

Every request to /api/v1 goes through ValidatedSession, so each response of
this file is also checked against the OpenAPI document. A few behaviours that
need a client address or settings the shared server cannot have (a remote
client, tiny limits) run in-process against the same WSGI app.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import tracemalloc
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
from PIL import Image
from werkzeug.test import Client, EnvironBuilder, run_wsgi_app

from tests.openapi import ValidatedSession, assert_documented_in_process
from tests.server import ADMIN_TOKEN, ROOT, RunningServer, write_config
from uss_dav.app import build_app
from uss_dav.config import load_config
from uss_dav.rest.access import is_loopback
from uss_dav.rest.thumbnails import Undecodable, render
from uss_dav.services import open_services

CORPUS = ROOT / "tests" / "data" / "corpus"
PROBLEM = "application/problem+json"
CHALLENGE = re.compile(r'^Basic realm="uss_dav"', re.IGNORECASE)


# --- helpers -------------------------------------------------------------------------


def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (12, 8), color: Any = (200, 30, 30), **save: Any) -> bytes:
    mode = "RGBA" if fmt == "PNG" and isinstance(color, tuple) and len(color) == 4 else "RGB"
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, fmt, **save)
    return buf.getvalue()


def noisy_png(size: tuple[int, int] = (64, 48), seed: int = 1) -> bytes:
    """An unoptimized PNG (zlib level 0) with some structure: lossless compression shrinks it."""
    image = Image.new("RGB", size)
    image.putdata([((x * 7 + seed) % 256, (y * 5) % 256, ((x ^ y) * 3) % 256) for y in range(size[1]) for x in range(size[0])])
    buf = io.BytesIO()
    image.save(buf, "PNG", compress_level=0)
    return buf.getvalue()


def pixels(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGBA").tobytes()


def assert_problem(r: requests.Response, status: int, detail: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, f"{r.status_code} {r.text[:300]}"
    assert r.headers["Content-Type"] == PROBLEM
    body = r.json()
    assert body["status"] == status and body["title"] and body["detail"]
    if detail:
        assert detail in body["detail"], body["detail"]
    return body


class Api:
    """One key's view of the REST API: a validated session and URL helpers."""

    def __init__(self, server: RunningServer, key: str, key_id: str) -> None:
        self.server, self.key, self.id = server, key, key_id
        self.base = f"{server.url}/api/v1"
        self.session = ValidatedSession(auth=(key, ""))

    def url(self, name: str, suffix: str = "") -> str:
        return f"{self.base}/images/{quote(name, safe='')}{suffix}"

    def post_raw(self, name: str, data: bytes, **kwargs: Any) -> requests.Response:
        return self.session.post(f"{self.base}/images", params={"name": name}, data=data, **kwargs)

    def post_files(self, *files: tuple[str, bytes]) -> requests.Response:
        return self.session.post(f"{self.base}/images", files=[("file", (n, d)) for n, d in files])

    def put_dav(self, name: str, data: bytes) -> requests.Response:
        return requests.put(f"{self.server.url}/{quote(name)}", data=data, auth=(self.key, ""), timeout=30)

    def get_dav(self, name: str) -> requests.Response:
        return requests.get(f"{self.server.url}/{quote(name)}", auth=(self.key, ""), timeout=30)


def new_key(server: RunningServer, **body: Any) -> tuple[str, str]:
    """(id, key) made through POST /api/v1/keys (the test client is loopback; no admin token is set)."""
    r = ValidatedSession().post(f"{server.url}/api/v1/keys", json=body or None)
    assert r.status_code == 201, r.text
    return r.json()["id"], r.json()["key"]


@pytest.fixture
def api(server: RunningServer) -> Iterator[Api]:
    key_id, key = new_key(server, label="rest test")
    api = Api(server, key, key_id)
    yield api
    api.session.close()


class LoopbackClient(Client):
    """Werkzeug's test client, calling from 127.0.0.1 unless told otherwise; every answer checked against the document."""

    def open(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("environ_base", {"REMOTE_ADDR": "127.0.0.1"})
        response = super().open(*args, **kwargs)
        assert_documented_in_process(response)
        return response


def local_client(tmp_path: Path, **config: Any) -> Client:
    """The whole app in-process (no compressor), for client addresses and limits a real server can't fake."""
    services = open_services(load_config(None, {"data_dir": tmp_path / "data", **config}, environ={}), with_hook=False)
    return LoopbackClient(build_app(services))


# --- service ---------------------------------------------------------------------------


def test_ping_needs_no_key_and_tells_the_version(server: RunningServer) -> None:
    r = ValidatedSession().get(f"{server.url}/api/v1/ping")
    assert r.status_code == 200 and r.json() == {"status": "ok", "version": "0.1.0"}


def test_unknown_endpoint_and_wrong_method_are_problem_json(api: Api) -> None:
    assert_problem(requests.get(f"{api.base}/nothing-here", timeout=10), 404)
    r = requests.put(f"{api.base}/images", auth=(api.key, ""), timeout=10)
    assert_problem(r, 405)
    assert set(r.headers["Allow"].replace(" ", "").split(",")) >= {"GET", "POST"}


def test_usage_counts_the_keys_files_and_bytes_with_no_quota(api: Api) -> None:
    assert api.session.get(f"{api.base}/usage").json() == {"files": 0, "bytes": 0, "quota": None}
    api.post_raw("a.png", image_bytes())
    api.put_dav("b.txt", b"12345")
    usage = api.session.get(f"{api.base}/usage").json()
    stored = sum(p.stat().st_size for p in (api.server.data_dir / "collections" / api.id).iterdir())
    assert usage == {"files": 2, "bytes": stored, "quota": None}


# --- authentication ----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/images", "/images/x.png", "/images/x.png/meta", "/usage"])
def test_no_key_or_a_wrong_key_is_401_with_a_basic_challenge(server: RunningServer, path: str) -> None:
    session = ValidatedSession()
    for auth in (None, ("uss_wrong", ""), ("user", "uss_wrong")):
        r = session.get(f"{server.url}/api/v1{path}", auth=auth)
        assert_problem(r, 401)
        assert CHALLENGE.match(r.headers["WWW-Authenticate"])


def test_a_wrong_bearer_key_gets_a_bearer_challenge_so_browsers_show_no_login_dialog(server: RunningServer) -> None:
    r = ValidatedSession().get(f"{server.url}/api/v1/images", headers={"Authorization": "Bearer uss_wrong"})
    assert_problem(r, 401)
    assert r.headers["WWW-Authenticate"].startswith('Bearer realm="uss_dav"')


def test_bearer_and_basic_user_or_password_all_authenticate(api: Api) -> None:
    for kwargs in ({"auth": (api.key, "")}, {"auth": ("anyone", api.key)},
                   {"headers": {"Authorization": f"Bearer {api.key}"}}):
        r = ValidatedSession().get(f"{api.base}/images", **kwargs)  # type: ignore[arg-type]
        assert r.status_code == 200, kwargs


def test_read_only_and_upload_only_keys_are_held_to_their_scope(server: RunningServer) -> None:
    ro_id, ro_key = server.create_key("--scope", "ro")
    up_id, up_key = server.create_key("--scope", "upload")
    ro, up = Api(server, ro_key, ro_id), Api(server, up_key, up_id)
    assert ro.session.get(f"{ro.base}/images").status_code == 200
    assert_problem(ro.post_raw("a.png", image_bytes()), 403, "scope")
    assert up.post_raw("a.png", image_bytes()).status_code == 201
    assert_problem(up.session.patch(up.url("a.png"), data=image_bytes(color="blue")), 403)
    assert_problem(up.session.delete(up.url("a.png")), 403)
    assert up.get_dav("a.png").status_code == 403  # WebDAV agrees


# --- keys ------------------------------------------------------------------------------------


def test_create_key_is_201_shows_the_key_once_and_it_works_for_dav_and_rest(server: RunningServer) -> None:
    session = ValidatedSession()
    r = session.post(f"{server.url}/api/v1/keys", json={"label": "alice", "compression": "exact"})
    assert r.status_code == 201
    body = r.json()
    assert set(body) >= {"id", "key", "label", "created"} and body["label"] == "alice"
    assert body["compression"] == "exact" and body["key"].startswith("uss_")
    assert (server.data_dir / "collections" / body["id"]).is_dir()
    assert requests.request("PROPFIND", f"{server.url}/", auth=(body["key"], ""), headers={"Depth": "0"},
                            timeout=10).status_code == 207
    listed = session.get(f"{server.url}/api/v1/keys").json()["keys"]
    mine = [k for k in listed if k["id"] == body["id"]]
    assert mine and mine[0]["label"] == "alice" and mine[0]["files"] == 0
    assert body["key"] not in json.dumps(listed)  # never shown again


def test_create_key_with_an_empty_body_gets_defaults(server: RunningServer) -> None:
    r = ValidatedSession().post(f"{server.url}/api/v1/keys")
    # The key records the mode it is made with: the configured default.
    assert r.status_code == 201 and r.json()["label"] == "" and r.json()["compression"] == "exact"


def test_finder_files_stored_over_webdav_are_not_listed_as_images(api: Api, server: RunningServer) -> None:
    assert api.post_raw("real.png", noisy_png(seed=3)).status_code == 201
    for name in ("._real.png", ".DS_Store"):
        assert requests.put(f"{server.url}/{name}", data=b"\x00\x05\x16\x07", auth=api.session.auth, timeout=10).status_code == 201
    names = [image["name"] for image in api.session.get(f"{api.base}/images").json()["images"]]
    assert names == ["real.png"]


def test_rename_moves_the_image_and_never_over_another(api: Api) -> None:
    png = noisy_png(seed=7)
    assert api.post_raw("a.png", png).status_code == 201
    assert api.post_raw("b.png", noisy_png(seed=8)).status_code == 201
    r = api.session.post(api.url("a.png", "/rename"), json={"name": "c.png"})
    assert r.status_code == 200 and r.json()["name"] == "c.png"
    assert api.session.get(api.url("a.png")).status_code == 404
    assert pixels(api.session.get(api.url("c.png")).content) == pixels(png)
    assert_problem(api.session.post(api.url("c.png", "/rename"), json={"name": "b.png"}), 409)
    assert pixels(api.session.get(api.url("b.png")).content) == pixels(noisy_png(seed=8))
    assert_problem(api.session.post(api.url("nope.png", "/rename"), json={"name": "d.png"}), 404)
    assert_problem(api.session.post(api.url("c.png", "/rename"), json={"name": "../x.png"}), 400)


def test_create_key_takes_scope_expiry_and_quota(server: RunningServer) -> None:
    _id, ro = new_key(server, scope="ro", expires="30d", quota_bytes=1000)
    assert requests.request("PROPFIND", f"{server.url}/", auth=(ro, ""), headers={"Depth": "0"}, timeout=10).status_code == 207
    assert requests.put(f"{server.url}/x.txt", data=b"x", auth=(ro, ""), timeout=10).status_code == 403
    _id, limited = new_key(server, quota_bytes=10)
    assert requests.put(f"{server.url}/x.txt", data=b"y" * 11, auth=(limited, ""), timeout=10).status_code == 507
    _id, old = new_key(server, expires="2000-01-01T00:00:00Z")
    assert requests.get(f"{server.url}/", auth=(old, ""), timeout=10).status_code == 401
    for bad in ({"scope": "admin"}, {"scope": 0}, {"expires": "soon"}, {"quota_bytes": -1}, {"quota_files": "many"}):
        assert_problem(ValidatedSession().post(f"{server.url}/api/v1/keys", json=bad), 400)


def test_create_key_refuses_an_oversized_body_with_413(server: RunningServer) -> None:
    r = ValidatedSession().post(f"{server.url}/api/v1/keys", data=b" " * 70_000,
                                headers={"Content-Type": "application/json"})
    assert_problem(r, 413)


@pytest.mark.parametrize(
    "body, detail",
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (json.dumps({"label": 5}).encode(), "label"),
        (json.dumps({"label": "x" * 201}).encode(), "label"),
        (json.dumps({"compression": "zip"}).encode(), "compression"),
        (json.dumps({"label": "a", "colour": "red"}).encode(), "unknown field"),
        (b"[" * 50_000, "nested too deeply"),
        (b"\xff\xfe not utf-8", "not valid JSON"),
    ],
)
def test_create_key_refuses_a_bad_body_with_400(server: RunningServer, body: bytes, detail: str) -> None:
    before = len(list((server.data_dir / "keys").glob("*.json")))
    r = ValidatedSession().post(f"{server.url}/api/v1/keys", data=body, headers={"Content-Type": "application/json"})
    assert_problem(r, 400, detail)
    assert len(list((server.data_dir / "keys").glob("*.json"))) == before


def test_rotate_gives_a_new_key_and_the_old_one_is_refused_by_dav_and_rest_at_once(api: Api) -> None:
    api.post_raw("kept.png", image_bytes())
    r = api.session.post(f"{api.base}/keys/rotate")
    assert r.status_code == 200
    new = r.json()["key"]
    assert new != api.key and r.json()["id"] == api.id
    assert_problem(api.session.get(f"{api.base}/images"), 401)
    assert api.get_dav("kept.png").status_code == 401
    assert requests.get(f"{api.server.url}/kept.png", auth=(new, ""), timeout=10).status_code == 200
    names = ValidatedSession(auth=(new, "")).get(f"{api.base}/images").json()["images"]
    assert [i["name"] for i in names] == ["kept.png"]


def test_rotate_without_a_key_is_401(server: RunningServer) -> None:
    r = ValidatedSession().post(f"{server.url}/api/v1/keys/rotate")
    assert_problem(r, 401)
    assert CHALLENGE.match(r.headers["WWW-Authenticate"])


def test_revoke_refuses_the_key_and_keeps_the_collection_unless_purged(api: Api) -> None:
    api.post_raw("a.png", image_bytes())
    collection = api.server.data_dir / "collections" / api.id
    session = ValidatedSession()
    assert session.delete(f"{api.base}/keys/{api.id}").status_code == 204
    assert api.get_dav("a.png").status_code == 401
    assert_problem(api.session.get(f"{api.base}/images"), 401)
    assert (collection / "a.png").is_file()
    assert_problem(session.delete(f"{api.base}/keys/{api.id}"), 404)

    other_id, _key = new_key(api.server)
    assert_problem(session.delete(f"{api.base}/keys/{other_id}", params={"purge": "maybe"}), 400)
    assert session.delete(f"{api.base}/keys/{other_id}", params={"purge": "true"}).status_code == 204
    assert not (api.server.data_dir / "collections" / other_id).exists()


def test_with_an_admin_token_key_management_needs_it_even_from_loopback(admin_server: RunningServer) -> None:
    base, session = f"{admin_server.url}/api/v1", ValidatedSession()
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    for headers in ({}, {"Authorization": "Bearer not-the-token"}):
        for method, path in (("POST", "/keys"), ("GET", "/keys"), ("DELETE", "/keys/abc")):
            r = session.request(method, base + path, headers=headers)
            assert_problem(r, 401)
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
    created = session.post(f"{base}/keys", headers=admin, json={"label": "by admin"})
    assert created.status_code == 201
    key = created.json()["key"]
    # An API key is not an admin token.
    assert_problem(session.get(f"{base}/keys", headers={"Authorization": f"Bearer {key}"}), 401)
    assert any(k["label"] == "by admin" for k in session.get(f"{base}/keys", headers=admin).json()["keys"])
    assert session.delete(f"{base}/keys/{created.json()['id']}", headers=admin).status_code == 204


def test_without_an_admin_token_only_loopback_clients_manage_keys(tmp_path: Path) -> None:
    client = local_client(tmp_path)
    for remote in ("192.0.2.7", "10.1.2.3", "2001:db8::1"):
        r = client.post("/api/v1/keys", json={}, environ_base={"REMOTE_ADDR": remote})
        assert r.status_code == 403 and r.content_type == PROBLEM and "loopback" in r.json["detail"]
        assert client.get("/api/v1/keys", environ_base={"REMOTE_ADDR": remote}).status_code == 403
    for local in ("127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1"):
        assert client.post("/api/v1/keys", json={}, environ_base={"REMOTE_ADDR": local}).status_code == 201


def test_loopback_client_addresses() -> None:
    assert all(map(is_loopback, ["127.0.0.1", "127.255.0.1", "::1", "::ffff:127.0.0.2"]))
    assert not any(map(is_loopback, ["10.0.0.1", "192.168.1.1", "::", "0.0.0.0", "", None, "nonsense"]))


def test_repeated_wrong_keys_get_429_with_retry_after(tmp_path: Path) -> None:
    client = local_client(tmp_path, auth_failure_limit=2)
    wrong = {"Authorization": "Bearer uss_wrong"}
    assert [client.get("/api/v1/images", headers=wrong).status_code for _ in range(3)] == [401, 401, 429]
    r = client.get("/api/v1/images", headers=wrong)
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1 and r.content_type == PROBLEM


# --- images: create ------------------------------------------------------------------------


def test_post_raw_body_is_201_with_location_and_the_record(api: Api) -> None:
    data = image_bytes("JPEG", (30, 20))
    r = api.post_raw("photo.jpg", data, headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 201
    (record,) = r.json()["images"]
    assert r.headers["Location"] == record["url"] == api.url("photo.jpg")
    assert (record["name"], record["content_type"], record["width"], record["height"]) == ("photo.jpg", "image/jpeg", 30, 20)
    assert record["uploaded_size"] == len(data)
    got = api.session.get(record["url"])
    assert got.status_code == 200 and got.headers["ETag"] == record["etag"] and len(got.content) == record["size"]


def test_post_multipart_stores_every_file_part(api: Api) -> None:
    files = [(f"img{i}.png", image_bytes(color=(i * 40, 0, 0))) for i in range(3)] + [("g.gif", image_bytes("GIF"))]
    r = api.post_files(*files)
    assert r.status_code == 201
    assert [i["name"] for i in r.json()["images"]] == [n for n, _ in files]
    assert r.headers["Location"] == api.url("img0.png")
    for name, data in files:
        assert pixels(api.session.get(api.url(name)).content) == pixels(data)


def test_post_multipart_streams_a_large_part_without_holding_it(api: Api) -> None:
    big = Image.frombytes("RGB", (1200, 900), os.urandom(1200 * 900 * 3))
    buf = io.BytesIO()
    big.save(buf, "BMP")
    data = buf.getvalue()  # ~3 MB: many reads of the multipart decoder
    r = api.post_files(("big.bmp", data), ("small.png", image_bytes()))
    assert r.status_code == 201
    assert pixels(api.session.get(api.url("big.bmp")).content) == pixels(data)


def test_post_an_existing_name_is_409_and_keeps_the_old_image(api: Api) -> None:
    first = image_bytes(color="red")
    api.post_raw("a.png", first)
    assert_problem(api.post_raw("a.png", image_bytes(color="blue")), 409, "exists")
    assert_problem(api.post_files(("a.png", image_bytes(color="green"))), 409)
    assert pixels(api.get_dav("a.png").content) == pixels(first)


def test_post_with_one_bad_part_stores_none_of_them(api: Api) -> None:
    r = api.post_files(("ok1.png", image_bytes()), ("bad.png", b"not an image at all"), ("ok2.png", image_bytes()))
    assert_problem(r, 415)
    r = api.post_files(("dup.png", image_bytes()), ("dup.png", image_bytes(color="blue")))
    assert_problem(r, 409)
    assert api.session.get(f"{api.base}/images").json()["images"] == []
    assert list((api.server.data_dir / "collections" / api.id).iterdir()) == []


@pytest.mark.parametrize(
    "data",
    [b"", b"hello, plain text", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, (CORPUS / "notes.txt").read_bytes()],
    ids=["empty", "text", "png-signature-only", "corpus-notes"],
)
def test_post_anything_but_an_image_is_415(api: Api, data: bytes) -> None:
    assert_problem(api.post_raw("x.png", data), 415)
    assert api.session.get(api.url("x.png")).status_code == 404


def test_post_a_decompression_bomb_is_413(api: Api) -> None:
    assert_problem(api.post_raw("bomb.png", (CORPUS / "bomb.png").read_bytes()), 413, "pixel")


@pytest.mark.parametrize(
    "name, detail",
    [
        ("a/b.png", "'/'"),
        ("..", "'..'"),
        ("x..y.png", "'..'"),
        ("tab\there.png", "control character"),
        ("del\x7f.png", "control character"),
        ("é" * 126 + ".png", "longer than 250 bytes"),
        ("", "empty"),
    ],
)
def test_post_bad_names_are_400_with_a_reason(api: Api, name: str, detail: str) -> None:
    assert_problem(api.post_raw(name, image_bytes()), 400, detail)
    assert_problem(api.post_files((name, image_bytes())) if name else api.post_files(("", image_bytes())), 400)


def test_names_are_stored_in_nfc_and_found_in_either_form(api: Api) -> None:
    nfc, nfd = unicodedata.normalize("NFC", "Réunion.png"), unicodedata.normalize("NFD", "Réunion.png")
    r = api.post_raw(nfd, image_bytes())
    assert r.status_code == 201 and r.json()["images"][0]["name"] == nfc
    assert api.session.get(api.url(nfc)).status_code == 200 and api.session.get(api.url(nfd)).status_code == 200
    assert_problem(api.post_raw(nfc, image_bytes()), 409)
    assert api.get_dav(nfc).status_code == 200


def test_post_a_raw_body_without_name_or_a_form_without_file_is_400(api: Api) -> None:
    assert_problem(api.session.post(f"{api.base}/images", data=image_bytes()), 400, "?name=")
    assert_problem(api.session.post(f"{api.base}/images", files=[("photo", ("a.png", image_bytes()))]), 400, "'file'")
    r = api.session.post(f"{api.base}/images", params={"name": "a.png"}, files=[("file", ("a.png", image_bytes()))])
    assert_problem(r, 400, "?name=")


def test_malformed_multipart_bodies_are_400_not_500(api: Api) -> None:
    cases = [
        ("multipart/form-data", image_bytes()),  # no boundary
        ("multipart/form-data; boundary=XyZ", b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n\r\n\x89PNG"),
        ("multipart/form-data; boundary=XyZ", b"--XyZ\r\nX-No-Disposition: 1\r\n\r\ndata\r\n--XyZ--\r\n"),
    ]
    for content_type, body in cases:
        r = api.session.post(f"{api.base}/images", data=body, headers={"Content-Type": content_type})
        assert_problem(r, 400)
    assert api.session.get(f"{api.base}/images").json()["images"] == []


def test_compression_applies_to_rest_uploads_as_to_dav(server: RunningServer) -> None:
    key_id, key = new_key(server, compression="lossless")  # a mode that rewrites PNGs
    api = Api(server, key, key_id)
    data = noisy_png()
    record = api.post_raw("n.png", data).json()["images"][0]
    assert record["uploaded_size"] == len(data) and record["stored_size"] < len(data)
    assert pixels(api.session.get(api.url("n.png")).content) == pixels(data)
    # The same bytes PUT over WebDAV are stored identically.
    api.put_dav("n2.png", data)
    dav_record = api.session.get(api.url("n2.png", "/meta")).json()
    assert dav_record["etag"] == record["etag"] and dav_record["stored_size"] == record["stored_size"]


def test_a_key_with_compression_off_stores_uploads_as_they_came(server: RunningServer) -> None:
    key_id, key = new_key(server, compression="off")
    api = Api(server, key, key_id)
    data = noisy_png()
    record = api.post_raw("n.png", data).json()["images"][0]
    assert record["stored_size"] == len(data)
    assert api.session.get(api.url("n.png")).content == data


# --- images: read --------------------------------------------------------------------------


def test_get_bytes_with_etag_last_modified_range_and_conditionals(api: Api) -> None:
    data = noisy_png()
    record = api.post_raw("r.png", data).json()["images"][0]
    full = api.session.get(api.url("r.png"))
    body, etag = full.content, full.headers["ETag"]
    assert full.headers["Content-Type"] == "image/png" and "Last-Modified" in full.headers
    assert etag == record["etag"] and full.headers["Accept-Ranges"] == "bytes"

    part = api.session.get(api.url("r.png"), headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == body[10:20]
    assert part.headers["Content-Range"] == f"bytes 10-19/{len(body)}"
    assert api.session.get(api.url("r.png"), headers={"Range": "bytes=-5"}).content == body[-5:]
    assert_problem(api.session.get(api.url("r.png"), headers={"Range": f"bytes={len(body) + 10}-"}), 416)

    assert api.session.get(api.url("r.png"), headers={"If-None-Match": etag}).status_code == 304
    lm = full.headers["Last-Modified"]
    assert api.session.get(api.url("r.png"), headers={"If-Modified-Since": lm}).status_code == 304
    assert api.session.get(api.url("r.png"), headers={"If-None-Match": '"other"'}).status_code == 200
    assert_problem(api.session.get(api.url("r.png"), headers={"If-Match": '"other"'}), 412)
    assert api.session.get(api.url("r.png"), headers={"If-Match": etag}).status_code == 200

    head = api.session.head(api.url("r.png"))
    assert head.status_code == 200 and head.content == b"" and int(head.headers["Content-Length"]) == len(body)


def test_get_meta_is_the_listed_record(api: Api) -> None:
    api.post_raw("m.gif", image_bytes("GIF", (5, 7)))
    meta = api.session.get(api.url("m.gif", "/meta"))
    assert meta.status_code == 200 and meta.headers["ETag"] == meta.json()["etag"]
    assert meta.json() == api.session.get(f"{api.base}/images").json()["images"][0]
    assert (meta.json()["format"], meta.json()["width"], meta.json()["height"]) == ("gif", 5, 7)


def test_missing_images_and_folders_are_404(api: Api) -> None:
    requests.request("MKCOL", f"{api.server.url}/folder", auth=(api.key, ""), timeout=10)
    for name in ("nothing.png", "folder", "meta"):
        for suffix in ("", "/meta", "/thumbnail"):
            assert_problem(api.session.get(api.url(name, suffix)), 404)
        assert_problem(api.session.patch(api.url(name), data=image_bytes()), 404)
        assert_problem(api.session.delete(api.url(name)), 404)


@pytest.mark.parametrize("suffix", ["", "/meta", "/thumbnail"])
def test_bad_names_in_the_path_are_400_and_a_slash_never_names_an_image(api: Api, suffix: str) -> None:
    for name in ("a\x01b", "tab\tb", "x" * 251, "é" * 126):
        assert_problem(api.session.get(api.url(name, suffix)), 400)
    # The server keeps an encoded '/' as '%2F' (a name no image has); a real '/' is another path.
    assert_problem(api.session.get(f"{api.base}/images/a%2Fb{suffix}"), 404)
    assert_problem(requests.get(f"{api.base}/images/a/b{suffix}", auth=(api.key, ""), timeout=10), 404)


def test_list_is_sorted_by_name_paged_and_shows_top_level_files_only(api: Api) -> None:
    names = ["e.png", "a.png", "c.png", "b.png", "d.png"]
    for name in names:
        api.post_raw(name, image_bytes())
    requests.request("MKCOL", f"{api.server.url}/sub", auth=(api.key, ""), timeout=10)
    requests.put(f"{api.server.url}/sub/deep.png", data=image_bytes(), auth=(api.key, ""), timeout=10)

    seen, cursor, pages = [], None, 0
    while True:
        r = api.session.get(f"{api.base}/images", params={"limit": 2, **({"cursor": cursor} if cursor else {})})
        body = r.json()
        seen += [i["name"] for i in body["images"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            assert "Link" not in r.headers
            break
        assert 'rel="next"' in r.headers["Link"]
    assert seen == sorted(names) and pages == 3
    assert [i["name"] for i in api.session.get(f"{api.base}/images").json()["images"]] == sorted(names)


@pytest.mark.parametrize("params", [{"limit": "0"}, {"limit": "1001"}, {"limit": "ten"}, {"cursor": "!!!"}])
def test_list_bad_paging_parameters_are_400(api: Api, params: dict[str, str]) -> None:
    assert_problem(api.session.get(f"{api.base}/images", params=params), 400)


# --- images: replace and delete ------------------------------------------------------------


def test_patch_replaces_the_whole_content_and_honours_if_match(api: Api) -> None:
    old = api.post_raw("p.png", image_bytes(color="red")).json()["images"][0]
    assert_problem(api.session.patch(api.url("p.png"), data=image_bytes(color="blue"), headers={"If-Match": '"stale"'}), 412)
    assert pixels(api.get_dav("p.png").content) == pixels(image_bytes(color="red"))

    new_data = image_bytes("JPEG", (40, 10))
    r = api.session.patch(api.url("p.png"), data=new_data, headers={"If-Match": old["etag"]})
    assert r.status_code == 200
    new = r.json()
    assert new["etag"] != old["etag"] and r.headers["ETag"] == new["etag"]
    assert (new["format"], new["width"], new["uploaded_size"]) == ("jpeg", 40, len(new_data))
    assert api.get_dav("p.png").headers["ETag"] == new["etag"]

    r = api.session.patch(api.url("p.png"), files={"file": ("ignored.png", image_bytes(color="green"))})
    assert r.status_code == 200 and r.json()["name"] == "p.png"
    assert pixels(api.session.get(api.url("p.png")).content) == pixels(image_bytes(color="green"))
    assert_problem(api.session.patch(api.url("p.png"), data=b"text, not an image"), 415)
    assert_problem(api.session.patch(api.url("p.png"), files=[("file", ("1", image_bytes())), ("file", ("2", image_bytes()))]), 400)
    assert pixels(api.session.get(api.url("p.png")).content) == pixels(image_bytes(color="green"))


def test_delete_is_204_then_404_and_honours_if_match(api: Api) -> None:
    record = api.post_raw("d.png", image_bytes()).json()["images"][0]
    assert_problem(api.session.delete(api.url("d.png"), headers={"If-Match": '"stale"'}), 412)
    r = api.session.delete(api.url("d.png"), headers={"If-Match": record["etag"]})
    assert r.status_code == 204 and r.content == b""
    assert api.get_dav("d.png").status_code == 404
    assert_problem(api.session.delete(api.url("d.png")), 404)


# --- thumbnails --------------------------------------------------------------------------


def test_thumbnail_is_made_once_kept_on_disk_and_renewed_when_the_image_changes(api: Api) -> None:
    api.post_raw("t.jpg", image_bytes("JPEG", (400, 300), color=(10, 200, 10)))
    r = api.session.get(api.url("t.jpg", "/thumbnail"), params={"size": 64})
    assert r.status_code == 200 and r.headers["Content-Type"] == "image/webp"
    with Image.open(io.BytesIO(r.content)) as thumb:
        assert thumb.format == "WEBP" and thumb.size == (64, 48)
    thumbs = api.server.data_dir / "thumbs" / api.id
    kept = list(thumbs.iterdir())
    assert len(kept) == 1
    again = api.session.get(api.url("t.jpg", "/thumbnail"), params={"size": 64})
    assert again.content == r.content and list(thumbs.iterdir()) == kept
    assert api.session.get(api.url("t.jpg", "/thumbnail"), params={"size": 64},
                           headers={"If-None-Match": r.headers["ETag"]}).status_code == 304

    jpeg = api.session.get(api.url("t.jpg", "/thumbnail"), params={"size": 16, "format": "jpeg"})
    with Image.open(io.BytesIO(jpeg.content)) as thumb:
        assert thumb.format == "JPEG" and max(thumb.size) == 16

    api.session.patch(api.url("t.jpg"), data=image_bytes("PNG", (100, 100), color=(0, 0, 255, 128)))
    changed = api.session.get(api.url("t.jpg", "/thumbnail"), params={"size": 64})
    assert changed.headers["ETag"] != r.headers["ETag"]
    with Image.open(io.BytesIO(changed.content)) as thumb:
        assert thumb.size == (64, 64) and thumb.mode == "RGBA"
    # One folder per content: the replaced image's thumbnails went with it, and a deleted one's too.
    now = list(thumbs.iterdir())
    assert kept[0] not in now and len(now) == 1 and now[0].is_dir()
    assert api.session.delete(api.url("t.jpg")).status_code == 204
    assert list(thumbs.iterdir()) == []


def test_thumbnail_never_enlarges_and_reads_the_corpus(api: Api) -> None:
    for name in ("cmyk.jpg", "gray16.png", "rgba.png", "animated.gif", "photo.webp", "photo.tiff", "photo.bmp",
                 "photo_exif_icc_xmp.jpg", "progressive.jpg", "text_icc.png"):
        assert api.post_raw(name, (CORPUS / name).read_bytes()).status_code == 201, name
        r = api.session.get(api.url(name, "/thumbnail"), params={"size": 1024})
        assert r.status_code == 200, name
        record = api.session.get(api.url(name, "/meta")).json()
        with Image.open(io.BytesIO(r.content)) as thumb:
            assert max(thumb.size) <= max(record["width"], record["height"]), name


@pytest.mark.parametrize("params", [{"size": "15"}, {"size": "1025"}, {"size": "big"}, {"format": "gif"}])
def test_thumbnail_parameters_out_of_range_are_400(api: Api, params: dict[str, str]) -> None:
    api.post_raw("t.png", image_bytes())
    assert_problem(api.session.get(api.url("t.png", "/thumbnail"), params=params), 400)


def test_thumbnail_of_a_file_that_is_no_image_is_415(api: Api) -> None:
    api.put_dav("notes.txt", b"just text")
    assert_problem(api.session.get(api.url("notes.txt", "/thumbnail")), 415)


def test_thumbnail_checks_the_declared_size_before_decoding() -> None:
    big = image_bytes("PNG", (200, 200))
    with pytest.raises(Undecodable, match="pixel limit"):
        render(io.BytesIO(big), 64, "webp", max_pixels=100 * 100)
    assert render(io.BytesIO(big), 64, "webp", max_pixels=200 * 200)[:4] == b"RIFF"


# --- WebDAV and REST agree ----------------------------------------------------------------


def test_a_file_put_by_dav_is_listed_by_rest_with_the_same_etag_and_back(api: Api) -> None:
    data = image_bytes("PNG", (9, 9))
    put = api.put_dav("from-dav.png", data)
    assert put.status_code == 201
    dav_etag = api.get_dav("from-dav.png").headers["ETag"]
    listed = {i["name"]: i for i in api.session.get(f"{api.base}/images").json()["images"]}
    assert listed["from-dav.png"]["etag"] == dav_etag
    assert api.session.get(api.url("from-dav.png")).content == api.get_dav("from-dav.png").content

    record = api.post_raw("from-rest.png", noisy_png()).json()["images"][0]
    dav = api.get_dav("from-rest.png")
    assert dav.headers["ETag"] == record["etag"] and dav.content == api.session.get(record["url"]).content
    propfind = requests.request("PROPFIND", f"{api.server.url}/from-rest.png", auth=(api.key, ""),
                                headers={"Depth": "0"}, timeout=10)
    assert record["etag"].strip('"') in propfind.text
    assert requests.get(record["dav_url"], auth=(api.key, ""), timeout=10).content == dav.content

    requests.delete(f"{api.server.url}/from-rest.png", auth=(api.key, ""), timeout=10)
    assert_problem(api.session.get(record["url"]), 404)


def test_an_upload_limit_and_a_quota_apply_to_rest_too(tmp_path: Path) -> None:
    client = local_client(tmp_path, max_upload_bytes=4096, quota_files=1)
    key = client.post("/api/v1/keys", json={}).json["key"]
    auth = {"Authorization": f"Bearer {key}"}
    r = client.post("/api/v1/images?name=big.bmp", data=image_bytes("BMP", (60, 60)), headers=auth)
    assert r.status_code == 413 and r.content_type == PROBLEM
    assert client.post("/api/v1/images?name=a.png", data=image_bytes(), headers=auth).status_code == 201
    r = client.post("/api/v1/images?name=b.png", data=image_bytes(), headers=auth)
    assert r.status_code == 507 and r.content_type == PROBLEM
    assert client.get("/api/v1/usage", headers=auth).json["quota"] == {"bytes": None, "files": 1}


def test_no_image_response_ever_leaks_a_key(api: Api) -> None:
    api.post_raw("a.png", image_bytes())
    texts = [api.session.get(f"{api.base}/images").text, api.session.get(api.url("a.png", "/meta")).text,
             api.session.get(f"{api.base}/keys").text]
    assert not any(api.key in t for t in texts)
    assert base64.b64encode(api.key.encode()).decode() not in "".join(texts)


@pytest.mark.parametrize("form", [True, False], ids=["multipart", "raw"])
def test_uploads_are_streamed_to_disk_not_held_in_memory(tmp_path: Path, form: bool) -> None:
    services = open_services(load_config(None, {"data_dir": tmp_path / "data"}, environ={}), with_hook=False)
    record, key = services.keys.create("stream")
    image = io.BytesIO()
    Image.new("RGB", (2000, 1500), "navy").save(image, "BMP")  # 9 MB
    data = image.getvalue()
    body_path = tmp_path / "body"
    if form:
        head = b'--BOUND\r\nContent-Disposition: form-data; name="file"; filename="big.bmp"\r\n\r\n'
        body_path.write_bytes(head + data + b"\r\n--BOUND--\r\n")
        content_type, query = "multipart/form-data; boundary=BOUND", ""
    else:
        body_path.write_bytes(data)
        content_type, query = "image/bmp", "name=big.bmp"
    del image
    with open(body_path, "rb") as body:
        environ = EnvironBuilder(
            path="/api/v1/images", query_string=query, method="POST", input_stream=body,
            content_type=content_type, content_length=body_path.stat().st_size,
            headers={"Authorization": f"Bearer {key}"}, environ_base={"REMOTE_ADDR": "127.0.0.1"},
        ).get_environ()
        tracemalloc.start()
        try:
            status = run_wsgi_app(build_app(services), environ)[1]
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert status == "201 Created"
    assert peak < len(data) / 8, f"peak {peak} bytes for a {len(data)}-byte upload"
    assert (tmp_path / "data" / "collections" / record.collection / "big.bmp").read_bytes() == data


def test_a_server_starts_by_sweeping_thumbnails_of_the_old_flat_layout(tmp_path: Path) -> None:
    data = tmp_path / "data"
    flat = data / "thumbs" / "cid0" / ("ab" * 20 + "-64.webp")
    kept = data / "thumbs" / "cid0" / ("cd" * 20) / "64.webp"
    kept.parent.mkdir(parents=True)
    flat.write_bytes(b"old layout")
    kept.write_bytes(b"new layout")
    srv = RunningServer(data, config=write_config(tmp_path / "config.yaml"))
    try:
        srv.start()
        assert not flat.exists() and kept.read_bytes() == b"new layout"
        assert "removed 1 thumbnails kept in the flat layout" in srv.log()
    finally:
        srv.stop()
