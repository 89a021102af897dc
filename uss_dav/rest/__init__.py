"""The REST sidecar under /api/v1: keys and the image API, on the same storage as WebDAV.

    make_rest_app(services) -> WSGI app      # mounted by uss_dav.app.Dispatcher

Modules: app (routes), image_api and key_api (endpoints), access (who may),
bodies (streaming uploads), thumbnails, names, wire (JSON and problem details).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from uss_dav.app import Services
from uss_dav.rest.app import RestApp


def make_rest_app(services: Services) -> Callable[..., Any]:
    return RestApp(services)


__all__ = ["make_rest_app"]
