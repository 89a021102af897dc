"""What GET and HEAD of a folder answer: a plain-text list of its members.

WsgiDAV answers 403 there when its directory browser is off, and clients
such as webdavclient3 check a folder with HEAD before every mkdir and
upload. Browsers loading `/` get the gallery instead (uss_dav.ui.wants_ui),
so this listing is for scripts: one member per line, as a relative URL
reference (percent-encoded, so no name can break a line or become markup),
folders with a trailing slash.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote

from uss_dav.storage import Entry
from uss_dav.vocabulary import http_date


def listing_body(entries: Iterable[Entry]) -> bytes:
    """One percent-encoded relative reference per member; folders end with '/'."""
    lines = [quote(e.name, safe="") + ("/" if e.is_dir else "") for e in entries]
    return "".join(f"{line}\n" for line in lines).encode("ascii")


def send_listing(
    environ: dict[str, Any], start_response: Callable[..., Any], folder: Entry, entries: Iterable[Entry]
) -> list[bytes]:
    """200 with the listing (its headers only for HEAD)."""
    body = listing_body(entries)
    start_response(
        "200 OK",
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Last-Modified", http_date(folder.mtime)),
            ("X-Content-Type-Options", "nosniff"),
            ("Cache-Control", "no-cache"),
        ],
    )
    return [] if environ["REQUEST_METHOD"] == "HEAD" else [body]
