"""PROPFIND Depth 0/1 answered from storage entries, without WsgiDAV's per-member machinery.

Profiling stock WsgiDAV on a 1000-file folder shows the time going to a
resource object per member, a property-manager and lock-manager look-up
per property, a DAVError per missing property and an ElementTree built
node by node. Here a folder is one scandir, metadata comes from the
storage cache, dead properties are read only for members that have them
(one directory read says which), and the XML is written as text.

A depth-1 listing is then kept whole, with the folder's stamp (its own
inode and ctime, and those of its metadata directory, its property file
and its sub-folders: see Store.listing_stamp), and served again while the
stamp on disk is the same. A hit costs a handful of stats instead of two
per member; it holds across processes because the stamp is read from
disk on every request.

Anything unusual falls back to WsgiDAV, which stays the reference: an `If`
header, a lock anywhere on or under the target (lockdiscovery must show
it), Depth infinity, or a body that is not a plain allprop / propname /
prop request. tests/test_propfind.py compares both paths property by
property.
"""

from __future__ import annotations

import io
import threading
import time
import xml.etree.ElementTree as ET
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import quote
from xml.sax.saxutils import escape

from wsgidav import util

from providers.checksums import oc_checksum
from providers.content_types import content_type
from providers.limits import small_body_memo
from uss_dav.files import settled
from uss_dav.storage import Entry, Quota
from uss_dav.vocabulary import (
    COLLECTION,
    OC_CHECKSUMS,
    QUOTA,
    entity_tag,
    http_date,
    iso_date,
)

if TYPE_CHECKING:
    from providers.collection import CollectionProvider

DAV = "{DAV:}"
QUOTA_USED = "{DAV:}quota-used-bytes"
QUOTA_AVAILABLE = "{DAV:}quota-available-bytes"
#: The live properties of allprop, in WsgiDAV's order.
ALLPROP_LIVE = (
    "{DAV:}resourcetype",
    "{DAV:}creationdate",
    "{DAV:}getcontentlength",
    "{DAV:}getcontenttype",
    "{DAV:}getlastmodified",
    "{DAV:}displayname",
    "{DAV:}getetag",
    "{DAV:}lockdiscovery",
    "{DAV:}supportedlock",
)
SUPPORTED_LOCK = (
    "<D:lockentry><D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype></D:lockentry>"
    "<D:lockentry><D:lockscope><D:shared/></D:lockscope><D:locktype><D:write/></D:locktype></D:lockentry>"
)
HREF_SAFE = "/!*'(),$-_|."
RENDER_CACHE_SIZE = 100_000
#: Bytes of whole listings kept (a 1000-file folder is about 330 KB).
LISTING_CACHE_BYTES = 32 * 1024 * 1024
QUOTA_NAMES = frozenset((QUOTA_USED, QUOTA_AVAILABLE))
_ABSENT = object()


class Fallback(Exception):
    """This request is for WsgiDAV's general path."""


def parse_request(body: bytes) -> tuple[str, tuple[str, ...]]:
    """(mode, property names) of a PROPFIND body: allprop, name or named."""
    if not body.strip():
        return "allprop", ()
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        raise Fallback from None
    if root.tag != f"{DAV}propfind" or len(root) != 1:
        raise Fallback
    child = root[0]
    if child.tag == f"{DAV}allprop":
        return "allprop", ()
    if child.tag == f"{DAV}propname":
        return "name", ()
    if child.tag == f"{DAV}prop" and len(child):
        return "named", tuple(el.tag for el in child)
    raise Fallback


def mime_type(path: str, config: dict[str, Any]) -> str:
    """Escaped content type of `path`, as WsgiDAV guesses it (providers.content_types)."""
    return escape(content_type(path, config.get("default_charset")))


