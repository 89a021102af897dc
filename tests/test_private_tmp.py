"""A server keeps its temporary files in one folder of its own, and a kill -9 does not leave it there for good.

The end-to-end test points a server's TMPDIR at an empty folder, makes it
start its codec processes, kills the whole server with SIGKILL, and starts
it again: afterwards the folder holds only the new server's own folder, and
nothing once that server has stopped. The sweep itself is checked on made-up
folders: a held lock, a missing lock file, another prefix, a symlink.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from pathlib import Path

import pytest
import requests

from tests.server import ROOT, ServerFactory
from uss_dav.private_tmp import (
    HELD,
    PREFIX,
    STARTING,
    STARTING_SECONDS,
    base_folder,
    sweep_abandoned,
)

JPEG = (ROOT / "tests" / "data" / "corpus" / "cmyk.jpg").read_bytes()


def _folder(parent: Path, name: str, *, lock_file: bool = True) -> Path:
    folder = parent / name
    folder.mkdir()
    (folder / "pymp-x").mkdir()
    if lock_file:
        (folder / HELD).touch()
    return folder


def test_the_sweep_removes_only_folders_no_server_holds(tmp_path: Path) -> None:
    dead = _folder(tmp_path, PREFIX + "dead")
    held = _folder(tmp_path, PREFIX + "held")
    unlocked = _folder(tmp_path, PREFIX + "unlocked", lock_file=False)
    starting = _folder(tmp_path, STARTING + "starting")  # its server is between mkdtemp and flock
    stale = _folder(tmp_path, STARTING + "stale")  # a start killed at that moment, long ago
    long_ago = time.time() - STARTING_SECONDS - 5
    os.utime(stale, (long_ago, long_ago))
    other = _folder(tmp_path, "uss_dav-metrics-abc")
    target = _folder(tmp_path, "elsewhere")
    (tmp_path / (PREFIX + "link")).symlink_to(target)

    fd = os.open(held / HELD, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # a running server's lock (another open file, so it conflicts here too)
    try:
        assert sweep_abandoned(str(tmp_path)) == 3
    finally:
        os.close(fd)

    assert not dead.exists() and not unlocked.exists() and not stale.exists()
    assert held.is_dir() and starting.is_dir() and other.is_dir()
    assert (tmp_path / (PREFIX + "link")).is_symlink() and (target / "pymp-x").is_dir()


def test_a_temporary_folder_too_deep_for_the_fork_servers_socket_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deep = tmp_path / ("d" * 40)
    monkeypatch.setattr(tempfile, "tempdir", str(deep))
    assert len(str(deep)) + len("/uss_dav-tmp-XXXXXXXX/pymp-XXXXXXXX/listener-XXXXXXXX") > 107
    assert base_folder() == "/tmp"
    monkeypatch.setattr(tempfile, "tempdir", "/tmp/short")
    assert base_folder() == "/tmp/short"


def test_a_killed_server_leaves_nothing_in_the_temporary_folder_once_started_again(
    make_server: ServerFactory, tmp_path_factory: pytest.TempPathFactory
) -> None:
    system_tmp = tmp_path_factory.mktemp("t")  # short: the fork server's socket path goes under it
    srv = make_server(extra_env={"TMPDIR": str(system_tmp)}, workers=2, start=False)
    _key_id, key = srv.create_key("--compression", "exact")
    srv.start()
    # A JPEG in exact mode goes through the codec processes: their pool makes its pymp-* folder.
    for i in range(4):  # one per serving process, whichever answers
        r = requests.put(f"{srv.url}/p{i}.jpg", data=JPEG, auth=(key, ""), timeout=30)
        assert r.status_code == 201, r.text
    first = os.listdir(system_tmp)
    assert len(first) == 1 and first[0].startswith(PREFIX), first
    inside = os.listdir(system_tmp / first[0])
    assert any(n.startswith("uss_dav-metrics-") for n in inside), inside
    assert any(n.startswith("pymp-") for n in inside), inside

    srv.kill()  # SIGKILL to every process of the server: nothing of it can clean up
    assert os.listdir(system_tmp) == first, "the folder went with the kill: the test proves nothing"

    srv.start()
    again = os.listdir(system_tmp)
    assert first[0] not in again, f"the killed server's folder is still there: {again}"
    assert len(again) == 1 and again[0].startswith(PREFIX), again
    assert "removed 1 temporary folder" in srv.log_path.read_text()

    srv.stop()
    assert os.listdir(system_tmp) == [], "a clean stop left files in the temporary folder"
