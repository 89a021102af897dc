"""The words the layers share: environ keys, property names, URL prefixes, status lines and date formats.

One module so that a name means one thing everywhere, and so that a face
and the engine below it agree on a key without importing each other.
Every environ key uss_dav sets starts with "uss.".
"""

from __future__ import annotations

import functools
import time
from http import HTTPStatus

# --- environ keys set by the one authentication path (uss_dav.auth) ----------
#: The KeyRecord of the key that authenticated the request.
KEY_RECORD = "uss.key"
#: The id of that key's collection.
COLLECTION = "uss.collection"
#: The compression mode uploads of that key are stored with.
MODE = "uss.compression"
#: That key's Quota.
QUOTA = "uss.quota"

# --- environ keys the WebDAV face sets for itself -----------------------------
#: The file a GET or HEAD serves, opened before anything is decided.
OPENED = "uss.opened"
#: (path, resource) of a PUT's target as the provider found it, for WsgiDAV's own first look-up.
PUT_TARGET = "uss.put_target"
#: The parsed X-OC-Mtime of the request.
MTIME = "uss.mtime"

# --- environ keys set by the outermost layer (uss_dav.metrics) -----------------
#: The request's id, as returned in X-Request-Id.
REQUEST_ID = "uss.request_id"

# --- environ keys the HTTP engine offers the faces ----------------------------
#: `sendfile(file, count)`: send `count` bytes of an open file from its
#: position, after what the application has yielded so far; returns the
#: number sent. Present only where the engine can (plain TCP).
SENDFILE = "uss.sendfile"
#: Bytes of a file a face yields itself before handing the rest to SENDFILE:
#: they start the response in every middleware and leave with the headers.
#: A page, not more: a GET of 4 MiB at one client ran 1.13x faster (same
#: run) than with 64 KiB, which were read into Python and copied out again.
FIRST_PIECE = 4 * 1024
#: A file up to this size goes out whole with its headers, in one send.
WHOLE_PIECE = 64 * 1024


def first_piece(size: int) -> int:
    """How many of a file's `size` bytes leave with the headers; sendfile sends the rest."""
    return size if size <= WHOLE_PIECE else FIRST_PIECE

# --- URLs ---------------------------------------------------------------------
#: Where the REST API lives; everything else but the gallery is WebDAV.
REST_PREFIX = "/api/v1"

# --- WebDAV property names (Clark notation) -----------------------------------
OC_CHECKSUMS = "{http://owncloud.org/ns}checksums"
OC_CHECKSUM = "{http://owncloud.org/ns}checksum"
#: What rclone PROPPATCHes when X-OC-Mtime was not accepted: unix seconds.
DAV_LASTMODIFIED = "{DAV:}lastmodified"
DAV_GETETAG = "{DAV:}getetag"
QUOTA_PROPS = ("{DAV:}quota-used-bytes", "{DAV:}quota-available-bytes")



def entity_tag(etag: str | None) -> str:
    """An ETag as the wire carries it, quoted (RFC 9110 8.8.3), for the header and getetag alike (RFC 4918 15.6)."""
    return f'"{etag}"' if etag else ""


# --- status lines -------------------------------------------------------------
#: The reason phrase of every status line either face or the engine sends: RFC 9110's names
#: (Python 3.11's table still has RFC 7231's for 413 and 422). WsgiDAV's own table lacks some
#: (413, 422, 503 and 507 read "413 Status") and spells 415 its own way; Werkzeug's is upper-case.
PHRASES: dict[int, str] = {s.value: s.phrase for s in HTTPStatus} | {413: "Content Too Large", 422: "Unprocessable Content"}


def phrase(code: int) -> str:
    """'Content Too Large': the standard phrase of a status code (a problem's title, a status line's words)."""
    return PHRASES.get(code, "Error")


def status_line(code: int) -> str:
    """'413 Content Too Large': the code and its standard phrase."""
    return f"{code} {phrase(code)}"


# --- dates --------------------------------------------------------------------
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def http_date(seconds: float) -> str:
    """RFC 1123 date, as WsgiDAV's util.get_rfc1123_time writes it, without email.utils' overhead."""
    return _http_date(int(seconds))


@functools.lru_cache(maxsize=16384)
def _http_date(seconds: int) -> str:
    """Memoised: a listing formats the same modification times on every PROPFIND, a GET its file's, and the engine each second's Date once."""
    t = time.gmtime(seconds)
    return f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} {t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"


def iso_date(seconds: float) -> str:
    """RFC 3339 date in UTC, as DAV:creationdate carries it."""
    t = time.gmtime(seconds)
    return f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}Z"
