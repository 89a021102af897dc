"""Request bodies streamed into staged uploads: a raw body, or the `file` parts of a form.

Nothing is buffered whole: a part's bytes go from the socket to its staged
upload (Store.begin_upload) as they arrive, through Werkzeug's sans-IO
multipart decoder. Staging and committing are separate steps, so a request
that fails half-way (a bad part, a dropped connection) installs nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from werkzeug.sansio.multipart import (
    Data,
    Epilogue,
    Field,
    File,
    MultipartDecoder,
    NeedData,
)
from werkzeug.wrappers import Request

from uss_dav.rest.wire import ApiError
from uss_dav.storage import IncompleteBody, Store, TooLarge, Upload

CHUNK = 64 * 1024
#: Bytes the decoder may hold between events (part headers, a boundary split across reads).
MAX_BUFFER = 1 << 20
MAX_PARTS = 1000

#: A staged body: the name it is to be stored under, and its upload.
Staged = tuple[str, Upload]


def refuse_oversized(request: Request, max_bytes: int) -> None:
    """413 before reading a body whose declared length is over the upload limit (0: none)."""
    if max_bytes and request.content_length is not None and request.content_length > max_bytes:
        raise TooLarge(f"upload larger than the {max_bytes}-byte limit")


def stage_raw(request: Request, store: Store, cid: str, name: str, max_bytes: int) -> Staged:
    """Stream the whole request body into a staged upload for `name`."""
    refuse_oversized(request, max_bytes)
    upload = store.begin_upload(cid, name, max_bytes=max_bytes, declared=request.content_length)
    try:
        while chunk := request.stream.read(CHUNK):
            upload.write(chunk)
        if request.content_length is not None and upload.length != request.content_length:
            raise IncompleteBody(f"received {upload.length} of {request.content_length} bytes")
    except BaseException:
        store.abort(upload)
        raise
    return name, upload


def stage_form(
    request: Request, store: Store, cid: str, name_for: Callable[[str | None], str], max_bytes: int
) -> list[Staged]:
    """Stage every file part of a multipart/form-data body.

    `name_for(filename)` is called at the start of each part named `file` and
    returns the name to store it under, or raises to refuse the request.
    Other parts are read and dropped. `max_bytes` limits each part, and the
    declared length of the whole body.
    """
    refuse_oversized(request, max_bytes)
    staged: list[Staged] = []
    upload: Upload | None = None
    try:
        for event in _form_events(request):
            if isinstance(event, (File, Field)):
                upload = None
                if event.name == "file":
                    name = name_for(event.filename if isinstance(event, File) else None)
                    upload = store.begin_upload(cid, name, max_bytes=max_bytes)
                    staged.append((name, upload))
            elif upload is not None:
                upload.write(event)
    except BaseException:
        for _name, pending in staged:
            store.abort(pending)
        raise
    return staged


def _form_events(request: Request) -> Iterator[File | Field | bytes]:
    """The start of each part and its bytes, as they arrive."""
    boundary = request.mimetype_params.get("boundary")
    if not boundary:
        raise ApiError(400, "multipart/form-data without a boundary")
    try:
        decoder = MultipartDecoder(boundary.encode("latin-1"), MAX_BUFFER, max_parts=MAX_PARTS)
    except UnicodeEncodeError:
        raise ApiError(400, "multipart boundary is not Latin-1") from None
    while True:
        chunk = request.stream.read(CHUNK)
        try:
            decoder.receive_data(chunk or None)
            event = decoder.next_event()
            while not isinstance(event, (Epilogue, NeedData)):
                if isinstance(event, (File, Field)):
                    yield event
                elif isinstance(event, Data) and event.data:
                    yield event.data
                event = decoder.next_event()
        except ValueError as exc:
            raise ApiError(400, f"malformed multipart/form-data body: {exc}") from None
        if isinstance(event, Epilogue) or not chunk:
            return
