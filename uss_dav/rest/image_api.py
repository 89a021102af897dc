"""The image endpoints: a key's collection seen as a flat, paged list of images.

Writes go through Store.commit with the key's compression mode, exactly as a
WebDAV PUT does, so both front ends store the same bytes and report the same
ETag. Only images are accepted (magic bytes and a readable header, checked by
hooks.formats); the compressor then applies the pixel limit (413).
"""

from __future__ import annotations

import base64
import binascii
import bisect
import logging
import mimetypes
import unicodedata
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from werkzeug.wrappers import Request, Response
from werkzeug.wsgi import wrap_file

from hooks.formats import SNIFF_BYTES, read_header, sniff
from uss_dav.keys import KeyRecord
from uss_dav.rest import bodies, thumbnails
from uss_dav.rest.access import require_key
from uss_dav.rest.bodies import Staged
from uss_dav.rest.names import name_problem
from uss_dav.rest.wire import (
    ApiError,
    choice_param,
    int_param,
    json_body,
    json_response,
)
from uss_dav.services import Services
from uss_dav.statuses import DISK_REFUSALS
from uss_dav.storage import AlreadyExists, Entry, NotFound, Upload, is_apple_file
from uss_dav.vocabulary import REST_PREFIX, entity_tag
from uss_dav.write_locks import WriteLocks

log = logging.getLogger(__name__)

CONTENT_TYPES = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "webp": "image/webp",
    "tiff": "image/tiff",
    "bmp": "image/bmp",
}
DEFAULT_PAGE, MAX_PAGE = 100, 1000


def checked_name(name: str | None) -> str:
    problem = name_problem(name)
    if problem:
        raise ApiError(400, problem)
    return name  # type: ignore[return-value]


def content_type(entry: Entry) -> str:
    """The detected format's type; for files the compressor never saw, a guess from the name."""
    if entry.format in CONTENT_TYPES:
        return CONTENT_TYPES[entry.format]  # type: ignore[index]
    return mimetypes.guess_type(entry.name)[0] or "application/octet-stream"


def _quoted(name: str) -> str:
    return quote(name.encode("utf-8", "surrogateescape"), safe="")


def _timestamp(seconds: float) -> datetime:
    return datetime.fromtimestamp(int(seconds), UTC)


