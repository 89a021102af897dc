"""The plain PUT of a file, stored by a WsgiDAV middleware instead of WsgiDAV's request handler.

A sync tool's or a camera's upload is a PUT with a length and no
condition, lock token, checksum or time to set: the answer can only be 201
or 204 with the new ETag, or a refusal. WsgiDAV's way there builds a
request server and three resource objects, looks the target up twice,
evaluates the (absent) If headers and wraps the body twice: 45 of the
555 us a 10 KiB upload took in process with fsync made a no-op (the disk's
own work is most of the rest).

PlainPut sits in WsgiDAV's middleware stack after the key check and the
request limits, so a refusal it raises is answered by ErrorResponder from
the one table, as WsgiDAV's PUT would be. It stores such a PUT with the
provider's own pieces (check_put, the lock manager's write transaction,
UploadBody, commit_upload) and answers as WsgiDAV's PUT is answered once
ErrorResponder has taken out its status page: no body, and the ETag. Anything
else goes on to WsgiDAV unchanged: a PUT with a condition, a lock token, a
chunked or encoded body, a checksum, a time, a non-ASCII path (WsgiDAV
gives those their NFC spelling), an AppleDouble name, a target that is a
folder or a folder that does not exist, and every request of another
method. tests/test_plain_put.py compares both ways.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from typing import Any

from wsgidav import util
from wsgidav.mw.base_mw import BaseMiddleware

from providers.collection import (
    CollectionProvider,
    FileResource,
    FolderResource,
    UploadBody,
    call_mapped,
    check_put,
    commit_upload,
    declared_length,
)
from providers.plain_get import is_canonical
from uss_dav.storage import Entry, is_apple_file
from uss_dav.vocabulary import COLLECTION, status_line

#: Request headers that make a PUT more than plain: WsgiDAV's handler (and the provider's) answer those.
_PUT_EXTRAS = (
    "HTTP_IF",
    "HTTP_IF_MATCH",
    "HTTP_IF_NONE_MATCH",
    "HTTP_IF_MODIFIED_SINCE",
    "HTTP_IF_UNMODIFIED_SINCE",
    "HTTP_LOCK_TOKEN",
    "HTTP_CONTENT_RANGE",
    "HTTP_CONTENT_ENCODING",
    "HTTP_TRANSFER_ENCODING",
    "HTTP_X_OC_MTIME",
    "HTTP_OC_CHECKSUM",
)


def is_plain_put(environ: dict[str, Any]) -> bool:
    """A PUT with a length, to an ASCII path, and none of the headers above."""
    if environ["REQUEST_METHOD"] != "PUT" or any(name in environ for name in _PUT_EXTRAS):
        return False
    path = environ["PATH_INFO"]
    return environ.get("CONTENT_LENGTH", "").isdigit() and path.isascii() and is_canonical(path)


class PlainPut(BaseMiddleware):
    """WsgiDAV middleware: store plain PUTs of files, hand everything else on to the next app (the resolver)."""

    def is_disabled(self) -> bool:
        return False

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        provider = environ.get("wsgidav.provider")
        if not isinstance(provider, CollectionProvider) or not is_plain_put(environ):
            return self.next_app(environ, start_response)
        path = environ["PATH_INFO"]
        name = util.get_uri_name(path)
        if is_apple_file(name) or provider.refuse_case_collisions:
            return self.next_app(environ, start_response)
        store, cid = provider.store, environ[COLLECTION]
        target = call_mapped(store.stat, cid, path)
        if target is None:
            folder = call_mapped(store.stat, cid, util.get_uri_parent(path))
            if folder is None or not folder.is_dir:
                return self.next_app(environ, start_response)  # WsgiDAV's 409
        elif target.is_dir:
            return self.next_app(environ, start_response)  # WsgiDAV's 405
        else:
            folder = None
        return self._store(environ, start_response, provider, name, target, folder)

    def _store(
        self,
        environ: dict[str, Any],
        start_response: Callable[..., Any],
        provider: CollectionProvider,
        name: str,
        target: Entry | None,
        folder: Entry | None,
    ) -> Iterator[bytes]:
        """What WsgiDAV's do_PUT does for a plain PUT, in the same order, with the same checks."""
        store, path = provider.store, environ["PATH_INFO"]
        environ["wsgidav.user_name"] = principal = environ["wsgidav.auth.user_name"]
        check_put(store, environ, target is not None)
        resource = FileResource(path, environ, target)
        transaction: Any = nullcontext()
        locks = provider.lock_manager
        if locks is not None:
            # Locks are asked as WsgiDAV asks them: a new name needs the folder's write permission.
            if folder is not None:
                parent = FolderResource(util.get_uri_parent(path), environ, folder)
                locks.check_write_permission(url=parent.get_ref_url(), depth="0", token_list=[], principal=principal)
            else:
                locks.check_write_permission(url=resource.get_ref_url(), depth="0", token_list=[], principal=principal)
            transaction = locks.write_transaction(url=resource.get_ref_url(), token_list=[], principal=principal)
        with transaction:
            upload = call_mapped(
                store.begin_upload,
                environ[COLLECTION],
                path,
                max_bytes=provider.max_upload_bytes,
                declared=declared_length(environ),
            )
            try:
                UploadBody(upload).writelines(_pieces(environ, self.config["block_size"]))
            except BaseException:
                store.abort(upload)
                raise
            entry = call_mapped(commit_upload, store, upload, environ, name)
        status = status_line(204 if target is not None else 201)
        start_response(status, [("Content-Length", "0"), ("ETag", f'"{util.checked_etag(entry.etag)}"')])
        return iter((b"",))


def _pieces(environ: dict[str, Any], block_size: int) -> Iterator[bytes]:
    """The body in pieces of up to `block_size` (the engine's wsgi.input ends at Content-Length)."""
    read = environ["wsgi.input"].read
    while piece := read(block_size):
        yield piece
    environ["wsgidav.all_input_read"] = 1
