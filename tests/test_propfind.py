"""The fast PROPFIND path answers what WsgiDAV's own path answers, property by property.

In-process: the same services behind two WsgiDAV apps, one whose provider
has the fast path switched off.
"""

from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from wsgidav.wsgidav_app import WsgiDAVApp

from providers.collection import CollectionProvider
from tests.client import LOCK_BODY
from tests.inprocess import ROOT, wsgi_environ
from uss_dav.app import Dispatcher, wsgidav_config
from uss_dav.config import load_config
from uss_dav.files import RACY_NS
from uss_dav.rest.app import make_rest_app
from uss_dav.services import open_services
from uss_dav.ui import make_ui_app

DAV = "{DAV:}"


class Client:
    def __init__(self, app: Any, key: str) -> None:
        self.app, self.key = app, key

    def __call__(self, method: str, path: str, body: bytes = b"", **headers: str) -> tuple[str, bytes]:
        environ = wsgi_environ(method, path, self.key, body, **headers)
        status: list[str] = []
        out = b"".join(self.app(environ, lambda s, h, e=None: status.append(s)))
        return status[0], out


@pytest.fixture(scope="module")
def clients(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Client, Client]]:
    data = tmp_path_factory.mktemp("propfind")
    services = open_services(load_config(ROOT / "config.yaml", {"data_dir": str(data)}), with_hook=False)
    record, key = services.keys.create("propfind")
    services.store.ensure_collection(record.collection)
    fast_config = wsgidav_config(services)
    stock_config = wsgidav_config(services)
    stock_config["provider_mapping"] = {"/": CollectionProvider(services.store, fast_propfind=False)}
    fast = WsgiDAVApp(fast_config)
    stock = WsgiDAVApp(stock_config)
    # Both apps must share locks, as two processes would through one lock store.
    stock.lock_manager = fast.lock_manager
    stock.provider_map["/"].set_lock_manager(fast.lock_manager)
    rest = make_rest_app(services)
    ui = make_ui_app()
    fast_client, stock_client = Client(Dispatcher(fast, rest, ui), key), Client(Dispatcher(stock, rest, ui), key)
    populate(fast_client)
    yield fast_client, stock_client
    services.close()


def populate(c: Client) -> None:
    assert c("MKCOL", "/folder")[0].startswith("201")
    assert c("MKCOL", "/folder/sub")[0].startswith("201")
    names = ["plain.txt", "space name.jpg", "ünïcødé.png", "amp&lt<gt>.bin", "quote'\"paren().gif", "empty"]
    for i, name in enumerate(names):
        assert c("PUT", f"/folder/{name}", b"x" * (i * 100))[0].startswith("201"), name
    props = (
        '<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:z" xmlns:Y="urn:y">'
        "<D:set><D:prop><Z:color>blue &amp; green</Z:color><Y:nested><Y:a>1</Y:a></Y:nested></D:prop></D:set>"
        "</D:propertyupdate>"
    )
    for target in ("/folder/plain.txt", "/folder/sub", "/folder"):
        assert c("PROPPATCH", target, props.encode())[0].startswith("207")


def canonical(body: bytes) -> dict[str, dict[str, tuple[str, str]]]:
    """href -> property -> (status, value as canonical XML text)."""
    result: dict[str, dict[str, tuple[str, str]]] = {}
    for response in ET.fromstring(body).iter(f"{DAV}response"):
        href = response.findtext(f"{DAV}href") or ""
        props: dict[str, tuple[str, str]] = {}
        for propstat in response.iter(f"{DAV}propstat"):
            status = (propstat.findtext(f"{DAV}status") or "").split(" ")[1]
            for prop in propstat.find(f"{DAV}prop") or []:
                value = (prop.text or "").strip() + "".join(ET.canonicalize(ET.tostring(child)) for child in prop)
                props[prop.tag] = (status, value)
        result[href] = props
    return result


BODIES = {
    "empty": b"",
    "allprop": b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>',
    "propname": b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:propname/></D:propfind>',
    "named": (
        b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:" xmlns:Z="urn:z" xmlns:oc="http://owncloud.org/ns">'
        b"<D:prop><D:getcontentlength/><D:getetag/><D:resourcetype/><D:displayname/><D:getlastmodified/>"
        b"<D:getcontenttype/><Z:color/><Z:missing/><oc:checksums/><D:lockdiscovery/><D:quota-used-bytes/>"
        b"<D:quota-available-bytes/></D:prop></D:propfind>"
    ),
}


@pytest.mark.parametrize("body", list(BODIES))
@pytest.mark.parametrize(("path", "depth"), [("/folder/", "1"), ("/folder", "0"), ("/", "1"), ("/", "0"),
                                               ("/folder/plain.txt", "0"), ("/folder/sub/", "1")])
def test_fast_path_matches_wsgidav(clients: tuple[Client, Client], body: str, path: str, depth: str) -> None:
    fast, stock = clients
    fast_status, fast_body = fast("PROPFIND", path, BODIES[body], depth=depth)
    # WsgiDAV looks for <D:name/> where RFC 4918 says <D:propname/>, and so answers
    # propname with no properties at all; the fast path answers it as the RFC says:
    # allprop's names, without values.
    stock_request = BODIES["allprop"] if body == "propname" else BODIES[body]
    stock_status, stock_body = stock("PROPFIND", path, stock_request, depth=depth)
    assert fast_status == stock_status == "207 Multi-Status"
    fast_view, stock_view = canonical(fast_body), canonical(stock_body)
    if body == "propname":
        stock_view = {href: {name: (st, "") for name, (st, _v) in props.items()} for href, props in stock_view.items()}
    if body == "named" and path == "/":
        # Free disk space moves between the two calls; compare it as present, not by value.
        for view in (fast_view, stock_view):
            status, _value = view["/"][f"{DAV}quota-available-bytes"]
            view["/"][f"{DAV}quota-available-bytes"] = (status, "")
    assert fast_view == stock_view
    etags = [props[f"{DAV}getetag"][1] for props in fast_view.values() if f"{DAV}getetag" in props]
    # RFC 4918 15.6: an entity-tag, quoted as the ETag header carries it.
    assert all(re.fullmatch(r'"[0-9a-f]{40}"', etag) for etag in etags if etag), etags


