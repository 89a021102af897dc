"""The REST sidecar under /api/v1 (JSON): liveness for now."""

from __future__ import annotations

import json
from typing import Any, Callable, Iterable

from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from uss_dav import __version__
from uss_dav.app import Services


def _problem(exc: HTTPException) -> Response:
    """RFC 9457 problem details for an HTTP error."""
    body = {"type": "about:blank", "title": exc.name, "status": exc.code, "detail": exc.description}
    return Response(json.dumps(body), status=exc.code, content_type="application/problem+json")


class RestApp:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.urls = Map([Rule("/ping", endpoint="ping", methods=["GET"])])

    def ping(self, request: Request) -> Response:
        return Response(json.dumps({"status": "ok", "version": __version__}), content_type="application/json")

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        try:
            endpoint, args = self.urls.bind_to_environ(environ).match()
            response = getattr(self, endpoint)(request, **args)
        except HTTPException as exc:
            response = _problem(exc)
        return response(environ, start_response)


def make_rest_app(services: Services) -> Callable[..., Any]:
    return RestApp(services)
