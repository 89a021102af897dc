"""WSGI requests made in-process, as the engine would hand them to the app."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.server import ROOT
from uss_dav.app import build_app
from uss_dav.config import load_config
from uss_dav.services import Services, open_services


def wsgi_environ(method: str, path: str, key: str, body: bytes = b"", **headers: str) -> dict[str, Any]:
    """The environ of one request authenticated with `key`; header names in snake_case."""
    return {
        "REQUEST_METHOD": method,
        "PATH_INFO": path.encode("utf-8").decode("latin-1"),  # as a WSGI server passes it
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "wsgi.input": io.BytesIO(body),
        "CONTENT_LENGTH": str(len(body)) if body else "",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "HTTP_HOST": "localhost",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_AUTHORIZATION": f"Bearer {key}",
        **{"HTTP_" + k.upper(): v for k, v in headers.items()},
    }


def request(app: Any, key: str, method: str, path: str, body: bytes = b"", **headers: str) -> tuple[str, list, bytes]:
    """(status, headers, body) of one request to the WSGI app `app`, authenticated with `key`."""
    environ = wsgi_environ(method, path, key, body, **headers)
    seen: list[tuple[str, list]] = []
    result = app(environ, lambda status, headers, exc=None: seen.append((status, headers)))
    try:
        out = b"".join(result)
    finally:
        getattr(result, "close", lambda: None)()
    return seen[0][0], seen[0][1], out


@contextlib.contextmanager
def assembled_app(data_dir: Path) -> Iterator[tuple[Any, str, Services]]:
    """(app, key, services): the whole application (build_app) on the repository's config.yaml, one key with its collection."""
    services = open_services(load_config(ROOT / "config.yaml", {"data_dir": str(data_dir)}))
    try:
        record, key = services.keys.create("in-process")
        services.store.ensure_collection(record.collection)
        yield build_app(services), key, services
    finally:
        services.close()
