"""A plain GET, answered before WsgiDAV (providers.plain_get), says what WsgiDAV would say.

In-process, through the whole assembled application (uss_dav.app.build_app).
A non-matching If-None-Match sends the same GET down WsgiDAV's own path
(the condition holds, so the answer is 200 and the whole file): status,
headers (but Date, which the engine adds) and body must be the same.
Whatever PlainGet cannot answer whole goes on to WsgiDAV: the answers must
be WsgiDAV's, and a wrong key must count as one failure, not two.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from providers import plain_get
from tests.images import CORPUS
from tests.inprocess import request
from uss_dav.services import Services


@pytest.fixture()
def taken(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths PlainGet served itself during the test."""
    paths: list[str] = []
    inner = plain_get.send_whole

    def counted(start_response: Any, opened: Any, path: str, *args: Any) -> Any:
        paths.append(path)
        return inner(start_response, opened, path, *args)

    monkeypatch.setattr(plain_get, "send_whole", counted)
    return paths


FILES = {
    "/plain.txt": b"hello\n",
    "/empty": b"",
    "/space name ü.jpg": b"not really a jpeg" * 100,
    "/big.bin": bytes(range(256)) * 20_000,  # several blocks
    "/folder/photo.jpg": (CORPUS / "photo_exif_icc_xmp.jpg").read_bytes(),  # stored encoded, rebuilt on GET
}


@pytest.mark.parametrize("path", list(FILES))
def test_plain_get_matches_wsgidav(served: tuple[Any, str, Services], path: str, taken: list[str]) -> None:
    app, key, _ = served
    if path.count("/") > 1:
        assert request(app, key, "MKCOL", path.rsplit("/", 1)[0])[0].startswith(("201", "405"))
    assert request(app, key, "PUT", path, FILES[path])[0].startswith(("201", "204"))
    fast = request(app, key, "GET", path)
    stock = request(app, key, "GET", path, if_none_match='"no-such-etag"')
    assert taken == [path], "exactly the plain GET takes the short path"
    assert fast[0] == stock[0] == "200 OK"
    # The same fields in the same order; Date is the engine's to add (uss_dav.engine.response),
    # and each request has an id of its own.
    own = ("Date", "X-Request-Id")
    assert [h for h in fast[1] if h[0] not in own] == [h for h in stock[1] if h[0] not in own]
    assert fast[2] == stock[2] == FILES[path]


def test_a_plain_get_leaves_wsgidavs_log_line(served: tuple[Any, str, Services], caplog: pytest.LogCaptureFixture) -> None:
    app, key, services = served
    assert request(app, key, "PUT", "/logged.txt", b"x")[0].startswith(("201", "204"))
    caplog.clear()
    with caplog.at_level("INFO", logger="wsgidav.wsgidav_app"):
        _, headers, _ = request(app, key, "GET", "/logged.txt")
        request(app, key, "GET", "/logged.txt", if_none_match='"other"')
    lines = [r.getMessage() for r in caplog.records if r.name == "wsgidav.wsgidav_app"]
    record = services.keys.verify(key)
    assert record is not None and len(lines) == 2, lines
    fast, stock = (re.sub(r"\[.*?\]|elap=\S+|id=\w+", "", line) for line in lines)
    assert fast == stock and f"- {record.id} -" in fast and '"GET /logged.txt"' in fast and "-> 200 OK" in fast
    assert lines[0].endswith(f"id={dict(headers)['X-Request-Id']}")


def test_the_jpeg_really_is_stored_encoded(served: tuple[Any, str, Services]) -> None:
    """Else the rebuilt branch above is not exercised."""
    app, key, services = served
    request(app, key, "PUT", "/encoded.jpg", FILES["/folder/photo.jpg"])
    record = services.keys.verify(key)
    assert record is not None
    opened = services.store.open(record.collection, "/encoded.jpg")
    assert opened is not None
    try:
        assert opened.entry.encoding != "identity"
    finally:
        opened.close()


def test_what_plain_get_cannot_answer_goes_to_wsgidav(served: tuple[Any, str, Services], taken: list[str]) -> None:
    app, key, services = served
    assert request(app, key, "PUT", "/here.txt", b"here")[0].startswith(("201", "204"))
    assert request(app, key, "MKCOL", "/album")[0].startswith("201")
    # A folder: the provider's plain-text listing (providers.folder_listing).
    status, headers, _ = request(app, key, "GET", "/album")
    assert status == "200 OK" and dict(headers)["Content-Type"].startswith("text/plain")
    # A missing file: WsgiDAV's 404.
    assert request(app, key, "GET", "/nothing-here.txt")[0].startswith("404")
    # Paths WsgiDAV normalises: a doubled or trailing slash still finds the file.
    assert request(app, key, "GET", "//here.txt")[2] == b"here"
    assert request(app, key, "GET", "/album/")[0] == "200 OK"
    # A GET with a body to read (chunked): WsgiDAV's path.
    assert request(app, key, "GET", "/here.txt", transfer_encoding="chunked")[0] in ("200 OK", "400 Bad Request")
    assert taken == []
    # A wrong key: 401 from PlainGet, counted against the address once.
    failures: list[str] = []
    real_fail = services.failures.fail
    services.failures.fail = lambda address: failures.append(address) or real_fail(address)  # type: ignore[method-assign]
    try:
        status, headers, _ = request(app, "not-a-key", "GET", "/here.txt")
        assert status.startswith("401") and "WWW-Authenticate" in dict(headers)
        status, _, _ = request(app, "not-a-key", "GET", "/album")
        assert status.startswith("401")
    finally:
        del services.failures.fail
    assert failures == ["127.0.0.1", "127.0.0.1"]
    # Scope and isolation: an upload-only key may not GET; another key sees its own collection only.
    _, upload_key = services.keys.create("upload", scope="upload")
    assert request(app, upload_key, "GET", "/here.txt")[0].startswith("403")
    _, other_key = services.keys.create("other")
    assert request(app, other_key, "GET", "/here.txt")[0].startswith("404")
    assert taken == []


def test_conditional_and_partial_gets_still_work(served: tuple[Any, str, Services]) -> None:
    app, key, _ = served
    assert request(app, key, "PUT", "/r.txt", b"0123456789")[0].startswith(("201", "204"))
    headers = dict(request(app, key, "GET", "/r.txt")[1])
    assert request(app, key, "GET", "/r.txt", if_none_match=headers["ETag"])[0].startswith("304")
    status, partial_headers, body = request(app, key, "GET", "/r.txt", range="bytes=2-4")
    assert status.startswith("206") and body == b"234"
    assert dict(partial_headers)["Content-Range"] == "bytes 2-4/10"
    assert request(app, key, "GET", "/missing.txt")[0].startswith("404")
    assert request(app, key, "GET", "/r.txt", depth="1")[0].startswith("400")


@pytest.mark.parametrize("name", [
    "a.jpg", "A.JPG", "weird.JpG", "x", ".hidden", "f.tar.gz", "x.tgz", "a.b.c.svgz", "my.photo.2020.jpg",
    "t.TXT", "noext.", "a..jpg", ".bashrc.txt", "p.webp", "c.heic", "d.avif", "r.NEF",
])
@pytest.mark.parametrize("charset", [None, "utf-8"])
def test_content_type_by_suffix_is_what_wsgidav_guesses(name: str, charset: str | None) -> None:
    from wsgidav import util

    from providers.content_types import content_type

    assert content_type(f"/folder.d/{name}", charset) == util.guess_mime_type(name, {"default_charset": charset})
