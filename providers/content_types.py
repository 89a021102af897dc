"""A name's Content-Type, as WsgiDAV's guess_mime_type says it, looked up once per suffix pair.

Headers (GET) and properties (PROPFIND's getcontenttype) must agree with
each other and with WsgiDAV's own answer; mimetypes reads at most two
suffixes (an encoding such as .gz, then the type: "a.tar.gz" is
application/x-tar), so those two, with the charset, are the cache key.
"""

from __future__ import annotations

import functools

from wsgidav import util


def content_type(path: str, default_charset: str | None) -> str:
    """The Content-Type of the name at the end of `path`; text types carry `default_charset`."""
    name = path[path.rfind("/") + 1:]
    last = name.rfind(".")
    if last <= 0:
        return _by_suffixes(name[last:] if last == 0 else "", default_charset)
    before = name.rfind(".", 0, last)
    return _by_suffixes(name[before if before > 0 else last:], default_charset)


@functools.lru_cache(maxsize=1024)
def _by_suffixes(suffixes: str, default_charset: str | None) -> str:
    return util.guess_mime_type("x" + suffixes if suffixes else "x", {"default_charset": default_charset})