def test_locked_targets_fall_back_and_still_match(clients: tuple[Client, Client]) -> None:
    fast, stock = clients
    status, _ = fast("LOCK", "/folder/plain.txt", LOCK_BODY, timeout="Second-60")
    assert status.startswith("200")
    try:
        fast_view = canonical(fast("PROPFIND", "/folder/", b"", depth="1")[1])
        assert canonical(stock("PROPFIND", "/folder/", b"", depth="1")[1]) == fast_view
        assert "test" in fast_view["/folder/plain.txt"][f"{DAV}lockdiscovery"][1]
    finally:
        lock_manager = fast.app.dav.lock_manager
        for token in lock_manager.storage.get_lock_list("/", include_root=True, include_children=True, token_only=True):
            lock_manager.release(token)


WIN32_MTIME = (
    b'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:schemas-microsoft-com:">'
    b"<D:set><D:prop><Z:Win32LastModifiedTime>Wed, 01 Jan 2020 00:00:00 GMT</Z:Win32LastModifiedTime></D:prop>"
    b"</D:set></D:propertyupdate>"
)
DEAD_PROP = (
    b'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:z">'
    b"<D:set><D:prop><Z:color>red</Z:color></D:prop></D:set></D:propertyupdate>"
)
#: A change to a folder's listing, made through another process's stack.
CHANGES = {
    "new file": lambda c, d: c("PUT", f"{d}/new.bin", b"new"),
    "overwrite": lambda c, d: c("PUT", f"{d}/a.bin", b"other, longer content"),
    "delete": lambda c, d: c("DELETE", f"{d}/a.bin"),
    "move in": lambda c, d: c("MOVE", "/elsewhere.bin", destination=f"http://localhost{d}/moved.bin"),
    "copy": lambda c, d: c("COPY", f"{d}/a.bin", destination=f"http://localhost{d}/copy.bin"),
    "dead property": lambda c, d: c("PROPPATCH", f"{d}/a.bin", DEAD_PROP),
    "modification time": lambda c, d: c("PROPPATCH", f"{d}/a.bin", WIN32_MTIME),
    "sub-folder member": lambda c, d: c("PUT", f"{d}/sub/x.bin", b"x"),
    "folder property": lambda c, d: c("PROPPATCH", d, DEAD_PROP),
}


def _stack(data: Path, *, fast: bool = True) -> tuple[Any, Any, str | None]:
    services = open_services(load_config(ROOT / "config.yaml", {"data_dir": str(data)}), with_hook=False)
    config = wsgidav_config(services)
    if not fast:
        config["provider_mapping"] = {"/": CollectionProvider(services.store, fast_propfind=False)}
    return services, WsgiDAVApp(config), None


def test_cached_listings_follow_every_change(tmp_path: Path) -> None:
    """A listing cached from an old folder is never served once anything in it changed, by any process."""
    services, fast_app, _ = _stack(tmp_path)
    record, key = services.keys.create("cache")
    services.store.ensure_collection(record.collection)
    _, stock_app, _ = _stack(tmp_path, fast=False)
    other_services, other_app, _ = _stack(tmp_path)  # a second worker on the same data directory
    rest, ui = make_rest_app(services), make_ui_app()
    fast, stock = Client(Dispatcher(fast_app, rest, ui), key), Client(Dispatcher(stock_app, rest, ui), key)
    other = Client(Dispatcher(other_app, rest, ui), key)
    for name in CHANGES:
        folder = "/" + name.replace(" ", "-")
        assert fast("MKCOL", folder)[0].startswith("201")
        assert fast("MKCOL", f"{folder}/sub")[0].startswith("201")
        assert fast("PUT", f"{folder}/a.bin", b"a")[0].startswith("201")
        assert fast("PUT", f"{folder}/sub/old.bin", b"o")[0].startswith("201")
    assert fast("PUT", "/elsewhere.bin", b"moved")[0].startswith("201")

    # Only state older than the racy window is cached: let the folders age past it,
    # and into an earlier second than the changes (a sub-folder's time shows in seconds).
    time.sleep(max(RACY_NS / 1e9 + 0.1, 1.05 - time.time() % 1))
    listings = fast_app.provider_map["/"].fast_propfind._listings
    requests = (BODIES["allprop"], BODIES["named"])
    for name in CHANGES:
        for body in requests:
            assert fast("PROPFIND", "/" + name.replace(" ", "-") + "/", body, depth="1")[0].startswith("207")
    assert len(listings._items) == len(CHANGES) * len(requests), "the listings were not cached"

    for name, change in CHANGES.items():
        folder = "/" + name.replace(" ", "-")
        status = change(other, folder)[0]
        assert status[0] == "2", (name, status)
        for body in requests:
            seen = canonical(fast("PROPFIND", folder + "/", body, depth="1")[1])
            assert seen == canonical(stock("PROPFIND", folder + "/", body, depth="1")[1]), name
    services.close()
    other_services.close()
