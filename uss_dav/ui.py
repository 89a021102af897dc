"""The browser gallery: its static files under /ui/, and which requests belong to it.

    wants_ui(environ) -> bool     # asked by the dispatcher before REST and WebDAV
    make_ui_app() -> WSGI app     # answers the requests wants_ui claimed

The page is three static files (uss_dav/static/ui/) that talk only to the REST
API; nothing here reads keys or collections. A browser's page load of `/` is
redirected to `/ui/`, so the page has one address and its relative links
(`app.js`, `../api/v1/`) hold under any mount prefix. WebDAV clients never ask
for text/html first, so they keep getting WebDAV at `/`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple

from uss_dav.responses import text_response

STATIC_DIR = Path(__file__).resolve().parent / "static" / "ui"
UI_PREFIX = "/ui"
INDEX = "index.html"

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
    ".png": "image/png",
}

#: Same-origin script and style only, no inline code; images also from blob: (thumbnails are
#: fetched with the key and shown through object URLs). Trusted Types make any string-to-HTML
#: sink (innerHTML...) throw, so a name can never become markup.
CSP = (
    "default-src 'self'; img-src 'self' blob:; script-src 'self'; style-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; connect-src 'self'; "
    "form-action 'none'; require-trusted-types-for 'script'; trusted-types 'none'"
)
SECURITY_HEADERS = [
    ("Content-Security-Policy", CSP),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
]

#: Headers only WebDAV clients send; a request carrying one is never the gallery's.
DAV_HEADERS = (
    "HTTP_DEPTH", "HTTP_TRANSLATE", "HTTP_IF", "HTTP_LOCK_TOKEN",
    "HTTP_DESTINATION", "HTTP_OVERWRITE", "HTTP_TIMEOUT", "HTTP_X_OC_MTIME",
)


class StaticFile(NamedTuple):
    body: bytes
    content_type: str
    etag: str


def load_files(directory: Path = STATIC_DIR) -> dict[str, StaticFile]:
    """Every file of the gallery by name, read once (the page is a few tens of KB)."""
    files = {}
    for path in sorted(directory.iterdir()):
        ctype = CONTENT_TYPES.get(path.suffix)
        if not path.is_file() or ctype is None:
            continue
        body = path.read_bytes()
        files[path.name] = StaticFile(body, ctype, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')
    return files


#: Names wants_ui claims under /ui/; only these shadow a WebDAV folder that happens to be named "ui".
FILE_NAMES = frozenset(load_files())


def accepts_html(accept: str) -> bool:
    """True if an Accept header names text/html explicitly (`*/*` does not count) with q > 0."""
    for item in accept.split(","):
        media, _, params = item.partition(";")
        if media.strip().lower() != "text/html":
            continue
        for param in params.split(";"):
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    return float(value) > 0
                except ValueError:
                    return False
        return True
    return False


def is_page_load(environ: dict[str, Any]) -> bool:
    """A browser asking for a page: GET, text/html accepted, and no key in the request.

    A browser that once answered a Basic challenge for this server sends that
    key unasked; its top-level navigations (Sec-Fetch-Mode: navigate, sent by
    browsers only) still get the page.
    """
    if environ.get("REQUEST_METHOD") != "GET" or not accepts_html(environ.get("HTTP_ACCEPT", "")):
        return False
    return "HTTP_AUTHORIZATION" not in environ or environ.get("HTTP_SEC_FETCH_MODE") == "navigate"


def wants_ui(environ: dict[str, Any]) -> bool:
    """Whether the gallery answers this request rather than REST or WebDAV.

    `/`: a browser's page load (see is_page_load). `/ui`, `/ui/` and the
    gallery's own files: GET or HEAD. Never a request with a WebDAV header
    (Depth, Translate, If...), so every WebDAV method and client is unaffected.
    """
    if environ.get("REQUEST_METHOD") not in ("GET", "HEAD") or any(h in environ for h in DAV_HEADERS):
        return False
    path = environ.get("PATH_INFO", "")
    if path == "/":
        return is_page_load(environ)
    if path in (UI_PREFIX, UI_PREFIX + "/"):
        return True
    return path.startswith(UI_PREFIX + "/") and path[len(UI_PREFIX) + 1 :] in FILE_NAMES


StartResponse = Callable[..., Any]


class UiApp:
    """Serves the gallery's files with a strict CSP; `/` and `/ui` redirect to `/ui/`."""

    def __init__(self, files: dict[str, StaticFile]) -> None:
        self.files = files

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            return _text(start_response, "405 Method Not Allowed", "the gallery's files are read-only", [("Allow", "GET, HEAD")])
        path = environ.get("PATH_INFO", "")
        if path in ("/", UI_PREFIX):
            return _redirect(environ, start_response)
        name = path.removeprefix(UI_PREFIX + "/") if path.startswith(UI_PREFIX + "/") else None
        found = self.files.get(name or INDEX) if name is not None else None
        if found is None:
            return _text(start_response, "404 Not Found", "no such file in the gallery")
        return _serve(environ, start_response, found)


def _serve(environ: dict[str, Any], start_response: StartResponse, found: StaticFile) -> Iterable[bytes]:
    # Not fingerprinted, so revalidate every time: a restart with new files shows at once.
    headers = [("ETag", found.etag), ("Cache-Control", "no-cache"), *SECURITY_HEADERS]
    if found.etag in environ.get("HTTP_IF_NONE_MATCH", ""):
        start_response("304 Not Modified", headers)
        return []
    headers += [("Content-Type", found.content_type), ("Content-Length", str(len(found.body)))]
    start_response("200 OK", headers)
    return [] if environ.get("REQUEST_METHOD") == "HEAD" else [found.body]


def _redirect(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    location = environ.get("SCRIPT_NAME", "").rstrip("/") + UI_PREFIX + "/"
    body = f"the gallery is at {location}\n".encode()
    start_response(
        "302 Found",
        [
            ("Location", location),
            # Another client may ask for / with other headers and get WebDAV: never cache this answer.
            ("Cache-Control", "no-store"),
            ("Vary", "Accept, Authorization"),
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            *SECURITY_HEADERS,
        ],
    )
    return [] if environ.get("REQUEST_METHOD") == "HEAD" else [body]


def _text(start_response: StartResponse, status: str, reason: str, extra: list[tuple[str, str]] | None = None) -> Iterable[bytes]:
    return text_response(start_response, status, reason, [*SECURITY_HEADERS, *(extra or [])])


def make_ui_app() -> Callable[..., Iterable[bytes]]:
    """The gallery's WSGI app, to be called for the requests wants_ui(environ) claims."""
    return UiApp(load_files())
