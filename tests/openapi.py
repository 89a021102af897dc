"""The OpenAPI document as a test oracle: sessions and checks that refuse any /api/v1 response it does not describe."""

from __future__ import annotations

import io
import json
from typing import Any

import requests
import yaml
from openapi_core import Config, OpenAPI
from openapi_core.contrib.requests import (
    RequestsOpenAPIRequest,
    RequestsOpenAPIResponse,
)
from openapi_core.contrib.werkzeug import (
    WerkzeugOpenAPIRequest,
    WerkzeugOpenAPIResponse,
)
from werkzeug.test import TestResponse
from werkzeug.wrappers import Request

from tests.server import ROOT
from uss_dav.rest.wire import PROBLEM_TYPE

SPEC_PATH = ROOT / "uss_dav" / "openapi.yaml"
SPEC: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text())
# openapi-core reads only application/json as JSON by default.
OPENAPI = OpenAPI.from_dict(SPEC, config=Config(extra_media_type_deserializers={PROBLEM_TYPE: json.loads}))


class ValidatedSession(requests.Session):
    """A requests session that fails on any /api/v1 response the OpenAPI document does not describe."""

    def __init__(self, auth: tuple[str, str] | None = None) -> None:
        super().__init__()
        self.auth = auth
        self.validated = 0

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        response = super().request(method, url, *args, **kwargs)
        if "/api/v1/" in response.url:
            assert_documented(response)
            self.validated += 1
        return response


def assert_documented(response: requests.Response) -> None:
    """Raise (with the reason) unless the OpenAPI document allows this response to this request."""
    try:
        OPENAPI.validate_response(RequestsOpenAPIRequest(response.request), RequestsOpenAPIResponse(response))
    except Exception as exc:
        details = getattr(exc, "__cause__", None) or exc
        raise AssertionError(
            f"{response.request.method} {response.url} -> {response.status_code} "
            f"{response.headers.get('Content-Type')}: not as documented: {repr(details)[:1500]}\n{response.text[:300]}"
        ) from exc


def assert_documented_in_process(response: TestResponse) -> None:
    """assert_documented for a response of Werkzeug's test client."""
    # The request's body was read by the app: validate against a bodiless copy (responses are what is checked).
    request = Request({**response.request.environ, "wsgi.input": io.BytesIO(), "CONTENT_LENGTH": "0"})
    try:
        OPENAPI.validate_response(WerkzeugOpenAPIRequest(request), WerkzeugOpenAPIResponse(response))
    except Exception as exc:
        raise AssertionError(f"{response.request.method} {response.request.url} -> {response.status}: "
                             f"not as documented: {repr(exc.__cause__ or exc)[:1500]}") from exc
