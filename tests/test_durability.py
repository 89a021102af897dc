"""Durability of an upload in-process: what is fsynced, in which order, and shared between uploads."""

from __future__ import annotations

import hashlib
import itertools
import os
import threading
import time
from pathlib import Path

import pytest

import uss_dav.storage.upload as upload_module
from uss_dav.storage import Store
from uss_dav.storage.durability import FolderSyncs


def test_put_fsyncs_the_data_before_its_rename_and_the_folder_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        real_replace(src, dst)
        events.append(("rename", str(dst)))

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    store = Store(tmp_path)
    store.ensure_collection("c")
    upload = store.begin_upload("c", "/a.bin")
    upload.write(b"x" * 10240)
    store.commit(upload)

    target = str(store.collections / "c" / "a.bin")
    renamed = events.index(("rename", target))
    assert any(e == ("fsync", upload.path) for e in events[:renamed]), events
    assert ("fsync", str(store.collections / "c")) in events[renamed:], events


def test_a_large_upload_is_handed_to_the_disk_whole_while_it_arrives(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    ranges: list[tuple[int, int]] = []
    monkeypatch.setattr(upload_module, "start_writeback", lambda fd, offset, length: ranges.append((offset, length)))
    data = os.urandom(3 * 1024 * 1024 + 12345)
    upload = store.begin_upload("c", "/big.bin")
    for start in range(0, len(data), 65536):
        upload.write(data[start : start + 65536])
    assert len(ranges) == 3, "write-behind did not start while the body was arriving"
    entry = store.commit(upload)
    assert ranges[0][0] == 0 and sum(length for _, length in ranges) == len(data)
    assert all(a + n == b for (a, n), (b, _) in itertools.pairwise(ranges)), ranges
    assert entry.sha1 == hashlib.sha1(data).hexdigest() and entry.md5 == hashlib.md5(data).hexdigest()
    assert store.open_read("c", "/big.bin").read() == data


def test_a_small_upload_makes_no_write_behind_calls(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    ranges: list[tuple[int, int]] = []
    monkeypatch.setattr(upload_module, "start_writeback", lambda fd, offset, length: ranges.append((offset, length)))
    upload = store.begin_upload("c", "/small.bin")
    upload.write(b"y" * 10240)
    store.commit(upload)
    assert ranges == []


class SlowFsync:
    """A folder fsync taking `seconds`, recording when each one started and ended; the calls numbered in `failing` fail."""

    def __init__(self, seconds: float, failing: frozenset[int] = frozenset()) -> None:
        self.seconds, self.failing = seconds, failing
        self.calls: list[tuple[float, float, bool]] = []
        self.lock = threading.Lock()

    def __call__(self, path: str) -> None:
        start = time.monotonic()
        time.sleep(self.seconds)
        with self.lock:
            fail = len(self.calls) in self.failing
            self.calls.append((start, time.monotonic(), not fail))
        if fail:
            raise OSError("EIO")


def run_callers(syncs: FolderSyncs, count: int) -> list[tuple[float, float, bool]]:
    """(asked, returned, raised) of `count` threads, each asking for the folder's durability once."""
    results: list[tuple[float, float, bool]] = []
    lock = threading.Lock()

    def caller(delay: float) -> None:
        time.sleep(delay)
        asked = time.monotonic()
        try:
            syncs.sync("/folder")
            raised = False
        except OSError:
            raised = True
        with lock:
            results.append((asked, time.monotonic(), raised))

    threads = [threading.Thread(target=caller, args=(i * 0.004,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return results


def covered(result: tuple[float, float, bool], calls: list[tuple[float, float, bool]]) -> bool:
    asked, returned, _ = result
    return any(ok and start >= asked and end <= returned for start, end, ok in calls)


def test_concurrent_commits_into_one_folder_share_fsyncs_each_begun_after_their_rename() -> None:
    fsync = SlowFsync(0.02)
    results = run_callers(FolderSyncs(fsync), 12)
    assert len(results) == 12 and not any(raised for *_, raised in results)
    assert all(covered(r, fsync.calls) for r in results), "a commit returned before a fsync begun after it ended"
    assert len(fsync.calls) < 12, "no fsync was shared"


def test_a_failed_folder_fsync_never_counts_as_durable() -> None:
    # The second fsync fails: it was to cover the callers that queued behind the first.
    fsync = SlowFsync(0.05, failing=frozenset({1}))
    results = run_callers(FolderSyncs(fsync), 6)
    assert len(results) == 6 and sum(raised for *_, raised in results) == 1
    assert all(covered(r, fsync.calls) for r in results if not r[2])


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path)
    s.ensure_collection("c")
    return s
