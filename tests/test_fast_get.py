"""A plain GET, answered without WsgiDAV's _send_resource, says what WsgiDAV would say.

In-process. A non-matching If-None-Match sends the same GET down WsgiDAV's
own path (the condition holds, so the answer is 200 and the whole file):
status, headers (but Date, which the engine adds) and body must be the same.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from wsgidav.wsgidav_app import WsgiDAVApp

from providers import collection
from providers.collection import send_whole
from tests.inprocess import wsgi_environ
from uss_dav.app import wsgidav_config
from uss_dav.config import load_config
from uss_dav.services import open_services

ROOT = Path(__file__).resolve().parent.parent


def request(app: Any, key: str, method: str, path: str, body: bytes = b"", **headers: str) -> tuple[str, list, bytes]:
    environ = wsgi_environ(method, path, key, body, **headers)
    seen: list[tuple[str, list]] = []
    result = app(environ, lambda status, headers, exc=None: seen.append((status, headers)))
    try:
        out = b"".join(result)
    finally:
        getattr(result, "close", lambda: None)()
    return seen[0][0], seen[0][1], out


@pytest.fixture(scope="module")
def dav(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    data = tmp_path_factory.mktemp("fast-get")
    services = open_services(load_config(ROOT / "config.yaml", {"data_dir": str(data)}))
    record, key = services.keys.create("get")
    services.store.ensure_collection(record.collection)
    yield WsgiDAVApp(wsgidav_config(services)), key
    services.close()


FILES = {
    "/plain.txt": b"hello\n",
    "/empty": b"",
    "/space name ü.jpg": b"not really a jpeg" * 100,
    "/big.bin": bytes(range(256)) * 20_000,  # several blocks
}


@pytest.mark.parametrize("path", list(FILES))
def test_plain_get_matches_wsgidav(dav: tuple[Any, str], path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    app, key = dav
    assert request(app, key, "PUT", path, FILES[path])[0].startswith(("201", "204"))
    taken: list[str] = []

    def counted(environ: dict[str, Any], *args: Any) -> Any:
        taken.append(environ["PATH_INFO"])
        return send_whole(environ, *args)

    monkeypatch.setattr(collection, "send_whole", counted)
    fast = request(app, key, "GET", path)
    stock = request(app, key, "GET", path, if_none_match='"no-such-etag"')
    assert len(taken) == 1, "exactly the plain GET takes the short path"
    assert fast[0] == stock[0] == "200 OK"
    # The same fields in the same order; Date is the engine's to add (uss_dav.engine.response).
    assert [h for h in fast[1] if h[0] != "Date"] == [h for h in stock[1] if h[0] != "Date"]
    assert fast[2] == stock[2] == FILES[path]


def test_conditional_and_partial_gets_still_work(dav: tuple[Any, str]) -> None:
    app, key = dav
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
