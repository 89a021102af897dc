"""A plain PUT, stored by PlainPut (providers.plain_put), says and stores what WsgiDAV's PUT would.

In-process, through the whole assembled application (uss_dav.app.build_app).
A non-matching If-None-Match sends the same PUT down WsgiDAV's own handler
(the condition holds, so the file is written): status, headers (but Date
and the request id) and body must be the same, and so must what GET gives
back. What PlainPut leaves alone must reach WsgiDAV, and a refusal it
raises itself must be the one WsgiDAV's PUT gives.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from providers.plain_put import PlainPut
from tests.client import LOCK_BODY
from tests.images import CORPUS
from tests.inprocess import request, wsgi_environ
from uss_dav.services import Services

OWN = ("Date", "X-Request-Id")


@pytest.fixture()
def taken(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths PlainPut stored itself during the test."""
    paths: list[str] = []
    inner = PlainPut._store

    def counted(self: PlainPut, environ: dict[str, Any], *args: Any) -> Any:
        paths.append(environ["PATH_INFO"])
        return inner(self, environ, *args)

    monkeypatch.setattr(PlainPut, "_store", counted)
    return paths


def without_own(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [h for h in headers if h[0] not in OWN]


BODIES = {
    "plain.txt": b"hello\n",
    "big.bin": bytes(range(256)) * 20_000,  # several blocks
    "photo.jpg": (CORPUS / "photo_exif_icc_xmp.jpg").read_bytes(),  # stored encoded (exact mode)
}


@pytest.mark.parametrize("name", list(BODIES))
def test_plain_put_matches_wsgidav(served: tuple[Any, str, Services], name: str, taken: list[str]) -> None:
    app, key, _ = served
    assert request(app, key, "MKCOL", "/a")[0].startswith(("201", "405"))
    body, fast_path, stock_path = BODIES[name], f"/a/fast-{name}", f"/a/stock-{name}"
    for expected, again in (("201 Created", b""), ("204 No Content", b"again")):
        fast = request(app, key, "PUT", fast_path, body + again)
        stock = request(app, key, "PUT", stock_path, body + again, if_none_match='"no-such-etag"')
        assert fast[0] == stock[0] == expected
        assert without_own(fast[1]) == without_own(stock[1])
        assert fast[2] == stock[2] == b"", "no status page"
        assert dict(fast[1])["ETag"] == dict(request(app, key, "GET", fast_path)[1])["ETag"]
        assert request(app, key, "GET", fast_path)[2] == request(app, key, "GET", stock_path)[2] == body + again
    assert taken == [fast_path, fast_path], "exactly the plain PUTs take the short path"


def test_a_plain_put_leaves_wsgidavs_log_line(served: tuple[Any, str, Services], caplog: pytest.LogCaptureFixture) -> None:
    app, key, services = served
    with caplog.at_level("INFO", logger="wsgidav.wsgidav_app"):
        request(app, key, "PUT", "/logged.txt", b"x", expect="100-continue")
        request(app, key, "PUT", "/logged.txt", b"x", expect="100-continue", if_none_match='"other"')
    lines = [r.getMessage() for r in caplog.records if r.name == "wsgidav.wsgidav_app"]
    record = services.keys.verify(key)
    assert record is not None and len(lines) == 2, lines
    # The first creates the file, the second replaces it: the statuses differ, as do times and ids.
    fast, stock = (re.sub(r"\[.*?\]|elap=\S+|-> \d{3} .*$", "", line) for line in lines)
    assert fast == stock and f"- {record.id} -" in fast and '"PUT /logged.txt"' in fast and "length=1" in fast


def test_what_plain_put_leaves_alone_goes_to_wsgidav(served: tuple[Any, str, Services], taken: list[str]) -> None:
    app, key, services = served
    record = services.keys.verify(key)
    assert record is not None
    assert request(app, key, "MKCOL", "/b")[0].startswith("201")
    assert request(app, key, "PUT", "/b/x.txt", b"x", x_oc_mtime="1700000000")[0].startswith("201")
    assert services.store.stat(record.collection, "/b/x.txt").mtime == 1700000000  # type: ignore[union-attr]
    assert request(app, key, "PUT", "/b/y.txt", b"y", oc_checksum="SHA1:" + "0" * 40)[0].startswith("400")
    assert request(app, key, "PUT", "/b/ü.txt", b"u")[0].startswith("201")
    assert request(app, key, "PUT", "/b/._x.txt", b"apple")[0].startswith("201")
    assert request(app, key, "PUT", "/b/z.txt", b"z", content_range="bytes 0-0/1")[0].startswith("400")
    assert request(app, key, "PUT", "/b/z.txt", b"z", content_encoding="gzip")[0].startswith("501")
    assert request(app, key, "PUT", "/b", b"onto a folder")[0].startswith("405")
    assert request(app, key, "PUT", "/nowhere/z.txt", b"z")[0].startswith("409")
    assert request(app, key, "PUT", "/b/x.txt", b"xx", if_match="*")[0].startswith("204")
    assert taken == []


def test_refusals_are_wsgidavs(served: tuple[Any, str, Services], taken: list[str]) -> None:
    app, key, services = served
    assert request(app, key, "PUT", "/kept.txt", b"kept")[0].startswith("201")
    # An upload-only key may create, not overwrite: the same 403, with the same reason, both ways.
    _, upload_key = services.keys.create("uploads", scope="upload")
    assert request(app, upload_key, "PUT", "/new-by-upload-key.txt", b"n")[0].startswith("201")
    fast = request(app, upload_key, "PUT", "/new-by-upload-key.txt", b"m")
    stock = request(app, upload_key, "PUT", "/new-by-upload-key.txt", b"m", if_none_match='"other"')
    assert fast[0] == stock[0] == "403 Forbidden" and fast[2] == stock[2]
    # A quota: 507 both ways, and nothing changes.
    _, small_key = services.keys.create("small", quota_bytes=10)
    fast = request(app, small_key, "PUT", "/too-big.txt", b"0123456789abc")
    stock = request(app, small_key, "PUT", "/too-big.txt", b"0123456789abc", if_none_match='"other"')
    assert fast[0] == stock[0] and fast[0].startswith("507") and fast[2] == stock[2]
    # A body shorter than its Content-Length: 400, and the stored file is as it was.
    environ = wsgi_environ("PUT", "/kept.txt", key, b"short")
    environ["CONTENT_LENGTH"] = "100"
    seen: list[str] = []
    out = b"".join(app(environ, lambda status, headers, exc=None: seen.append(status)))
    assert seen[0].startswith("400"), (seen, out)
    assert request(app, key, "GET", "/kept.txt")[2] == b"kept"
    assert "/kept.txt" in taken


def test_locks_hold_on_the_short_path(served: tuple[Any, str, Services], taken: list[str]) -> None:
    app, key, _ = served
    assert request(app, key, "PUT", "/locked.txt", b"v1")[0].startswith("201")
    status, headers, _ = request(app, key, "LOCK", "/locked.txt", LOCK_BODY, depth="0", timeout="Second-60")
    assert status.startswith("200"), status
    token = dict(headers)["Lock-Token"]
    fast = request(app, key, "PUT", "/locked.txt", b"v2")
    stock = request(app, key, "PUT", "/locked.txt", b"v2", if_none_match='"other"')
    assert fast[0] == stock[0] == "423 Locked" and fast[2] == stock[2]
    assert request(app, key, "PUT", "/locked.txt", b"v3", **{"if": f"({token})"})[0].startswith("204")
    assert request(app, key, "GET", "/locked.txt")[2] == b"v3"
    # A depth-0 lock on a folder guards its members' names: a new name needs the token.
    assert request(app, key, "MKCOL", "/guarded")[0].startswith("201")
    status, headers, _ = request(app, key, "LOCK", "/guarded", LOCK_BODY, depth="0", timeout="Second-60")
    assert status.startswith("200"), status
    fast = request(app, key, "PUT", "/guarded/new.txt", b"n")
    stock = request(app, key, "PUT", "/guarded/new.txt", b"n", if_none_match='"other"')
    assert fast[0] == stock[0] == "423 Locked" and fast[2] == stock[2]
    assert request(app, key, "GET", "/guarded/new.txt")[0].startswith("404")
    assert taken == ["/locked.txt", "/locked.txt", "/guarded/new.txt"]
