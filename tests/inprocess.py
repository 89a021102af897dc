"""WSGI requests made in-process, as the engine would hand them to the app."""

from __future__ import annotations

import io
from typing import Any


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
