"""Assembles the WSGI application from the Services: the dispatcher, WsgiDAV, REST and the gallery."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import wsgidav
from wsgidav.mw.cors import Cors
from wsgidav.request_resolver import RequestResolver
from wsgidav.wsgidav_app import WsgiDAVApp

from providers.authenticator import KeyAuthenticator
from providers.collection import CollectionProvider
from providers.errors import ErrorResponder
from providers.limits import RequestLimits
from providers.plain_get import PlainGet
from providers.plain_put import PlainPut
from providers.properties import SidecarPropertyManager
from providers.settings import CONFIG_KEY, DavSettings
from uss_dav.locks import FileLockManager, FileLocks
from uss_dav.metrics import observed
from uss_dav.responses import text_response
from uss_dav.rest.app import make_rest_app
from uss_dav.services import Services
from uss_dav.ui import make_ui_app, wants_ui
from uss_dav.vocabulary import REST_PREFIX
from uss_dav.write_locks import WriteLocks

log = logging.getLogger(__name__)

_VERBOSITY = {"debug": 4, "info": 3, "warning": 2, "error": 1}




def wsgidav_config(services: Services) -> dict[str, Any]:
    """The one place uss_dav's Config becomes WsgiDAV's dict."""
    config = services.config
    return {
        "provider_mapping": {
            "/": CollectionProvider(
                services.store,
                apple_files=config.apple_files,
                refuse_case_collisions=config.refuse_case_collisions,
                max_upload_bytes=config.max_upload_bytes,
            )
        },
        "property_manager": SidecarPropertyManager(services.store),
        "lock_storage": FileLocks(services.store.locks_dir, services.store.staging),
        "middleware_stack": [ErrorResponder, KeyAuthenticator, RequestLimits, PlainPut, RequestResolver],
        CONFIG_KEY: DavSettings(services),
        "block_size": config.block_size,
        "verbose": _VERBOSITY[config.log_level],
        "logging": {"enable": False},
        "add_header_MS_Author_Via": True,
        "hotfixes": {"emulate_win32_lastmod": True},
        "dir_browser": {"enable": False},
    }


def path_problem(path: str) -> str | None:
    """Why a request path is refused before any layer sees it, or None.

    WsgiDAV answers dot segments with a 400 whose body it never sends (the
    client then waits for the socket timeout), so they are refused here.
    """
    if "\x00" in path:
        return "NUL byte in path"
    if not path.isascii():
        try:
            path = path.encode("latin-1").decode("utf-8")  # WSGI hands the raw bytes over as latin-1
        except UnicodeError:
            return "path is not valid UTF-8"
    if ("/." in path or path.startswith(".")) and any(seg in (".", "..") for seg in path.split("/")):
        return "dot segments ('.' or '..') are not allowed in paths"
    return None



class Dispatcher:
    """The outermost WSGI app: vet the request, then hand it to the gallery, REST or WebDAV."""

    def __init__(self, dav: Callable[..., Any], rest: Callable[..., Any], ui: Callable[..., Any]) -> None:
        self.dav, self.rest, self.ui = dav, rest, ui

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ.get("PATH_INFO", "")
        problem = path_problem(path)
        if problem:
            # The body was not read: the connection must not carry on with it.
            return text_response(start_response, "400 Bad Request", problem, [("Connection", "close")])
        if wants_ui(environ):
            return self.ui(environ, start_response)
        if path == REST_PREFIX or path.startswith(REST_PREFIX + "/"):
            environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + REST_PREFIX
            environ["PATH_INFO"] = path[len(REST_PREFIX):]
            return self.rest(environ, start_response)
        return self.dav(environ, start_response)


#: What browsers may send and read across origins (WebDAV, ownCloud and REST headers).
CORS_ALLOW_HEADERS = (
    "Authorization, Content-Type, Depth, Destination, Overwrite, If, If-Match, If-None-Match, "
    "If-Modified-Since, Lock-Token, Timeout, Range, X-OC-Mtime, OC-Checksum"
)
CORS_EXPOSE_HEADERS = (
    "ETag, DAV, Content-Length, Content-Range, Last-Modified, Lock-Token, Location, X-OC-Mtime, Link, Retry-After"
)
CORS_METHODS = "GET, HEAD, PUT, POST, PATCH, DELETE, OPTIONS, PROPFIND, PROPPATCH, MKCOL, COPY, MOVE, LOCK, UNLOCK"


def with_cors(app: Callable[..., Any], origins: tuple[str, ...]) -> Callable[..., Any]:
    """WsgiDAV's CORS middleware around everything: preflights are answered before any key check."""
    if not origins:
        return app
    options = {
        "allow_origin": "*" if "*" in origins else list(origins),
        "allow_methods": CORS_METHODS,
        "allow_headers": CORS_ALLOW_HEADERS,
        "expose_headers": CORS_EXPOSE_HEADERS,
        "max_age": 600,
    }
    return Cors(None, app, {"cors": options})


def dav_app(services: Services) -> WsgiDAVApp:
    """WsgiDAV with uss_dav's lock manager.

    WsgiDAV builds its stock LockManager from `lock_storage` itself (and
    opens the storage, which that manager closes when it is collected), so
    it is given none and handed FileLockManager over the same storage instead.
    """
    config = wsgidav_config(services)
    # WsgiDAV describes itself at INFO while it is built, before it has the lock manager:
    # "Lock manager: None" and "Domain controller: None" would be false here. Its warnings
    # still show; one line below says what it really runs with.
    startup = logging.getLogger("wsgidav.wsgidav_app")
    level = startup.level
    startup.setLevel(max(level, logging.WARNING))
    try:
        dav = WsgiDAVApp({**config, "lock_storage": None})
    finally:
        startup.setLevel(level)
    dav.lock_manager = FileLockManager(config["lock_storage"])
    for provider in dav.provider_map.values():
        provider.set_lock_manager(dav.lock_manager)
    log.info("WsgiDAV/%s: locks %r, dead properties in %s, every request's key checked by %s",
             wsgidav.__version__, dav.lock_manager, type(dav.prop_manager).__name__, KeyAuthenticator.__name__)
    return dav


def build_app(services: Services) -> Callable[..., Any]:
    """The WSGI application for a running server."""
    dav = dav_app(services)
    # REST writes ask the lock manager WebDAV uses (one lock store for both faces).
    webdav = PlainGet(services, dav)
    dispatcher = Dispatcher(webdav, make_rest_app(services, WriteLocks(dav.lock_manager)), make_ui_app())
    return observed(with_cors(dispatcher, services.config.cors_origins), services)
