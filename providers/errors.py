"""The one place where WebDAV-side exceptions become HTTP statuses.

Replaces WsgiDAV's ErrorPrinter, whose error bodies are HTML pages naming
the WsgiDAV version: here a refusal is a one-line text/plain reason (or the
RFC 4918 precondition XML where there is one), and anything unexpected is a
logged 500 that tells the client nothing about the internals. A 201 that
WsgiDAV answers with that page has an empty body instead (is_success_page).
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable, Iterator
from typing import Any

from wsgidav import util
from wsgidav.dav_error import (
    HTTP_FORBIDDEN,
    HTTP_INTERNAL_ERROR,
    HTTP_NO_CONTENT,
    HTTP_NOT_MODIFIED,
    DAVError,
    get_http_status_string,
)
from wsgidav.mw.base_mw import BaseMiddleware

from uss_dav.statuses import refusal
from uss_dav.vocabulary import PHRASES, status_line

log = logging.getLogger(__name__)


class Refused(DAVError):
    """A refusal from the one table (uss_dav.statuses), whose page is its one-line reason.

    WsgiDAV answers some failures itself: a DELETE, MOVE or COPY whose
    provider call raised goes into its error list and out through
    util.send_status_response, which sends the error's own page. With this
    page such an answer says the same one line as ErrorResponder's, not an
    HTML page naming the WsgiDAV version.
    """

    def get_response_page(self) -> tuple[str, bytes]:
        return "text/plain; charset=utf-8", f"{reason_of(self)}\n".encode()


def as_dav_error(exc: Exception) -> DAVError | None:
    """The DAVError for a storage or hook refusal (uss_dav.statuses); None for anything unexpected."""
    found = refusal(exc)
    return None if found is None else Refused(found[0], found[1])


def with_standard_phrase(status: str) -> str:
    """A status line with the standard phrase (uss_dav.vocabulary.PHRASES) whatever WsgiDAV's table says.

    Its table lacks 413, 422, 503 and 507, which came out as "413 Status"
    and the like: in ErrorResponder's answers, and in those WsgiDAV sends
    itself.
    """
    code, _, phrase = status.partition(" ")
    if not code.isdigit() or PHRASES.get(int(code), phrase) == phrase:
        return status
    return status_line(int(code))


def is_success_page(status: str, headers: list[tuple[str, str]]) -> bool:
    """Whether a response is WsgiDAV's HTML page for a success: the only text/html 201 it sends.

    util.send_status_response gives a 201 (PUT, MKCOL, COPY, MOVE) the page
    it gives errors: some 370 bytes naming the WsgiDAV version, which `curl
    -T` prints on the terminal. A LOCK's 201 carries its XML and is left alone.
    """
    return status.startswith("201") and any(
        name.lower() == "content-type" and value.startswith("text/html") for name, value in headers
    )


def without_body(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The header fields of the same answer with an empty body."""
    return [("Content-Length", "0")] + [h for h in headers if h[0].lower() not in ("content-type", "content-length")]


def status_of(error: DAVError) -> str:
    """The status line's code and phrase (see with_standard_phrase)."""
    return with_standard_phrase(get_http_status_string(error))


def reason_of(error: DAVError) -> str:
    """A one-line reason: the context the raiser gave, else the status text."""
    text = error.context_info or status_of(error).partition(" ")[2]
    return " ".join(str(text).split())


class ErrorResponder(BaseMiddleware):
    """The outermost WsgiDAV middleware: every exception below it, and every page WsgiDAV makes, answered here."""

    def is_disabled(self) -> bool:
        return False

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
        # Hold the start until the first chunk: handlers are generators and may
        # still fail before they yield anything.
        pending = util.SubAppStartResponse()
        started = False
        try:
            try:
                app_iter = self.next_app(environ, pending)
                try:
                    for chunk in app_iter:
                        if not started:
                            status, headers = with_standard_phrase(pending.status), pending.response_headers
                            page = is_success_page(status, headers)
                            start_response(status, without_body(headers) if page else headers, pending.exc_info)
                            started = True
                            if page:
                                yield b""
                                break
                        yield chunk
                finally:
                    if hasattr(app_iter, "close"):
                        app_iter.close()
                if not started:
                    start_response(with_standard_phrase(pending.status), pending.response_headers, pending.exc_info)
                return
            except DAVError:
                raise
            except OSError as exc:
                if exc.errno == errno.EACCES:
                    raise DAVError(HTTP_FORBIDDEN, "permission denied") from None
                if (refused := as_dav_error(exc)) is not None:  # a full or read-only disk: 507, 503
                    raise refused from None
                log.exception("%s %s failed", environ["REQUEST_METHOD"], environ.get("PATH_INFO"))
                raise DAVError(HTTP_INTERNAL_ERROR, "internal error") from None
            except Exception:
                log.exception("%s %s failed", environ["REQUEST_METHOD"], environ.get("PATH_INFO"))
                raise DAVError(HTTP_INTERNAL_ERROR, "internal error") from None
        except DAVError as error:
            if started:
                raise  # too late for a status: the server drops the connection
            yield from self._respond(error, environ, start_response)

    def _respond(self, error: DAVError, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
        status = status_of(error)
        if error.value == HTTP_INTERNAL_ERROR and error.src_exception is not None:
            log.error("%s %s: %r", environ["REQUEST_METHOD"], environ.get("PATH_INFO"), error.src_exception)
        if error.value in (HTTP_NOT_MODIFIED, HTTP_NO_CONTENT):
            start_response(status, [("Content-Length", "0"), ("Date", util.get_rfc1123_time())])
            return
        if error.err_condition:
            content_type, body = "application/xml; charset=utf-8", util.to_bytes(error.err_condition.as_string())
        else:
            content_type, body = "text/plain; charset=utf-8", f"{reason_of(error)}\n".encode()
        if not error.add_body or environ["REQUEST_METHOD"] == "HEAD":
            body = b""
        headers = [("Content-Type", content_type), ("Content-Length", str(len(body))), ("Date", util.get_rfc1123_time())]
        start_response(status, headers + list(error.add_headers or []))
        yield body
