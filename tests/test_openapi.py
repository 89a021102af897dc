"""The OpenAPI document is true: every REST response of the suite is validated against it, and schemathesis finds nothing.

`ValidatedSession` (used by tests/test_rest.py for every request it makes)
checks each response with openapi-core; the schemathesis run fuzzes every
operation of the live server, key endpoints included (admin token from env).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from openapi_core import Config, OpenAPI
from openapi_core.contrib.requests import (
    RequestsOpenAPIRequest,
    RequestsOpenAPIResponse,
)
from openapi_core.contrib.werkzeug import (
    WerkzeugOpenAPIRequest,
    WerkzeugOpenAPIResponse,
)
from openapi_spec_validator import validate
from schemathesis.specs.openapi.checks import positive_data_acceptance
from werkzeug.test import TestResponse
from werkzeug.wrappers import Request

from tests.server import ROOT, RunningServer, write_config
from uss_dav.config import load_config
from uss_dav.rest.app import RestApp
from uss_dav.rest.wire import PROBLEM_TYPE
from uss_dav.services import open_services

SPEC_PATH = ROOT / "uss_dav" / "openapi.yaml"
SPEC: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text())
# openapi-core reads only application/json as JSON by default.
OPENAPI = OpenAPI.from_dict(SPEC, config=Config(extra_media_type_deserializers={PROBLEM_TYPE: json.loads}))
ADMIN_TOKEN = "admin-token-for-tests-" + "x" * 20


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


@pytest.fixture(scope="module")
def admin_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server with an admin token from the environment; the limiter off (fuzzing fails auth on purpose)."""
    root = tmp_path_factory.mktemp("uss-admin")
    config = write_config(root / "config.yaml", auth_failure_limit=0)
    srv = RunningServer(root / "data", config=config, extra_env={"USS_ADMIN_TOKEN": ADMIN_TOKEN})
    srv.start()
    yield srv
    srv.stop()


# --- the document ---------------------------------------------------------------


def test_document_is_valid_openapi_3_1() -> None:
    assert SPEC["openapi"].startswith("3.1")
    validate(SPEC)


def test_server_serves_the_document_as_json(server: RunningServer) -> None:
    session = ValidatedSession()
    r = session.get(f"{server.url}/api/v1/openapi.json")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json")
    assert r.json() == json.loads(json.dumps(SPEC))
    assert session.validated == 1


def test_every_route_is_documented_with_its_methods(tmp_path: Path) -> None:
    services = open_services(load_config(None, {"data_dir": tmp_path}, environ={}), with_hook=False)
    routed: set[tuple[str, str]] = set()
    for rule in RestApp(services).urls.iter_rules():
        path = rule.rule.replace("<name>", "{name}").replace("<key_id:key_id>", "{key_id}")
        routed |= {(path, m.lower()) for m in rule.methods or () if m != "HEAD" or path == "/images/{name}"}
    documented = {(path, m) for path, item in SPEC["paths"].items() for m in item if m != "parameters"}
    assert routed == documented


def test_validation_is_live_an_undocumented_response_fails(server: RunningServer) -> None:
    """The checker itself can fail: a response with an undocumented field is refused."""
    r = requests.get(f"{server.url}/api/v1/ping", timeout=10)
    assert_documented(r)
    r._content = json.dumps({"status": "ok", "version": "1", "extra": True}).encode()
    with pytest.raises(AssertionError, match="not as documented"):
        assert_documented(r)
    r.status_code = 418
    r._content = b"<html>teapot</html>"
    r.headers["Content-Type"] = "text/html"
    with pytest.raises(AssertionError, match="not as documented"):
        assert_documented(r)


# --- schemathesis against the live server -----------------------------------------

schema = schemathesis.openapi.from_path(str(SPEC_PATH))


@schema.parametrize()
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    case: schemathesis.Case, admin_server: RunningServer
) -> None:
    if "adminToken" in json.dumps(case.operation.definition.raw.get("security", [])):
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    else:
        # A fresh key for every case: rotation and revocation never starve the next one.
        r = requests.post(f"{admin_server.url}/api/v1/keys", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                          json={"label": "fuzz"}, timeout=10)
        headers = {"Authorization": f"Bearer {r.json()['key']}"}
    # Every check but positive_data_acceptance: a schema-valid request may still be refused for
    # reasons the document states but JSON Schema cannot express (bytes that are no image: 415).
    case.call_and_validate(
        base_url=f"{admin_server.url}/api/v1", headers=headers, timeout=30,
        excluded_checks=[positive_data_acceptance],
    )