class _Namespaces:
    """Prefixes for the non-DAV namespaces of one response."""

    def __init__(self) -> None:
        self.prefixes: dict[str, str] = {}

    def tag(self, clark: str) -> str:
        if clark.startswith("{DAV:}"):
            return "D:" + clark[6:]
        if not clark.startswith("{"):
            return clark
        ns, _, local = clark[1:].partition("}")
        prefix = self.prefixes.setdefault(ns, f"NS{len(self.prefixes) + 1}")
        return f"{prefix}:{local}"

    def declarations(self) -> str:
        return "".join(f' xmlns:{p}="{escape(ns, {chr(34): "&quot;"})}"' for ns, p in self.prefixes.items())


class Listing(NamedTuple):
    """A rendered depth-1 multistatus and the on-disk state it was rendered from."""

    stamp: tuple[Any, ...]
    #: (name, inode, ctime) of each sub-folder: its own times are in the body.
    subfolders: tuple[tuple[str, int, int], ...]
    body: bytes

    def settled(self, now_ns: int) -> bool:
        """Whether every time in the stamp is old enough that a later change must differ from it."""
        meta, props = self.stamp[2]
        times = [self.stamp[1], *(s[1] for s in (meta, props) if s), *(s[2] for s in self.subfolders)]
        return settled(times, now_ns)


class ListingCache:
    """Least recently used listings, up to a number of bytes, in this process only.

    Nothing here is shared or trusted across processes: each hit is checked
    against the folder's stamp on disk, which every process's writes change.
    """

    def __init__(self, limit: int) -> None:
        self.limit, self.size = limit, 0
        self._items: OrderedDict[tuple[Any, ...], Listing] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> Listing | None:
        with self._lock:
            listing = self._items.get(key)
            if listing is not None:
                self._items.move_to_end(key)
            return listing

    def put(self, key: tuple[Any, ...], listing: Listing, now_ns: int) -> None:
        """Keep `listing` unless its state is too recent to be told from a change made now."""
        if not listing.settled(now_ns) or len(listing.body) > self.limit // 4:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.size -= len(old.body)
            self._items[key] = listing
            self.size += len(listing.body)
            while self.size > self.limit:
                _key, dropped = self._items.popitem(last=False)
                self.size -= len(dropped.body)


def _document(responses: list[str]) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8" ?>\n<D:multistatus xmlns:D="DAV:">'
        + "".join(responses)
        + "</D:multistatus>"
    ).encode("utf-8")


