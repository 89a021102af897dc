"""The REST sidecar's WSGI app: one URL map, one error mapper (see wire.problem_for)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml
from werkzeug.routing import BaseConverter, Map, RequestRedirect, Rule
from werkzeug.wrappers import Request, Response

from uss_dav import __version__
from uss_dav.rest.image_api import ImageApi
from uss_dav.rest.key_api import KeyApi
from uss_dav.rest.wire import json_response, problem, problem_for
from uss_dav.services import Services
from uss_dav.vocabulary import status_line
from uss_dav.write_locks import WriteLocks

log = logging.getLogger(__name__)

OPENAPI_FILE = Path(__file__).resolve().parent.parent / "openapi.yaml"


class KeyIdConverter(BaseConverter):
    """A key id: any one segment but `rotate`, so /keys/rotate is never taken for a key."""

    regex = "(?!rotate$)[^/]+"


class RestApp:
    """Everything under /api/v1 (the dispatcher strips the prefix)."""

    def __init__(self, services: Services, locks: WriteLocks | None = None) -> None:
        images, keys = ImageApi(services, locks or WriteLocks(None)), KeyApi(services)
        self.urls = Map(
            [
                Rule("/ping", endpoint=self.ping, methods=["GET"]),
                Rule("/openapi.json", endpoint=self.openapi, methods=["GET"]),
                Rule("/usage", endpoint=images.usage, methods=["GET"]),
                Rule("/keys", endpoint=keys.list, methods=["GET"]),
                Rule("/keys", endpoint=keys.create, methods=["POST"]),
                Rule("/keys/rotate", endpoint=keys.rotate, methods=["POST"]),
                Rule("/keys/<key_id:key_id>", endpoint=keys.revoke, methods=["DELETE"]),
                Rule("/images", endpoint=images.list, methods=["GET"]),
                Rule("/images", endpoint=images.create, methods=["POST"]),
                Rule("/images/<name>", endpoint=images.download, methods=["GET"]),
                Rule("/images/<name>", endpoint=images.replace, methods=["PATCH"]),
                Rule("/images/<name>", endpoint=images.delete, methods=["DELETE"]),
                Rule("/images/<name>/meta", endpoint=images.meta, methods=["GET"]),
                Rule("/images/<name>/thumbnail", endpoint=images.thumbnail, methods=["GET"]),
                Rule("/images/<name>/rename", endpoint=images.rename, methods=["POST"]),
            ],
            strict_slashes=False,
            converters={"key_id": KeyIdConverter},
        )

    def ping(self, request: Request) -> Response:
        return json_response({"status": "ok", "version": __version__})

    @cached_property
    def _openapi_json(self) -> str:
        return json.dumps(yaml.safe_load(OPENAPI_FILE.read_text(encoding="utf-8")))

    def openapi(self, request: Request) -> Response:
        return Response(self._openapi_json, content_type="application/json")

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        try:
            endpoint, args = self.urls.bind_to_environ(environ).match()
            response = endpoint(request, **args)
        except RequestRedirect as exc:
            response = exc.get_response(environ)
        except Exception as exc:
            response = problem_for(exc)
            if response is None:
                log.exception("%s %s failed", request.method, request.path)
                response = problem(500, "internal error (logged)")
        path = request.script_root + request.full_path.rstrip("?")
        log.info('%s "%s %s" -> %d', request.remote_addr, request.method, path, response.status_code)
        response.status = status_line(response.status_code)  # Werkzeug's phrases are upper-case
        return response(environ, start_response)


def make_rest_app(services: Services, locks: WriteLocks | None = None) -> Callable[..., Any]:
    """The REST API's WSGI app, with the prefix already stripped by the dispatcher.

    `locks` asks the WebDAV face's lock manager before every write; None: no locks to honour.
    """
    return RestApp(services, locks)
