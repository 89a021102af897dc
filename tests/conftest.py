"""Fixtures: one real server per test session, a fresh key (and collection) per test,
and factories for servers with their own config."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.inprocess import assembled_app
from tests.server import ADMIN_TOKEN, RunningServer, ServerFactory
from uss_dav.services import Services
from uss_dav.storage import Store


@pytest.fixture(scope="session", autouse=True)
def subprocess_tmpdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every process the tests start keeps its temporary files under pytest's base directory.

    Servers killed with SIGKILL on purpose (crash and orphan tests) cannot
    remove theirs (their uss_dav-tmp-* folder, which only a later start on
    the same temporary folder removes); there they go with the run's other
    temporary files instead of piling up in /tmp.
    """
    before = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(tmp_path_factory.mktemp("tmp"))
    yield
    if before is None:
        del os.environ["TMPDIR"]
    else:
        os.environ["TMPDIR"] = before


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with ServerFactory(tmp_path_factory) as make:
        # Many tests fail authentication on purpose; the limiter has its own test.
        srv = make(auth_failure_limit=0, start=False)
        srv.create_key("--label", "session")
        srv.start()
        yield srv


@pytest.fixture
def make_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    """make_server(**config, extra_env=..., start=..., verify=...): servers stopped after the test."""
    with ServerFactory(tmp_path_factory) as make:
        yield make


@pytest.fixture(scope="module")
def make_module_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    """As make_server, for module-scoped fixtures: servers stopped after the module."""
    with ServerFactory(tmp_path_factory) as make:
        yield make


@pytest.fixture(scope="module")
def admin_server(make_module_server: ServerFactory) -> RunningServer:
    """A server with an admin token from the environment; the limiter off (fuzzing fails auth on purpose)."""
    return make_module_server(auth_failure_limit=0, extra_env={"USS_ADMIN_TOKEN": ADMIN_TOKEN})


@pytest.fixture
def key(server: RunningServer) -> str:
    return server.create_key()[1]


@pytest.fixture
def dav(server: RunningServer, key: str) -> Iterator[requests.Session]:
    """A session authenticated with a fresh key; paths are relative to the server URL."""
    with requests.Session() as session:
        session.auth = (key, "")
        yield session


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str, Services]]:
    """(app, key, services): the whole application in process, one per test module (tests.inprocess.assembled_app)."""
    with assembled_app(tmp_path_factory.mktemp("in-process")) as assembled:
        yield assembled


@pytest.fixture
def store(tmp_path: Path) -> Store:
    """A Store on an empty folder, with one collection: "c"."""
    s = Store(tmp_path)
    s.ensure_collection("c")
    return s
