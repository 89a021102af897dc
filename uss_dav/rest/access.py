"""Who may call what: an API key for its own collection, the admin token for key management.

Key management (create, list, revoke) needs `Authorization: Bearer <admin
token>` when an admin token is configured (config `admin_token` or env
USS_ADMIN_TOKEN). Without one, only loopback clients may manage keys (behind a
reverse proxy on the same host every client looks like loopback: set a token).
"""

from __future__ import annotations

import hmac
import ipaddress

from werkzeug.wrappers import Request

from uss_dav.auth import Refused, authenticate, count_failure, presented_key
from uss_dav.config import Config
from uss_dav.keys import KeyRecord
from uss_dav.rest.wire import ApiError
from uss_dav.services import Services


def require_key(services: Services, request: Request, as_method: str | None) -> KeyRecord:
    """The record of the API key the request carries, through the one path WebDAV uses too (uss_dav.auth).

    `as_method` is the WebDAV method with the same effect, checked against the
    key's scope (403), as WebDAV does; None: any scope may.
    """
    try:
        return authenticate(services, request.environ, as_method)
    except Refused as refused:
        raise ApiError(refused.status, refused.reason, _headers(services, request, refused)) from None


def _headers(services: Services, request: Request, refused: Refused) -> dict[str, str]:
    """A 401's challenge, a 429's Retry-After."""
    if refused.retry_after is not None:
        return {"Retry-After": str(int(refused.retry_after + 0.999))}
    if refused.status != 401:
        return {}
    realm = services.config.realm
    if request.environ.get("HTTP_AUTHORIZATION", "").lower().startswith("bearer"):
        # A Bearer caller (the gallery page) gets a Bearer challenge: a Basic one
        # would make a browser pop up its login dialog over the page.
        return {"WWW-Authenticate": f'Bearer realm="{realm}", error="invalid_token"'}
    return {"WWW-Authenticate": f'Basic realm="{realm}", charset="UTF-8"'}


def require_admin(services: Services, request: Request) -> None:
    """Return if the request may manage keys; raise 401 or 403 otherwise."""
    config = services.config
    if not config.admin_token:
        if is_loopback(request.remote_addr):
            return
        raise ApiError(403, "key management is open to loopback clients only: no admin token is configured")
    token = presented_key(request.environ)
    if token is None:
        raise ApiError(401, "admin token required", _admin_challenge(config))
    if not hmac.compare_digest(token.encode("utf-8", "surrogateescape"), config.admin_token.encode("utf-8", "surrogateescape")):
        try:
            count_failure(services, request.environ)
        except Refused as refused:
            raise ApiError(429, refused.reason, _headers(services, request, refused)) from None
        raise ApiError(401, "wrong admin token", _admin_challenge(config))


def _admin_challenge(config: Config) -> dict[str, str]:
    return {"WWW-Authenticate": f'Bearer realm="{config.realm} admin"'}


def is_loopback(address: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and their IPv4-mapped forms; False for anything else or nothing."""
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback
