"""The key endpoints: create, list and revoke (admin), rotate (the key itself)."""

from __future__ import annotations

from typing import Any

from werkzeug.wrappers import Request, Response

from uss_dav.config import COMPRESSION_MODES
from uss_dav.keys import SCOPES, KeyRecord, UnknownKey, parse_expiry
from uss_dav.rest.access import require_admin, require_key
from uss_dav.rest.wire import ApiError, choice_param, json_body, json_response
from uss_dav.services import Services

MAX_LABEL = 200


def _shown(record: KeyRecord, key: str) -> dict[str, Any]:
    """A key's record with the key itself: answered once, at creation or rotation."""
    return {"id": record.id, "key": key, "label": record.label, "created": record.created,
            "compression": record.compression, "scope": record.scope, "expires": record.expires}


class KeyApi:
    def __init__(self, services: Services) -> None:
        self.services = services

    def create(self, request: Request) -> Response:
        require_admin(self.services, request)
        body = json_body(request)
        unknown = sorted(set(body) - {"label", "compression", "scope", "expires", "quota_bytes", "quota_files"})
        if unknown:
            raise ApiError(400, f"unknown field(s): {', '.join(unknown)}")
        label = body.get("label")
        label = "" if label is None else label
        compression = body.get("compression")
        if not isinstance(label, str) or len(label) > MAX_LABEL:
            raise ApiError(400, f"label must be a string of at most {MAX_LABEL} characters")
        if compression is not None and compression not in COMPRESSION_MODES:
            raise ApiError(400, f"compression must be null or one of {', '.join(COMPRESSION_MODES)}")
        scope = body.get("scope")
        scope = "rw" if scope is None else scope
        if not isinstance(scope, str) or scope not in SCOPES:
            raise ApiError(400, f"scope must be one of {', '.join(SCOPES)}")
        expires = body.get("expires")
        if expires is not None:
            if not isinstance(expires, str):
                raise ApiError(400, "expires must be a string")
            try:
                expires = parse_expiry(expires)
            except ValueError as exc:
                raise ApiError(400, str(exc)) from None
        quotas = {}
        for field in ("quota_bytes", "quota_files"):
            value = body.get(field)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise ApiError(400, f"{field} must be null or a non-negative integer (0: unlimited)")
            quotas[field] = value
        record, key = self.services.create_key(label, compression, scope=scope, expires=expires, **quotas)
        return json_response(_shown(record, key), 201)

    def list(self, request: Request) -> Response:
        require_admin(self.services, request)
        listed = []
        for record in self.services.keys.list():
            files, size = self.services.store.usage(record.collection)
            listed.append({"id": record.id, "label": record.label, "created": record.created,
                           "compression": record.compression, "scope": record.scope,
                           "expires": record.expires, "files": files, "bytes": size})
        return json_response({"keys": listed})

    def revoke(self, request: Request, key_id: str) -> Response:
        require_admin(self.services, request)
        purge = choice_param(request, "purge", ("false", "true")) == "true"
        try:
            self.services.revoke_key(key_id, purge=purge)
        except UnknownKey:
            raise ApiError(404, f"no key with id {key_id!r}") from None
        return Response(status=204)

    def rotate(self, request: Request) -> Response:
        """A new key for the caller's collection; the key that authenticated this request is refused from now on."""
        record = require_key(self.services, request, None)
        record, key = self.services.keys.rotate(record.id)
        return json_response(_shown(record, key))
