"""The OpenAPI document is true: every REST response of the suite is validated against it, and schemathesis finds nothing.

`ValidatedSession` (tests/openapi.py; tests/test_rest.py makes every request
through it) checks each response with openapi-core; the schemathesis run fuzzes every
operation of the live server, key endpoints included (admin token from env).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from openapi_spec_validator import validate
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.openapi import SPEC, SPEC_PATH, ValidatedSession, assert_documented
from tests.server import ADMIN_TOKEN, RunningServer
from uss_dav.config import load_config
from uss_dav.rest.app import RestApp
from uss_dav.services import open_services

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