class ImageApi:
    def __init__(self, services: Services, locks: WriteLocks) -> None:
        self.services = services
        self.locks = locks
        self.store = services.store
        self.max_bytes = services.config.max_upload_bytes

    # --- records -------------------------------------------------------------

    def record(self, request: Request, cid: str, entry: Entry) -> dict[str, Any]:
        """The JSON description of one image in collection `cid`, as listed and as served by /meta."""
        dav_root = request.host_url + request.script_root.removesuffix(REST_PREFIX).lstrip("/")
        return {
            "name": entry.name,
            "size": entry.size,
            "content_type": content_type(entry),
            "format": entry.format,
            "width": entry.width,
            "height": entry.height,
            "modified": _timestamp(entry.mtime).isoformat().replace("+00:00", "Z"),
            "etag": entity_tag(entry.etag),
            "sha1": entry.sha1,
            "md5": self.store.md5(cid, entry.name, entry),
            "uploaded_size": entry.uploaded_size,
            "stored_size": entry.stored_size,
            "url": f"{request.root_url}images/{_quoted(entry.name)}",
            "dav_url": f"{dav_root.rstrip('/')}/{_quoted(entry.name)}",
        }

    def rename(self, request: Request, name: str) -> Response:
        """POST /images/{name}/rename {"name": new}: the record under its new name; 409 if taken."""
        record, entry = self._existing(request, name, "MOVE")
        new = json_body(request).get("name")
        new = checked_name(new if isinstance(new, str) else None)
        self._check_lock(request, record, entry.name)
        self._check_lock(request, record, new)
        if new != entry.name:
            try:
                self.store.move(record.collection, entry.name, new, replace=False)
            except AlreadyExists:
                raise ApiError(409, f"an image named {new!r} exists") from None
            except NotFound:
                raise ApiError(404, f"no image named {name!r}") from None
        renamed = self.store.stat(record.collection, new)
        if renamed is None:
            raise ApiError(404, f"no image named {new!r}")
        return json_response(self.record(request, record.collection, renamed))

    def _existing(self, request: Request, name: str, as_method: str = "GET") -> tuple[KeyRecord, Entry]:
        """The key's record and the image `name`, or 404."""
        record = require_key(self.services, request, as_method)
        entry = self.store.stat(record.collection, checked_name(name))
        if entry is None or entry.is_dir:
            raise ApiError(404, f"no image named {name!r}")
        return record, entry

    def _check_lock(self, request: Request, record: KeyRecord, name: str) -> None:
        """423 if a WebDAV client holds a lock on `name` (or on the collection, depth infinity) and no token came."""
        self.locks.check(record.collection, name, principal=record.id, environ=request.environ)

    @staticmethod
    def _check_if_match(request: Request, entry: Entry | None) -> None:
        if request.if_match and (entry is None or not request.if_match.contains(entry.etag or "")):
            raise ApiError(412, "If-Match does not match the image's current ETag")

    # --- reading -------------------------------------------------------------

    def list(self, request: Request) -> Response:
        record = require_key(self.services, request, "GET")
        limit = int_param(request, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
        after = _decode_cursor(request.args.get("cursor"))
        names = self.store.list_names(record.collection, "")
        page: list[Entry] = []
        more = False
        for name in names[bisect.bisect_right(names, after) if after is not None else 0 :]:
            if is_apple_file(name):  # Finder's bookkeeping, stored for WebDAV clients only
                continue
            entry = self.store.stat(record.collection, name)
            if entry is None or entry.is_dir:
                continue
            if len(page) == limit:
                more = True
                break
            page.append(entry)
        headers = {}
        next_cursor = _encode_cursor(page[-1].name) if more else None
        if next_cursor:
            headers["Link"] = f'<{request.base_url}?limit={limit}&cursor={next_cursor}>; rel="next"'
        body = {"images": [self.record(request, record.collection, e) for e in page], "next_cursor": next_cursor}
        return json_response(body, headers=headers)

    def meta(self, request: Request, name: str) -> Response:
        record, entry = self._existing(request, name)
        response = json_response(self.record(request, record.collection, entry))
        response.set_etag(entry.etag or "")
        return response

    def download(self, request: Request, name: str) -> Response:
        """The bytes, with ETag, Last-Modified, Range and conditional requests handled by Werkzeug."""
        record, entry = self._existing(request, name)
        opened = self.store.open(record.collection, entry.name)
        if opened is None:
            raise ApiError(404, f"no image named {name!r}")
        try:
            entry = opened.entry  # describes exactly the bytes about to be sent
            self._check_if_match(request, entry)
            response = Response(
                wrap_file(request.environ, opened.stream(), self.services.config.block_size),
                mimetype=content_type(entry),
                direct_passthrough=True,
            )
            response.set_etag(entry.etag or "")
            response.last_modified = _timestamp(entry.mtime)
            response.content_length = entry.size
            return response.make_conditional(request, accept_ranges=True, complete_length=entry.size)
        except BaseException:
            opened.close()
            raise

    def thumbnail(self, request: Request, name: str) -> Response:
        """A thumbnail made once per content, size and format, then served from disk."""
        record, entry = self._existing(request, name)
        size = int_param(request, "size", thumbnails.DEFAULT_SIZE, thumbnails.MIN_SIZE, thumbnails.MAX_SIZE)
        out = choice_param(request, "format", tuple(thumbnails.FORMATS))
        cid, digest = record.collection, entry.sha1 or entry.etag or ""
        data = self.store.read_thumbnail(cid, digest, size, out)
        if data is None:
            opened = self.store.open(cid, entry.name)
            if opened is None:
                raise ApiError(404, f"no image named {name!r}")
            digest = opened.entry.sha1 or opened.entry.etag or ""  # the content actually read
            with opened.stream() as fh:
                data = thumbnails.render(fh, size, out, self.services.config.compression.max_pixels)
            try:
                self.store.write_thumbnail(cid, digest, size, out, data)
            except OSError as exc:
                if exc.errno not in DISK_REFUSALS:
                    raise
                # A full or read-only disk stops the keeping, not the gallery: this one is made again next time.
                log.warning("thumbnail of %s served without keeping it: %s", name, exc)
        response = Response(data, mimetype=thumbnails.FORMATS[out][1])
        response.set_etag(f"{digest}-{size}-{out}")
        return response.make_conditional(request)

    def usage(self, request: Request) -> Response:
        record = require_key(self.services, request, "GET")
        files, size = self.store.usage(record.collection)
        quota = self.services.quota_for(record)
        limits = {"bytes": quota.bytes or None, "files": quota.files or None} if quota else None
        return json_response({"files": files, "bytes": size, "quota": limits})

    # --- writing -------------------------------------------------------------

    def create(self, request: Request) -> Response:
        """POST: new images from form parts named `file`, or from a raw body named by ?name=."""
        record = require_key(self.services, request, "PUT")
        cid = record.collection
        seen: set[str] = set()

        def new_name(filename: str | None) -> str:
            name = checked_name(filename)
            stored_as = unicodedata.normalize("NFC", name)  # as storage keeps names
            if stored_as in seen:
                raise ApiError(409, f"two parts named {name!r}")
            self._check_lock(request, record, name)
            if self.store.stat(cid, name) is not None:
                raise ApiError(409, f"an image named {name!r} exists")
            seen.add(stored_as)
            return name

        if request.mimetype == "multipart/form-data":
            if "name" in request.args:
                raise ApiError(400, "?name= is for a raw body; form parts are named by their filename")
            staged = bodies.stage_form(request, self.store, cid, new_name, self.max_bytes)
            if not staged:
                raise ApiError(400, "no form part named 'file'")
        elif "name" not in request.args:
            raise ApiError(400, "a raw body needs ?name= (or send multipart/form-data with 'file' parts)")
        else:
            staged = [bodies.stage_raw(request, self.store, cid, new_name(request.args["name"]), self.max_bytes)]
        entries = self._commit_new(record, staged)
        body = {"images": [self.record(request, cid, e) for e in entries]}
        return json_response(body, 201, {"Location": body["images"][0]["url"]})

    def replace(self, request: Request, name: str) -> Response:
        """PATCH: the whole content of an existing image, from a raw body or one `file` part."""
        record, entry = self._existing(request, name, "PUT")
        if record.scope == "upload":
            raise ApiError(403, "an upload-only key cannot replace images")
        self._check_lock(request, record, entry.name)
        self._check_if_match(request, entry)
        cid = record.collection
        if request.mimetype == "multipart/form-data":
            staged = bodies.stage_form(request, self.store, cid, _only_once(name), self.max_bytes)
            if not staged:
                raise ApiError(400, "no form part named 'file'")
        else:
            staged = [bodies.stage_raw(request, self.store, cid, name, self.max_bytes)]
        _name, upload = staged[0]
        try:
            self._refuse_non_image(upload)
            current = self.store.stat(cid, name)
            if current is None or current.is_dir:
                raise ApiError(404, f"image {name!r} was deleted meanwhile")
            self._check_if_match(request, current)
        except BaseException:
            self.store.abort(upload)
            raise
        new = self.store.commit(
            upload, mode=self.services.mode_for(record), quota=self.services.quota_for(record), images_only=True
        )
        response = json_response(self.record(request, cid, new))
        response.set_etag(new.etag or "")
        return response

    def delete(self, request: Request, name: str) -> Response:
        record, entry = self._existing(request, name, "DELETE")
        self._check_lock(request, record, entry.name)
        self._check_if_match(request, entry)
        self.store.delete(record.collection, name)
        return Response(status=204)

    def _commit_new(self, record: KeyRecord, staged: list[Staged]) -> list[Entry]:
        """Commit every staged upload as a new name, or none: the ones done are removed again."""
        done: list[Entry] = []
        try:
            for _name, upload in staged:
                self._refuse_non_image(upload)
            mode, quota = self.services.mode_for(record), self.services.quota_for(record)
            for _name, upload in staged:
                done.append(self.store.commit(upload, mode=mode, create_only=True, quota=quota, images_only=True))
        except BaseException:
            for _name, upload in staged:
                self.store.abort(upload)
            self._remove(record.collection, done)
            raise
        return done

    def _remove(self, cid: str, entries: list[Entry]) -> None:
        """Delete what this request created, unless someone replaced it meanwhile."""
        for entry in entries:
            current = self.store.stat(cid, entry.name)
            if current is not None and current.etag == entry.etag:
                self.store.delete(cid, entry.name)

    @staticmethod
    def _refuse_non_image(upload: Upload) -> None:
        """415 unless the staged bytes start like an image we read and its header parses."""
        with open(upload.path, "rb") as fh:
            fmt = sniff(fh.read(SNIFF_BYTES))
            if fmt is None:
                raise ApiError(415, "not a PNG, JPEG, GIF, WebP, TIFF or BMP image")
            if read_header(fh, fmt) is None:
                raise ApiError(415, f"unreadable {fmt} header")


def _only_once(name: str) -> Callable[[str | None], str]:
    """A form's name_for for PATCH: its one `file` part replaces `name`; a second is refused."""
    seen = []

    def name_for(_filename: str | None) -> str:
        if seen:
            raise ApiError(400, "PATCH takes one form part named 'file'")
        seen.append(name)
        return name

    return name_for


def _encode_cursor(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode("utf-8", "surrogateescape")).decode().rstrip("=")


def _decode_cursor(cursor: str | None) -> str | None:
    if not cursor:
        return None
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if not raw:
        raise ApiError(400, "invalid cursor")
    return raw.decode("utf-8", "surrogateescape")
