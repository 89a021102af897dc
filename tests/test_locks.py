"""FileLocks, the lock storage on the data directory: what one process grants binds the others.

Two FileLocks on one directory stand for two worker processes (each keeps its
own cached view); one test uses a real second process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from wsgidav.dav_error import HTTP_LOCKED, DAVError

from tests.inprocess import assembled_app, request
from tests.server import ROOT
from uss_dav.locks import FileLockManager, FileLocks

OWNER = b"<?xml version='1.0' encoding='UTF-8'?>\n<owner xmlns=\"DAV:\">caf\xc3\xa9</owner>"


def opened(tmp_path: Path) -> FileLocks:
    (tmp_path / "staging").mkdir(exist_ok=True)
    locks = FileLocks(tmp_path / "locks", tmp_path / "staging")
    locks.open()
    return locks


def new_lock(scope: str = "exclusive", depth: str = "0", timeout: float = 3600) -> dict[str, object]:
    return {"type": "write", "scope": scope, "depth": depth, "owner": OWNER, "timeout": timeout, "principal": "k1"}


def roots(locks: FileLocks, path: str, **options: bool) -> list[str]:
    found = locks.get_lock_list(path, include_root=options.get("root", True),
                                include_children=options.get("children", False), token_only=False)
    return sorted(lock["root"] for lock in found)


@pytest.fixture
def pair(tmp_path: Path) -> tuple[FileLocks, FileLocks]:
    return opened(tmp_path), opened(tmp_path)


def test_a_lock_granted_by_one_process_is_seen_by_the_other_until_released(pair) -> None:
    a, b = pair
    assert roots(b, "/c1/x") == []  # b has read (and cached) the empty table
    lock = a.create("/c1/x", new_lock())
    assert roots(b, "/c1/x") == ["/c1/x"]
    seen = b.get(lock["token"])
    assert seen is not None and seen["owner"] == OWNER and seen["principal"] == "k1"  # owner stays bytes
    assert roots(b, "/c1", root=False, children=True) == ["/c1/x"]
    assert roots(b, "/c2/x") == [] and roots(b, "/c1/xy") == []
    assert b.delete(lock["token"]) is True
    assert a.get(lock["token"]) is None and roots(a, "/c1/x") == []
    assert a.delete(lock["token"]) is False


def test_a_conflicting_lock_granted_meanwhile_by_another_process_gets_423(pair) -> None:
    a, b = pair
    assert roots(b, "/c1/x") == []  # b's LockManager would check against this
    a.create("/c1/x", new_lock())
    with pytest.raises(DAVError) as refused:
        b.create("/c1/x", new_lock())
    assert refused.value.value == HTTP_LOCKED
    with pytest.raises(DAVError):
        b.create("/c1", new_lock(depth="infinity"))  # a depth-infinity lock above a lock
    a.create("/c1/s", new_lock(scope="shared"))
    b.create("/c1/s", new_lock(scope="shared"))  # shared and shared coexist
    b.create("/c2/x", new_lock())  # another collection is another lock table
    assert roots(a, "/c1", root=False, children=True) == ["/c1/s", "/c1/s", "/c1/x"]


def test_refresh_through_one_process_extends_the_lock_for_the_other(pair) -> None:
    a, b = pair
    lock = a.create("/c1/x", new_lock(timeout=60))
    assert b.get(lock["token"])["expire"] < time.time() + 61
    b.refresh(lock["token"], timeout=7200)
    assert a.get(lock["token"])["expire"] > time.time() + 7000
    a.delete(lock["token"])
    with pytest.raises(DAVError):
        b.refresh(lock["token"], timeout=60)


def test_expired_locks_are_purged_by_the_first_read_that_meets_them(pair, tmp_path: Path) -> None:
    a, b = pair
    lock = a.create("/c1/x", new_lock(timeout=0.05))
    kept = a.create("/c1/y", new_lock())
    assert roots(b, "/c1", root=False, children=True) == ["/c1/x", "/c1/y"]
    time.sleep(0.1)
    # A read, not a change, in the other process: the expired lock is gone from the answer and the disk.
    assert roots(b, "/c1", root=False, children=True) == ["/c1/y"]
    assert [p.name for p in (tmp_path / "locks").glob("*.json")] == [Path(b.file_for(kept["token"])).name]
    assert a.get(lock["token"]) is None and a.get(kept["token"]) is not None


def test_a_corrupt_lock_file_is_moved_aside_with_a_log_line(pair, tmp_path: Path, caplog) -> None:
    a, b = pair
    kept = a.create("/c1/y", new_lock())
    broken = tmp_path / "locks" / ("0" * 40 + ".json")
    broken.write_bytes(b"")  # what a crash can leave of a lock file written without fsync
    not_a_lock = tmp_path / "locks" / ("1" * 40 + ".json")
    not_a_lock.write_bytes(b'{"root": "/c1/z"}')
    a.create("/c2/x", new_lock())  # a change, so b reads the directory again
    with caplog.at_level("WARNING", logger="uss_dav.locks"):
        assert roots(b, "/c1", root=False, children=True) == ["/c1/y"]
    assert not broken.exists() and not not_a_lock.exists()
    aside = sorted(p.name for p in (tmp_path / "locks" / "corrupt").iterdir())
    assert len(aside) == 2 and aside[0].startswith(broken.name) and aside[1].startswith(not_a_lock.name)
    assert sum("holds no lock" in r.getMessage() for r in caplog.records) == 2
    assert b.get(kept["token"]) is not None and roots(a, "/c1/y") == ["/c1/y"]


def test_lock_files_are_named_by_hash_and_hold_json(tmp_path: Path) -> None:
    locks = opened(tmp_path)
    lock = locks.create("/c1/x", new_lock())
    (stored,) = (tmp_path / "locks").glob("*.json")
    assert stored.name == Path(locks.file_for(lock["token"])).name and lock["token"] not in stored.name
    assert json.loads(stored.read_bytes())["root"] == "/c1/x"
    assert list((tmp_path / "staging").iterdir()) == []


def test_a_lock_taken_in_another_process_binds_this_one(tmp_path: Path) -> None:
    here = opened(tmp_path)
    assert roots(here, "/c1/x") == []
    script = (
        "import sys; from pathlib import Path; from uss_dav.locks import FileLocks\n"
        "d = Path(sys.argv[1]); locks = FileLocks(d / 'locks', d / 'staging'); locks.open()\n"
        "lock = {'type': 'write', 'scope': 'exclusive', 'depth': 'infinity', 'owner': b'o', 'timeout': 60,"
        " 'principal': 'k2'}\n"
        "print(locks.create('/c1', lock)['token'])\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=True)
    token = done.stdout.strip()
    assert here.get(token) is not None and roots(here, "/c1") == ["/c1"]
    with pytest.raises(DAVError):
        here.create("/c1/x", new_lock())  # below the other process's depth-infinity lock


def test_the_write_check_sees_a_lock_another_process_granted_in_this_collection_only(tmp_path: Path) -> None:
    """FileLockManager answers 'nothing in the way' without a walk only while that is true, in every process."""
    other, here = opened(tmp_path), FileLockManager(opened(tmp_path))

    def may_write(url: str, token_list: tuple[str, ...] = ()) -> bool:
        try:
            here.check_write_permission(url=url, depth="0", token_list=list(token_list), principal="k1")
            with here.write_transaction(url=url, token_list=list(token_list), principal="k1"):
                return True
        except DAVError as exc:
            assert exc.value == HTTP_LOCKED
            return False

    assert may_write("/c1/x") and may_write("/c2/x")  # nothing held: this process caches that
    lock = other.create("/c1/d", new_lock(depth="infinity"))
    assert not may_write("/c1/d/x") and not may_write("/c1/d/")
    assert may_write("/c1/e") and may_write("/c2/d/x")  # beside the lock, and in another collection
    assert may_write("/c1/d/x", (lock["token"],))  # its owner, with the token
    other.delete(lock["token"])
    assert may_write("/c1/d/x")
    other.create("/", new_lock(depth="infinity"))  # above every collection
    assert not may_write("/c2/x")


def test_the_startup_log_names_the_lock_manager_the_server_runs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """WsgiDAV logs "Lock manager: None" before it is handed FileLockManager; an operator reads the true one."""
    with caplog.at_level("INFO"), assembled_app(tmp_path / "data") as (app, key, _services):
        lines = [r.getMessage() for r in caplog.records]
        assert not [line for line in lines if "manager:" in line or "controller:" in line], lines
        [line] = [line for line in lines if line.startswith("WsgiDAV/")]
        assert f"FileLockManager(FileLocks('{tmp_path / 'data' / 'locks'}'))" in line, line
        assert "SidecarPropertyManager" in line and "KeyAuthenticator" in line, line
        # Only the start is quieter: WsgiDAV still logs each request at INFO.
        caplog.clear()
        request(app, key, "MKCOL", "/logged/")
        assert any('"MKCOL /logged/"' in r.getMessage() for r in caplog.records if r.name == "wsgidav.wsgidav_app")
