"""Servers on one data directory know of each other (uss_dav.nodes): one that keeps WebDAV locks
where a running one cannot see them refuses to start, with a one-line reason.

A "peer" here is a small process that writes a node record and holds it, as
a server on another machine would; run_server.py is the real thing.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.server import ROOT, RunningServer, write_config
from uss_dav.locks import MODE
from uss_dav.nodes import NodeConflict, join, live_peers

PEER = """
import sys, time
from pathlib import Path
from uss_dav.nodes import join
join(Path(sys.argv[1]), sys.argv[2])
print("joined", flush=True)
time.sleep(600)
"""


def start_peer(data_dir: Path, mode: str) -> subprocess.Popen[str]:
    """A process holding a node record with `mode` on `data_dir` until killed."""
    peer = subprocess.Popen([sys.executable, "-c", PEER, str(data_dir), mode], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True)
    assert peer.stdout is not None and peer.stdout.readline().strip() == "joined"
    return peer


def test_a_server_refuses_to_start_beside_a_live_server_with_another_lock_mode(tmp_path: Path) -> None:
    data = tmp_path / "data"
    peer = start_peer(data, "redis://10.0.0.5:6379/0")
    srv = RunningServer(data, config=write_config(tmp_path / "config.yaml"))
    try:
        t0 = time.monotonic()
        with pytest.raises(RuntimeError, match="server exited"):
            srv.start()
        assert srv.proc is not None and srv.proc.wait(10) != 0
        lines = [line for line in srv.log().splitlines() if line.strip()]
        assert lines[-1].startswith("uss_dav: refusing to start: "), lines[-5:]
        assert "redis://10.0.0.5:6379/0" in lines[-1] and "(pid " in lines[-1] and MODE in lines[-1]
        assert time.monotonic() - t0 < 30
        assert not (data / "collections").exists(), "the refused server touched the data directory"
    finally:
        srv.stop()
        peer.kill()
        peer.wait()
    # Once that server is gone, its record is a leftover: the same start now succeeds and removes it.
    srv = RunningServer(data, config=write_config(tmp_path / "config.yaml"))
    try:
        srv.start()
        records = [json.loads(p.read_text()) for p in (data / "nodes").glob("*.json")]
        assert [(r["pid"], r["lock_mode"]) for r in records] == [(srv.proc.pid, MODE)]  # type: ignore[union-attr]
    finally:
        srv.stop()
    assert list((data / "nodes").glob("*.json")) == [], "a stopped server left its record"


def test_servers_with_the_same_lock_mode_share_a_data_directory(tmp_path: Path) -> None:
    peer = start_peer(tmp_path, MODE)
    try:
        membership = join(tmp_path, MODE)
        assert sorted(p.pid for p in live_peers(tmp_path / "nodes")) == sorted([peer.pid, membership.record.pid])
        membership.leave()
        assert [p.pid for p in live_peers(tmp_path / "nodes")] == [peer.pid]
    finally:
        peer.kill()
        peer.wait()
    assert live_peers(tmp_path / "nodes") == []  # the killed peer's record was left over, and is gone now
    assert list((tmp_path / "nodes").iterdir()) == []


def test_a_live_peer_with_another_mode_is_named_in_one_line(tmp_path: Path) -> None:
    peer = start_peer(tmp_path, "files:an older uss_dav")
    try:
        with pytest.raises(NodeConflict) as refused:
            join(tmp_path, MODE)
        message = str(refused.value)
        assert "\n" not in message and f"(pid {peer.pid})" in message and "an older uss_dav" in message
    finally:
        peer.kill()
        peer.wait()
