"""What goes over the wire: JSON in and out, and errors as problem details (RFC 9457).

Every failure of a REST request, wherever it is raised, becomes a response in
`problem_for`, the one error mapper of this surface.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Request, Response

from uss_dav.rest.thumbnails import NotAnImage, Undecodable
from uss_dav.statuses import refusal
from uss_dav.vocabulary import phrase

log = logging.getLogger(__name__)

PROBLEM_TYPE = "application/problem+json"
#: Largest JSON request body; key labels and modes need far less.
MAX_JSON_BYTES = 64 * 1024


class ApiError(Exception):
    """A refusal with its HTTP status, a one-line detail and any headers it needs."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status}: {detail}")
        self.status, self.detail, self.headers = status, detail, headers or {}


#: REST's own refusals, beside the shared table (uss_dav.statuses).
_THUMBNAIL_STATUS: tuple[tuple[type[Exception], int], ...] = ((NotAnImage, 415), (Undecodable, 422))


def problem(status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    body = {"type": "about:blank", "title": phrase(status), "status": status, "detail": detail}
    return Response(json.dumps(body), status=status, headers=headers, content_type=PROBLEM_TYPE)


def problem_for(exc: Exception) -> Response | None:
    """The problem response for a refusal; None for an unexpected error (a bug: 500)."""
    if isinstance(exc, ApiError):
        return problem(exc.status, exc.detail, exc.headers)
    if isinstance(exc, HTTPException) and exc.code is not None:
        # Keep what the exception says about itself (Allow, Content-Range), not its HTML body.
        headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
        return problem(exc.code, exc.description or exc.name, headers)
    found = refusal(exc)
    if found is not None:
        return problem(*found)
    for cls, status in _THUMBNAIL_STATUS:
        if isinstance(exc, cls):
            return problem(status, str(exc) or cls.__name__)
    return None


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status=status, headers=headers, content_type="application/json")


def json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object; an empty body is an empty object."""
    if request.content_length is not None and request.content_length > MAX_JSON_BYTES:
        raise ApiError(413, f"JSON body over {MAX_JSON_BYTES} bytes")
    raw = request.stream.read(MAX_JSON_BYTES + 1)
    if len(raw) > MAX_JSON_BYTES:
        raise ApiError(413, f"JSON body over {MAX_JSON_BYTES} bytes")
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError as exc:  # UnicodeDecodeError included
        raise ApiError(400, f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ApiError(400, "body is not valid JSON: nested too deeply") from None
    if not isinstance(body, dict):
        raise ApiError(400, "body must be a JSON object")
    return body


def int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    """Query parameter `name` as an integer in [low, high]."""
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw, 10)
    except ValueError:
        raise ApiError(400, f"{name} must be an integer, not {raw[:40]!r}") from None
    if not low <= value <= high:
        raise ApiError(400, f"{name} must be {low}-{high}, not {value}")
    return value


def choice_param(request: Request, name: str, choices: tuple[str, ...]) -> str:
    """Query parameter `name`, one of `choices` (the first is the default)."""
    value = request.args.get(name, choices[0])
    if value not in choices:
        raise ApiError(400, f"{name} must be one of {', '.join(choices)}")
    return value
