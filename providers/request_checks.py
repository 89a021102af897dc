"""Request headers WebDAV methods depend on, refused (400) or failed (412) before anything runs.

WsgiDAV reads Depth and Destination leniently: an empty Depth counts as
absent, an unparsable Destination can end in a 500, and a tagged `If` list
naming a resource on another server is looked up by URL, never found and
so skipped: the request then runs as if it carried no condition.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from wsgidav import util
from wsgidav.dav_error import (
    HTTP_BAD_GATEWAY,
    HTTP_BAD_REQUEST,
    HTTP_PRECONDITION_FAILED,
    DAVError,
)

from uss_dav.vocabulary import COLLECTION

DEPTHS = ("0", "1", "infinity")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_CONTROL = re.compile(r"[\x00-\x20\x7f]")
_DEFAULT_PORTS = {"http": "80", "https": "443"}


def check_depth(environ: dict[str, Any]) -> None:
    """400 for a Depth header that is present but not 0, 1 or infinity (an empty one included)."""
    if "HTTP_DEPTH" in environ and environ["HTTP_DEPTH"].strip().lower() not in DEPTHS:
        raise DAVError(HTTP_BAD_REQUEST, f"Depth must be 0, 1 or infinity, not {environ['HTTP_DEPTH'][:20]!r}")


def check_destination(environ: dict[str, Any]) -> None:
    """400 for a Destination that is no URL of a path; 502 for one on another server.

    RFC 4918 (9.8.5, 9.9.4) names 502 for a destination "on another server,
    repository, or URL namespace": the request is well formed, this server
    just cannot carry it out. What cannot be read as a URL at all is the
    client's error: 400.
    """
    raw = environ.get("HTTP_DESTINATION")
    if raw is None:
        return
    if not raw or _CONTROL.search(raw) or _BAD_ESCAPE.search(raw):
        raise DAVError(HTTP_BAD_REQUEST, "Destination is not a URL (empty, a space or control character, or a bad %-escape)")
    try:
        parts = urlsplit(raw)
        path = unquote(parts.path, errors="strict")
        parts.port  # noqa: B018  (raises ValueError for a port that is not a number)
    except (ValueError, UnicodeDecodeError):
        raise DAVError(HTTP_BAD_REQUEST, "Destination is not a URL") from None
    if not path.startswith("/") or any(seg in (".", "..") for seg in path.split("/")) or "\x00" in path:
        raise DAVError(HTTP_BAD_REQUEST, "Destination must be an absolute URL or path without dot segments")
    if parts.scheme and not is_this_server(environ, parts.scheme, parts.netloc):
        raise DAVError(HTTP_BAD_GATEWAY, "Destination is on another server")


def is_this_server(environ: dict[str, Any], scheme: str, netloc: str) -> bool:
    """Whether scheme://netloc names the server this request reached (default ports folded)."""
    scheme = scheme.lower()
    if scheme != environ.get("wsgi.url_scheme", "http").lower():
        return False
    return _host_port(netloc, scheme) == _host_port(_request_host(environ), scheme)


def _request_host(environ: dict[str, Any]) -> str:
    host = environ.get("HTTP_HOST")
    if host:
        return host
    return f"{environ.get('SERVER_NAME', '')}:{environ.get('SERVER_PORT', '')}"


def _host_port(netloc: str, scheme: str) -> tuple[str, str]:
    host, _, port = netloc.rpartition("@")[2].lower().rpartition(":")
    if not host or "]" in port:  # no port given (or an IPv6 literal without one)
        host, port = netloc.rpartition("@")[2].lower(), ""
    return host, port or _DEFAULT_PORTS.get(scheme, "")


def own_path(environ: dict[str, Any], tag: str) -> str | None:
    """The path inside this collection a tagged If list names, or None if this server does not serve it.

    RFC 4918 10.4: a Resource-Tag is an absolute URL or an absolute path.
    Another scheme, host or port, a path outside this mount, a relative
    reference or a malformed one all name something that is not here.
    """
    try:
        parts = urlsplit(tag)
        path = unquote(parts.path, errors="strict")
    except (ValueError, UnicodeDecodeError):
        return None
    if parts.scheme and not is_this_server(environ, parts.scheme, parts.netloc):
        return None
    if not parts.scheme and (parts.netloc or not tag.startswith("/")):
        return None
    mount = environ.get("SCRIPT_NAME", "").rstrip("/")
    if _BAD_ESCAPE.search(tag) or not path.startswith(mount + "/"):
        return None
    path = path[len(mount):]
    if any(seg in (".", "..") for seg in path.split("/")) or "\x00" in path:
        return None
    return unicodedata.normalize("NFC", path)


def rebase_if_tags(environ: dict[str, Any]) -> None:
    """Key the If header's tagged lists the way resources are keyed (/<collection><path>).

    WsgiDAV looks a tagged list up by the resource's ref URL, which here
    starts with the collection id; the client tags with the URL it knows
    (a path or an absolute URL). Without this, every tagged condition would
    be skipped and the request run unconditionally.

    A list tagged with a resource this server does not serve cannot be true
    (its state is unknown here): it is dropped, with the lock tokens it
    named, and if nothing else is left the If header as a whole is false (412).
    """
    util.parse_if_header_dict(environ)
    conditions = environ.get("wsgidav.conditions.if")
    if not conditions:
        return
    rebased: dict[str, Any] = {}
    foreign_tokens: set[str] = set()
    for tag, lists in conditions.items():
        if tag == "*":
            rebased[tag] = lists
            continue
        path = own_path(environ, tag)
        if path is None:
            foreign_tokens.update(value for lst in lists for _flag, kind, value in lst if kind == "locktoken")
            continue
        ref = quote(f"/{environ[COLLECTION]}/{path.strip('/')}")
        for variant in (ref, ref + "/"):  # a folder's ref URL ends with a slash
            rebased.setdefault(variant, []).extend(lists)
    if not rebased:
        raise DAVError(HTTP_PRECONDITION_FAILED, "the If header names only resources this server does not serve")
    environ["wsgidav.conditions.if"] = rebased
    if foreign_tokens:
        environ["wsgidav.ifLockTokenList"] = [t for t in environ["wsgidav.ifLockTokenList"] if t not in foreign_tokens]
