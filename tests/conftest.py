"""Fixtures: one real server per test session, a fresh key (and collection) per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.server import RunningServer, write_config


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("uss")
    # Many tests fail authentication on purpose; the limiter has its own test.
    srv = RunningServer(root / "data", config=write_config(root / "config.yaml", auth_failure_limit=0))
    srv.create_key("--label", "session")
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def key(server: RunningServer) -> str:
    return server.create_key()[1]


@pytest.fixture
def dav(server: RunningServer, key: str) -> Iterator[requests.Session]:
    """A session authenticated with a fresh key; paths are relative to the server URL."""
    with requests.Session() as session:
        session.auth = (key, "")
        yield session


def collection_dir(server: RunningServer, key_id: str) -> Path:
    return server.data_dir / "collections" / key_id
