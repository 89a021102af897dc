"""The failed-authentication counter: processes on one data directory count together."""

from __future__ import annotations

import time
from pathlib import Path

from uss_dav.failures import FailureCounter


def test_two_processes_count_one_address_together(tmp_path: Path) -> None:
    a, b = FailureCounter(tmp_path, limit=3, window=60), FailureCounter(tmp_path, limit=3, window=60)
    assert [a.fail("10.0.0.1"), b.fail("10.0.0.1"), a.fail("10.0.0.1")] == [None, None, None]
    wait = b.fail("10.0.0.1")  # the fourth failure, wherever it lands
    assert wait is not None and 1.0 <= wait <= 60
    assert a.fail("10.0.0.2") is None  # another address has its own count
    counts = [p for p in tmp_path.iterdir() if not p.name.endswith(".lock")]
    assert len(counts) == 2 and not any("10.0.0" in p.name for p in tmp_path.iterdir())


def test_failures_leave_the_window_and_their_files_are_pruned(tmp_path: Path) -> None:
    counter = FailureCounter(tmp_path, limit=1, window=0.2)
    counter.fail("::1")
    assert counter.fail("::1") is not None
    time.sleep(0.3)
    assert counter.fail("::1") is None  # the earlier two have left the window
    time.sleep(0.3)
    counter._until_prune = 1
    counter.fail("192.0.2.9")  # prunes ::1's idle files
    assert len(list(tmp_path.iterdir())) == 2  # 192.0.2.9's counts and their lock file


def test_limit_zero_counts_nothing(tmp_path: Path) -> None:
    off = FailureCounter(tmp_path / "failures", limit=0)
    assert all(off.fail("10.0.0.1") is None for _ in range(50))
    assert not (tmp_path / "failures").exists()