class FastPropfind:
    def __init__(self, provider: CollectionProvider) -> None:
        self.provider = provider
        # Rendered <response> elements of members without dead properties.
        self._rendered: dict[tuple[Any, ...], tuple[Entry, str]] = {}
        # Whole depth-1 listings, by folder and request, each with the stamp it was made under.
        self._listings = ListingCache(LISTING_CACHE_BYTES)
        self._parse = small_body_memo(parse_request)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes] | None:
        """The response, or None to let WsgiDAV answer."""
        depth = environ.get("HTTP_DEPTH", "infinity").strip().lower()
        if depth not in ("0", "1") or "HTTP_IF" in environ:
            return None
        body = self._read_body(environ)
        try:
            mode, names = self._parse(body)
            data = self._multistatus(environ, depth, mode, names)
        except Fallback:
            return None
        start_response(
            "207 Multi-Status",
            [
                ("Content-Type", "application/xml; charset=utf-8"),
                ("Date", util.get_rfc1123_time()),
                ("Content-Length", str(len(data))),
            ],
        )
        return [data]

    @staticmethod
    def _read_body(environ: dict[str, Any]) -> bytes:
        """The body (RequestLimits has capped and vetted it); left readable for a fallback."""
        length = environ.get("CONTENT_LENGTH", "").strip()
        if not length.isdigit() or int(length) == 0:
            return b""
        body = environ["wsgi.input"].read(int(length))
        environ["wsgi.input"] = io.BytesIO(body)
        return body

    def _multistatus(self, environ: dict[str, Any], depth: str, mode: str, names: tuple[str, ...]) -> bytes:
        """The 207 body: a folder's listing from the cache while its stamp holds, else rendered."""
        store = self.provider.store
        cid, path = environ[COLLECTION], environ["PATH_INFO"]
        entry = store.stat(cid, path)
        if entry is None:
            raise Fallback  # WsgiDAV answers 404
        if self._locked(cid, path, entry):
            raise Fallback
        path = "/" + "/".join(p for p in path.split("/") if p)
        listing = entry.is_dir and depth == "1" and not (path == "/" and QUOTA_NAMES.intersection(names))
        if not listing:
            return _document(self._responses(environ, cid, path, entry, depth, mode, names))
        key = (cid, path, mode, names)
        stamp = (entry.ino, entry.ctime_ns, store.listing_stamp(cid, path))
        cached = self._listings.get(key)
        if cached is not None and cached.stamp == stamp and self._subfolders_unchanged(cid, path, cached):
            return cached.body
        listed: list[Entry] = []
        data = _document(self._responses(environ, cid, path, entry, depth, mode, names, listed))
        subfolders = tuple((e.name, e.ino, e.ctime_ns) for e in listed if e.is_dir)
        self._listings.put(key, Listing(stamp, subfolders, data), time.time_ns())
        return data

    def _subfolders_unchanged(self, cid: str, path: str, cached: Listing) -> bool:
        """Whether the sub-folders a cached listing shows are as they were (their own times are in it)."""
        now = self.provider.store.folder_stamps(cid, path, (name for name, _ino, _ctime in cached.subfolders))
        return now == [(ino, ctime) for _name, ino, ctime in cached.subfolders]

    def _responses(
        self,
        environ: dict[str, Any],
        cid: str,
        path: str,
        entry: Entry,
        depth: str,
        mode: str,
        names: tuple[str, ...],
        listed: list[Entry] | None = None,
    ) -> list[str]:
        """One <response> per member; `listed` collects the members listed, for the cache."""
        store = self.provider.store
        members: list[tuple[str, Entry]] = [(path, entry)]
        with_props = set()
        if entry.is_dir and depth == "1":
            base = path.rstrip("/")
            found = store.list_entries(cid, path)
            if listed is not None:
                listed.extend(found)
            members += [(f"{base}/{e.name}", e) for e in found]
            with_props = store.names_with_props(cid, path)
        config = environ["wsgidav.config"]
        out = [self._response(environ, config, path, entry, mode, names, store.read_props(cid, path))]
        request = (mode, names)
        rendered = self._rendered
        for member_path, member in members[1:]:
            if member.name in with_props:
                dead = store.read_props(cid, member_path)
                out.append(self._response(environ, config, member_path, member, mode, names, dead))
                continue
            # A member's answer depends only on the request, its path and its entry
            # (inode state and record). Unchanged members come back from the store as
            # the very entry they were kept as, so most are matched by identity; an
            # equal entry made again is matched field by field.
            key = (request, cid, member_path)
            known = rendered.get(key)
            if known is not None and (known[0] is member or known[0] == member):
                out.append(known[1])
                continue
            text = self._response(environ, config, member_path, member, mode, names, {})
            if len(rendered) >= RENDER_CACHE_SIZE:
                rendered.clear()
            rendered[key] = (member, text)
            out.append(text)
        return out

    def _locked(self, cid: str, path: str, entry: Entry) -> bool:
        lock_manager = self.provider.lock_manager
        if lock_manager is None:
            return False
        ref = "/" + cid + "/" + "/".join(p for p in path.split("/") if p)
        if entry.is_dir:
            ref = ref.rstrip("/") + "/"
        ref = quote(ref)
        if lock_manager.get_url_lock_list(ref):
            return True
        return bool(lock_manager.storage.get_lock_list(ref, include_root=True, include_children=True, token_only=True))

    def _live(self, environ: dict[str, Any], config: dict[str, Any], path: str, e: Entry) -> dict[str, str | None]:
        """Live property name -> inner XML (escaped), None for an empty element."""
        props: dict[str, str | None] = {
            "{DAV:}resourcetype": "<D:collection/>" if e.is_dir else None,
            "{DAV:}creationdate": iso_date(e.ctime),
        }
        if not e.is_dir:
            props["{DAV:}getcontentlength"] = str(e.size)
            props["{DAV:}getcontenttype"] = mime_type(path, config)
        props["{DAV:}getlastmodified"] = http_date(e.mtime)
        props["{DAV:}displayname"] = escape(e.name) if e.name else None
        if not e.is_dir:
            props["{DAV:}getetag"] = entity_tag(e.etag) or None
        props["{DAV:}lockdiscovery"] = None
        props["{DAV:}supportedlock"] = SUPPORTED_LOCK
        return props

    def _on_request(self, environ: dict[str, Any], path: str, e: Entry, name: str) -> str | None | object:
        """Properties computed only when named: checksums and quota; _ABSENT if there is none."""
        if name == OC_CHECKSUMS and e.sha1:
            return f'<NSOC:checksum xmlns:NSOC="http://owncloud.org/ns">{oc_checksum(self.provider.store, environ[COLLECTION], path, e)}</NSOC:checksum>'
        if name in (QUOTA_USED, QUOTA_AVAILABLE) and e.is_dir and path == "/":
            store = self.provider.store
            used = store.usage(environ[COLLECTION])[1]
            if name == QUOTA_USED:
                return str(used)
            quota: Quota = environ.get(QUOTA, Quota())
            return str(max(0, quota.bytes - used) if quota.bytes else store.free_bytes())
        return _ABSENT

    def _response(
        self,
        environ: dict[str, Any],
        config: dict[str, Any],
        path: str,
        e: Entry,
        mode: str,
        names: tuple[str, ...],
        dead: dict[str, str],
    ) -> str:
        href = escape(quote(path + ("/" if e.is_dir and path != "/" else ""), safe=HREF_SAFE))
        if mode == "allprop" and not e.is_dir:
            return _allprop_file(href, path, e, config, dead)
        ns = _Namespaces()
        live = self._live(environ, config, path, e)
        found: list[str] = []
        missing: list[str] = []
        if mode in ("allprop", "name"):
            for name, inner in live.items():
                found.append(_element(ns, name, None if mode == "name" else inner))
            for name, xml in dead.items():
                found.append(_element(ns, name, None) if mode == "name" else xml)
        else:
            for name in names:
                if name in live:
                    found.append(_element(ns, name, live[name]))
                elif name in dead:
                    found.append(dead[name])
                else:
                    value = self._on_request(environ, path, e, name)
                    if value is _ABSENT:
                        missing.append(_element(ns, name, None))
                    else:
                        found.append(_element(ns, name, value))  # type: ignore[arg-type]
        parts = [f"<D:response{ns.declarations()}><D:href>{href}</D:href>"]
        if found:
            parts.append(f"<D:propstat><D:prop>{''.join(found)}</D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat>")
        if missing:
            parts.append(
                f"<D:propstat><D:prop>{''.join(missing)}</D:prop><D:status>HTTP/1.1 404 Not Found</D:status></D:propstat>"
            )
        parts.append("</D:response>")
        return "".join(parts)


def _allprop_file(href: str, path: str, e: Entry, config: dict[str, Any], dead: dict[str, str]) -> str:
    """allprop of a file in one template: the same properties as _live, in the same order."""
    return (
        f"<D:response><D:href>{href}</D:href><D:propstat><D:prop><D:resourcetype/>"
        f"<D:creationdate>{iso_date(e.ctime)}</D:creationdate>"
        f"<D:getcontentlength>{e.size}</D:getcontentlength>"
        f"<D:getcontenttype>{mime_type(path, config)}</D:getcontenttype>"
        f"<D:getlastmodified>{http_date(e.mtime)}</D:getlastmodified>"
        f"<D:displayname>{escape(e.name)}</D:displayname>"
        f"<D:getetag>{entity_tag(e.etag)}</D:getetag>"
        f"<D:lockdiscovery/><D:supportedlock>{SUPPORTED_LOCK}</D:supportedlock>{''.join(dead.values())}"
        "</D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>"
    )


def _element(ns: _Namespaces, name: str, inner: str | None) -> str:
    tag = ns.tag(name)
    return f"<{tag}/>" if inner is None else f"<{tag}>{inner}</{tag}>"
