"""The WsgiDAV provider that serves the authenticated key's collection as `/`.

Resources here hold no file handles and write nothing themselves: every
read and write goes through uss_dav.storage, which is also what the REST
side uses. Lock and property records are keyed by `/<collection id><path>`
(see `get_ref_url`), so two keys locking `/a.png` never meet.
"""

from __future__ import annotations

import functools
import logging
import unicodedata
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast
from urllib.parse import quote, unquote, urlparse

from wsgidav import util
from wsgidav.dav_error import (
    HTTP_BAD_REQUEST,
    HTTP_CONFLICT,
    HTTP_FORBIDDEN,
    HTTP_NOT_FOUND,
    HTTP_PRECONDITION_FAILED,
    DAVError,
)
from wsgidav.dav_provider import DAVCollection, DAVNonCollection, DAVProvider
from wsgidav.xml_tools import etree

from providers.checksums import oc_checksum
from providers.content_types import content_type
from providers.errors import as_dav_error
from providers.folder_listing import send_listing
from providers.propfind import FastPropfind
from providers.request_checks import rebase_if_tags
from uss_dav import storage
from uss_dav.storage import Entry, Opened, Store, Upload, is_apple_file
from uss_dav.vocabulary import (
    COLLECTION,
    DAV_GETETAG,
    DAV_LASTMODIFIED,
    KEY_RECORD,
    MODE,
    MTIME,
    OC_CHECKSUM,
    OC_CHECKSUMS,
    OPENED,
    PUT_TARGET,
    QUOTA,
    QUOTA_PROPS,
    entity_tag,
)

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


