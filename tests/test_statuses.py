"""The one table from core refusals to HTTP statuses (uss_dav.statuses), shared by WebDAV and REST."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

from hooks import ImageRejected
from tests.inprocess import ROOT, assembled_app, request, wsgi_environ
from uss_dav import storage
from uss_dav.keys import UnknownKey
from uss_dav.statuses import STATUS_OF, refusal
from uss_dav.vocabulary import status_line


def test_every_storage_error_class_has_a_status() -> None:
    errors = {
        cls
        for _name, cls in inspect.getmembers(storage.errors, inspect.isclass)
        if issubclass(cls, storage.StorageError) and cls is not storage.StorageError
    }
    assert errors, "no storage errors found"
    listed = {cls for cls, _status in STATUS_OF}
    assert errors - listed == set()


def test_statuses_are_client_errors_or_507() -> None:
    for cls, status in STATUS_OF:
        assert 400 <= status < 500 or status == 507, cls


def test_refusal_maps_each_kind_to_one_status_with_its_reason() -> None:
    assert refusal(storage.AlreadyExists("taken")) == (409, "taken")
    assert refusal(storage.NotFound()) == (404, "NotFound")
    assert refusal(UnknownKey("k1")) == (404, "k1")
    assert refusal(ImageRejected(413, "too many pixels")) == (413, "too many pixels")
    assert refusal(RuntimeError("bug")) is None


PNG = (ROOT / "tests" / "data" / "corpus" / "rgba.png").read_bytes()


def posted(app: Any, key: str, name: str, body: bytes) -> tuple[str, bytes]:
    """(status line, body) of a REST upload of `body` as `name`."""
    environ = wsgi_environ("POST", "/api/v1/images", key, body, content_type="image/png")
    environ["QUERY_STRING"] = f"name={name}"
    seen: list[str] = []
    out = b"".join(app(environ, lambda status, headers, exc=None: seen.append(status)))
    return seen[0], out


def test_both_faces_send_the_same_status_line_for_the_same_refusal(tmp_path: Path) -> None:
    # WsgiDAV's table had "507 Status" and "413 Status"; Werkzeug's phrases are upper-case.
    with assembled_app(tmp_path / "data") as (app, key, services):
        assert request(app, key, "GET", "/missing.png")[0] == "404 Not Found"
        status, _, body = request(app, key, "GET", "/api/v1/images/missing.png")
        assert status == "404 Not Found" and json.loads(body)["title"] == "Not Found"
        _, small = services.keys.create("small", quota_bytes=10)
        services.store.ensure_collection(services.keys.verify(small).collection)  # type: ignore[union-attr]
        assert request(app, small, "PUT", "/big.png", PNG)[0] == "507 Insufficient Storage"
        status, body = posted(app, small, "big.png", PNG)
        assert status == "507 Insufficient Storage" and json.loads(body)["title"] == "Insufficient Storage"
        assert posted(app, key, "fits.png", PNG)[0] == "201 Created"
    assert status_line(413) == "413 Content Too Large"
