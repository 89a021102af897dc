"""WsgiDAV middleware: admit requests that carry a valid key (uss_dav.auth), answer the rest.

Sets `wsgidav.auth.user_name` to the key's id (never the key), which
WsgiDAV uses as lock principal and in its request log.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from wsgidav.mw.base_mw import BaseMiddleware

from providers.settings import dav_settings
from uss_dav.auth import Refused, authenticate
from uss_dav.responses import text_response
from uss_dav.vocabulary import KEY_RECORD


def refusal_response(start_response: Callable[..., Any], refused: Refused, realm: str) -> Iterable[bytes]:
    """A WebDAV client's answer to a refusal: a Basic challenge on 401, Retry-After on 429."""
    headers: list[tuple[str, str]] = []
    if refused.status == 401:
        headers.append(("WWW-Authenticate", f'Basic realm="{realm}", charset="UTF-8"'))
    if refused.retry_after is not None:
        headers.append(("Retry-After", str(int(refused.retry_after + 0.999))))
    statuses = {401: "401 Unauthorized", 403: "403 Forbidden", 429: "429 Too Many Requests"}
    return text_response(start_response, statuses[refused.status], refused.reason, headers)


class KeyAuthenticator(BaseMiddleware):
    """The authentication step of WsgiDAV's middleware stack."""

    def __init__(self, wsgidav_app: Any, next_app: Callable[..., Any], config: dict[str, Any]) -> None:
        super().__init__(wsgidav_app, next_app, config)
        self.services = dav_settings(config).services

    def is_disabled(self) -> bool:
        return False

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        record = environ.get(KEY_RECORD)  # checked already by a plain GET it could not serve (PlainGet)
        if record is None:
            try:
                record = authenticate(self.services, environ, environ["REQUEST_METHOD"])
            except Refused as refused:
                return refusal_response(start_response, refused, self.services.config.realm)
        environ["wsgidav.auth.realm"] = self.services.config.realm
        environ["wsgidav.auth.user_name"] = record.id
        environ["wsgidav.auth.roles"] = ("editor",)
        environ["wsgidav.auth.permissions"] = ()
        return self.next_app(environ, start_response)