def call_mapped(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """func(*args, **kwargs), its storage errors turned into the matching DAVError."""
    try:
        return func(*args, **kwargs)
    except DAVError:
        raise
    except Exception as exc:
        dav = as_dav_error(exc)
        if dav is None:
            raise
        raise dav from None


def mapped(func: F) -> F:
    """Turn storage errors raised inside `func` into the matching DAVError."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return call_mapped(func, *args, **kwargs)

    return cast(F, wrapper)


class UploadBody:
    """The upload as WsgiDAV's PUT writes it: storage errors surface as DAVErrors, not 500s."""

    def __init__(self, upload: Upload) -> None:
        self.upload = upload

    @mapped
    def write(self, data: bytes) -> int:
        return self.upload.write(data)

    def writelines(self, chunks: Any) -> None:
        pieces = iter(chunks)
        while True:
            try:
                chunk = next(pieces)
            except StopIteration:
                return
            except (ValueError, OSError, OverflowError, MemoryError) as exc:
                # the engine raises these for a chunked body that breaks off or declares an
                # absurd chunk size: either way the body is unusable.
                raise DAVError(HTTP_BAD_REQUEST, f"unusable request body: {type(exc).__name__}") from None
            # Outside the try: a write that fails (a full disk) is the server's, not the body's.
            self.write(chunk)

    def close(self) -> None:
        """The upload is finished (or dropped) by end_write."""


def declared_length(environ: dict[str, Any]) -> int | None:
    """The length a PUT's body says it has: Content-Length, or for a chunked one Finder's X-Expected-Entity-Length."""
    if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        announced = environ.get("HTTP_X_EXPECTED_ENTITY_LENGTH", "").strip()
        return int(announced) if announced.isdigit() else None
    return util.get_content_length(environ)


def commit_upload(store: Store, upload: Upload, environ: dict[str, Any], name: str) -> Entry:
    """Store a PUT's complete body under its name, as the request's headers and key ask; the new entry."""
    try:
        return store.commit(
            upload,
            mode="off" if is_apple_file(name) else environ.get(MODE, "off"),
            expected_length=declared_length(environ),
            create_only=environ.get("HTTP_IF_NONE_MATCH", "").strip() == "*",
            checksum=environ.get("HTTP_OC_CHECKSUM"),
            mtime=environ.get(MTIME),
            quota=environ.get(QUOTA, storage.Quota()),
        )
    except storage.AlreadyExists as exc:
        # The name was taken meanwhile: the client's If-None-Match: * no longer holds.
        raise DAVError(HTTP_PRECONDITION_FAILED, str(exc)) from None


@mapped
def check_put(store: Store, environ: dict[str, Any], exists: bool) -> None:
    """What a PUT must pass before its body is read, besides WsgiDAV's own checks (or PlainPut's)."""
    # RFC 9110 13.1.1: If-Match: * fails when there is no current representation;
    # WsgiDAV skips conditionals for unmapped URLs.
    if not exists and environ.get("HTTP_IF_MATCH", "").strip() == "*":
        raise DAVError(HTTP_PRECONDITION_FAILED, "If-Match: * but the file does not exist")
    if exists and environ[KEY_RECORD].scope == "upload":
        raise DAVError(HTTP_FORBIDDEN, "an upload-only key cannot overwrite files")
    length = util.get_content_length(environ)
    if length:
        store.check_quota(environ[COLLECTION], environ["PATH_INFO"], length, environ.get(QUOTA, storage.Quota()))


class _Discard:
    """Where the body of a discarded upload goes."""

    def write(self, data: bytes) -> int:
        return len(data)

    def writelines(self, chunks: Any) -> None:
        for _chunk in chunks:
            pass

    def close(self) -> None:
        pass

class _Member:
    """What files and folders share: where they live and how they are keyed."""

    path: str
    environ: dict[str, Any]
    provider: CollectionProvider

    @property
    def cid(self) -> str:
        return cast(str, self.environ[COLLECTION])

    @property
    def store(self) -> Store:
        return self.provider.store

    def get_property_value(self, name: str) -> Any:
        # WsgiDAV answers an empty 200 for quota where there is none (RFC 4331 wants 404).
        if name in QUOTA_PROPS and (not self.is_collection or self.path not in ("", "/")):  # type: ignore[attr-defined]
            raise DAVError(HTTP_NOT_FOUND)
        return super().get_property_value(name)  # type: ignore[misc]

    def get_preferred_path(self) -> str:
        """The path in NFC, as stored: NFC and NFD spellings share one lock and one href."""
        return unicodedata.normalize("NFC", super().get_preferred_path())  # type: ignore[misc]

    def get_ref_url(self) -> str:
        return quote(f"/{self.cid}{self.get_preferred_path()}")

    def support_recursive_move(self, dest_path: str) -> bool:
        return True

    @mapped
    def move_recursive(self, dest_path: str) -> None:
        """A file or a whole folder in one rename (with its metadata)."""
        self.refuse_case_twin(dest_path)
        self.store.move(self.cid, self.path, dest_path)

    @mapped
    def set_last_modified(self, dest_path: str, time_stamp: Any, *, dry_run: bool) -> bool:
        seconds = time_stamp if isinstance(time_stamp, (int, float)) else util.parse_time_string(time_stamp)
        if seconds is None:
            raise DAVError(HTTP_BAD_REQUEST, "unreadable time stamp")
        if not dry_run:
            self.store.set_mtime(self.cid, dest_path, seconds)
        return True

    def refuse_case_twin(self, path: str) -> None:
        """409 if `path` is new but its folder holds a name differing only by case (when configured).

        The resource itself never counts as a twin: renaming photo.jpg to Photo.jpg is allowed.
        """
        if not self.provider.refuse_case_collisions:
            return
        name = unicodedata.normalize("NFC", util.get_uri_name(path))
        own = unicodedata.normalize("NFC", util.get_uri_name(self.path))
        same_folder = (util.get_uri_parent(path) or "/") == (util.get_uri_parent(self.path) or "/")
        for other in self.store.list_names(self.cid, util.get_uri_parent(path) or "/"):
            if other == name or (same_folder and other == own):
                continue
            if other.casefold() == name.casefold():
                raise DAVError(HTTP_CONFLICT, f"{other!r} exists: names may not differ only by case")


class FileResource(_Member, DAVNonCollection):
    """A file; `entry` is None while a PUT to a new name is still streaming in."""

    def __init__(self, path: str, environ: dict[str, Any], entry: Entry | None, opened: Opened | None = None) -> None:
        super().__init__(path, environ)
        self.entry = entry
        self._opened = opened
        self._upload: Upload | None = None

    def get_content_length(self) -> int:
        return self.entry.size if self.entry else 0

    def get_content_type(self) -> str:
        return content_type(self.path, self.environ["wsgidav.config"].get("default_charset"))

    def get_creation_date(self) -> float | None:
        return self.entry.ctime if self.entry else None

    def get_last_modified(self) -> float | None:
        return self.entry.mtime if self.entry else None

    def get_display_name(self) -> str:
        return self.name

    def get_etag(self) -> str | None:
        return self.entry.etag if self.entry else None

    def support_etag(self) -> bool:
        return True

    def support_ranges(self) -> bool:
        return True

    def get_property_names(self, *, is_allprop: bool) -> list[str]:
        names = super().get_property_names(is_allprop=is_allprop)
        if not is_allprop and self.entry and self.entry.sha1:
            names.append(OC_CHECKSUMS)
        return names

    def get_property_value(self, name: str) -> Any:
        if name == DAV_GETETAG and self.entry and self.entry.etag:
            # RFC 4918 9.1.5 and 15.6: the property is the entity-tag the ETag header carries, quotes
            # included (WsgiDAV gives get_etag() bare; it stays bare for WsgiDAV's own comparisons).
            return entity_tag(self.entry.etag)
        if name != OC_CHECKSUMS:
            return super().get_property_value(name)
        if not (self.entry and self.entry.sha1):
            raise DAVError(HTTP_NOT_FOUND)
        checksums = etree.Element(OC_CHECKSUMS)
        etree.SubElement(checksums, OC_CHECKSUM).text = oc_checksum(self.store, self.cid, self.path, self.entry)
        return checksums

    def set_property_value(self, name: str, value: Any, *, dry_run: bool = False) -> Any:
        if name == DAV_LASTMODIFIED and value is not None:
            seconds = parse_unix_time(value.text)
            if seconds is None:
                raise DAVError(HTTP_BAD_REQUEST, "lastmodified must be unix seconds")
            return self.set_last_modified(self.path, seconds, dry_run=dry_run)
        return super().set_property_value(name, value, dry_run=dry_run)

    @mapped
    def get_content(self) -> Any:
        if self._opened is not None:
            return self._opened.stream()  # the bytes self.entry describes
        return self.store.open_read(self.cid, self.path)

    @mapped
    def begin_write(self, *, content_type: str | None = None) -> UploadBody | _Discard:
        if is_apple_file(self.name) and self.provider.apple_files == "discard":
            return _Discard()
        self._upload = self.store.begin_upload(
            self.cid, self.path, max_bytes=self.provider.max_upload_bytes, declared=declared_length(self.environ)
        )
        return UploadBody(self._upload)

    @mapped
    def end_write(self, *, with_errors: bool) -> None:
        upload, self._upload = self._upload, None
        if upload is None:
            return
        if with_errors:
            self.store.abort(upload)
            return
        self.entry = commit_upload(self.store, upload, self.environ, self.name)

    @mapped
    def delete(self) -> None:
        self.store.delete(self.cid, self.path)
        self.remove_all_locks(recursive=True)

    def handle_move(self, dest_path: str) -> bool:
        """A MOVE onto an existing file: one atomic rename over it, not WsgiDAV's DELETE of it first.

        A reader of the target then gets the old file or the new one, never
        a 404 between the two steps, and the target's unlink, metadata and
        thumbnails go in the rename (Store.move) instead of a delete of their
        own. WsgiDAV has checked both names' locks and conditions and the
        Overwrite header before it calls this. Only over a file: WsgiDAV
        answers a handled MOVE with 204, right only when something was
        replaced (a new name is 201), and a folder target goes with all it holds.
        """
        target = self.store.stat(self.cid, dest_path)
        if target is None or target.is_dir:
            return False
        self.move_recursive(dest_path)
        FileResource(dest_path, self.environ, target).remove_all_locks(recursive=False)
        return True

    def handle_delete(self) -> bool:
        """Delete a file here, so WsgiDAV's after-check (is it gone?) cannot fail on a racing PUT."""
        lock_manager = self.provider.lock_manager
        if lock_manager is not None:
            lock_manager.check_write_permission(
                url=self.get_ref_url(),
                depth="0",
                token_list=self.environ.get("wsgidav.ifLockTokenList", []),
                principal=self.environ["wsgidav.user_name"],
            )
        self.delete()
        return True

    @mapped
    def copy_move_single(self, dest_path: str, *, is_move: bool) -> None:
        self.refuse_case_twin(dest_path)
        if is_move:
            self.store.move(self.cid, self.path, dest_path)
            return
        if self.entry:
            self.store.check_quota(self.cid, dest_path, self.entry.stored_size, self.environ.get(QUOTA, storage.Quota()))
        self.store.copy_file(self.cid, self.path, dest_path)



class FolderResource(_Member, DAVCollection):
    def __init__(self, path: str, environ: dict[str, Any], entry: Entry) -> None:
        super().__init__(path, environ)
        self.entry = entry

    def get_creation_date(self) -> float:
        return self.entry.ctime

    def get_last_modified(self) -> float:
        return self.entry.mtime

    def get_display_name(self) -> str:
        return self.name

    def get_directory_info(self) -> None:
        return None

    def get_property_names(self, *, is_allprop: bool) -> list[str]:
        """Quota is computed on request only (it walks the collection), never for allprop."""
        return [n for n in super().get_property_names(is_allprop=is_allprop) if n not in QUOTA_PROPS]

    def get_used_bytes(self) -> int | None:
        if self.path not in ("", "/"):
            return None
        return self.store.usage(self.cid)[1]

    def get_available_bytes(self) -> int | None:
        if self.path not in ("", "/"):
            return None
        quota = self.environ.get(QUOTA, storage.Quota())
        if quota.bytes:
            return max(0, quota.bytes - self.store.usage(self.cid)[1])
        return self.store.free_bytes()

    def get_etag(self) -> None:
        return None

    @mapped
    def get_member_names(self) -> list[str]:
        return self.store.list_names(self.cid, self.path)

    def get_member_list(self) -> list[FileResource | FolderResource]:
        """Members that still exist: one deleted since the listing is left out, not an error."""
        members = (self.get_member(name) for name in self.get_member_names())
        return [m for m in members if m is not None]

    @mapped
    def create_empty_resource(self, name: str) -> FileResource:
        path = util.join_uri(self.path, name)
        self.refuse_case_twin(path)
        if self.environ["REQUEST_METHOD"] == "PUT":
            # Nothing appears on disk until the body is complete (see end_write).
            return FileResource(path, self.environ, None)
        return FileResource(path, self.environ, self.store.create_empty(self.cid, path))

    @mapped
    def create_collection(self, name: str) -> None:
        path = util.join_uri(self.path, name)
        self.refuse_case_twin(path)
        self.store.mkdir(self.cid, path)

    @mapped
    def delete(self) -> None:
        self.store.delete(self.cid, self.path)
        self.remove_all_locks(recursive=True)

    @mapped
    def copy_move_single(self, dest_path: str, *, is_move: bool) -> None:
        self.refuse_case_twin(dest_path)
        if is_move:
            self.store.move(self.cid, self.path, dest_path)
        else:
            self.store.copy_folder(self.cid, self.path, dest_path)



class CollectionProvider(DAVProvider):
    """Maps the collection of the key that authenticated the request to `/`."""

    def __init__(
        self,
        store: Store,
        *,
        apple_files: str = "store",
        refuse_case_collisions: bool = False,
        max_upload_bytes: int = 0,
        fast_propfind: bool = True,
    ) -> None:
        super().__init__()
        self.store = store
        self.fast_propfind = FastPropfind(self) if fast_propfind else None
        self.max_upload_bytes = max_upload_bytes
        self.apple_files = apple_files
        self.refuse_case_collisions = refuse_case_collisions

    def is_readonly(self) -> bool:
        return False

    @mapped
    def get_resource_inst(self, path: str | None, environ: dict[str, Any]) -> FileResource | FolderResource | None:
        self._count_get_resource_inst += 1
        if path is None:  # the parent of "/" (WsgiDAV asks when the request is on the root)
            return None
        opened = environ.get(OPENED)
        if opened is not None and opened.path == path:
            return FileResource(path, environ, opened.entry, opened)
        if PUT_TARGET in environ and environ[PUT_TARGET][0] == path:
            return environ.pop(PUT_TARGET)[1]  # once: later look-ups come after the write
        entry = self.store.stat(environ[COLLECTION], path)
        if entry is None:
            return None
        if entry.is_dir:
            return FolderResource(path, environ, entry)
        return FileResource(path, environ, entry)

    def ref_url_to_path(self, ref_url: str) -> str:
        """Invert get_ref_url: drop the leading collection id."""
        rest = unquote(ref_url).lstrip("/").partition("/")[2]
        return "/" + rest

    def custom_request_handler(
        self, environ: dict[str, Any], start_response: Callable[..., Any], default_handler: Callable[..., Any]
    ) -> Iterator[bytes]:
        """Checks WsgiDAV leaves out, made before the default handler runs."""
        method = environ["REQUEST_METHOD"]
        if method in ("DELETE", "MOVE") and environ["PATH_INFO"] in ("", "/"):
            # WsgiDAV would delete the members one by one, then fail on the root itself.
            raise DAVError(HTTP_FORBIDDEN, "the collection root cannot be deleted or moved")
        if "HTTP_IF" in environ:
            rebase_if_tags(environ)
        if method in ("GET", "HEAD"):
            return self._serve_opened(environ, start_response, default_handler)
        if method == "PROPFIND" and self.fast_propfind is not None:
            response = call_mapped(self.fast_propfind, environ, start_response)
            if response is not None:
                return iter(response)
        if method == "PUT":
            self._check_put(environ)
        if "HTTP_X_OC_MTIME" in environ and method in ("PUT", "COPY", "MOVE"):
            environ[MTIME] = parse_unix_time(environ["HTTP_X_OC_MTIME"])
            if environ[MTIME] is None:
                raise DAVError(HTTP_BAD_REQUEST, "X-OC-Mtime must be unix seconds")
            start_response = self._accept_mtime(environ, start_response)
        return cast(Iterator[bytes], default_handler(environ, start_response))

    def _serve_opened(
        self, environ: dict[str, Any], start_response: Callable[..., Any], default_handler: Callable[..., Any]
    ) -> Iterator[bytes]:
        """GET/HEAD of a file: open it first, so headers and body describe one version."""
        opened = call_mapped(self.store.open, environ[COLLECTION], environ["PATH_INFO"])
        if opened is None:
            folder = call_mapped(self.store.stat, environ[COLLECTION], environ["PATH_INFO"])
            if folder is not None and folder.is_dir:
                entries = call_mapped(self.store.list_entries, environ[COLLECTION], environ["PATH_INFO"])
                yield from send_listing(environ, start_response, folder, entries)
                return
            yield from default_handler(environ, start_response)
            return
        environ[OPENED] = opened
        try:
            yield from default_handler(environ, start_response)
        finally:
            opened.close()

    def _check_put(self, environ: dict[str, Any]) -> None:
        target = self.get_resource_inst(environ["PATH_INFO"], environ)
        environ[PUT_TARGET] = (environ["PATH_INFO"], target)
        check_put(self.store, environ, target is not None)

    def _accept_mtime(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Callable[..., Any]:
        """Answer `X-OC-Mtime: accepted` on success (ownCloud's protocol, read by rclone).

        PUT applied the time before its rename (FileResource.end_write); COPY
        and MOVE apply it to the destination here, once they have succeeded.
        """

        def wrapped(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            if status.startswith(("201", "204")):
                try:
                    if environ["REQUEST_METHOD"] != "PUT":
                        dest = unquote(urlparse(environ.get("HTTP_DESTINATION", "")).path)
                        self.store.set_mtime(environ[COLLECTION], dest, environ[MTIME])
                    headers.append(("X-OC-Mtime", "accepted"))
                except (storage.StorageError, OSError):
                    log.warning("could not set the modification time for %s", environ["PATH_INFO"])
            return start_response(status, headers, exc_info)

        return wrapped


def parse_unix_time(text: str | None) -> float | None:
    """Unix seconds from a header or property value; None if it is not a sane number."""
    try:
        seconds = float((text or "").strip())
    except ValueError:
        return None
    if not 0 <= seconds < 2**40:
        return None
    return seconds
