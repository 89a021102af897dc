"""The litmus WebDAV compliance suite, run in full against a key's collection."""

from __future__ import annotations

from tests.litmus import assert_litmus_clean, run_litmus
from tests.server import RunningServer


def test_litmus_passes_every_suite_without_warnings(server: RunningServer, key: str, tmp_path) -> None:
    assert_litmus_clean(run_litmus(server.url + "/", key, str(tmp_path)))
