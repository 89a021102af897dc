"""The bench's file-system floor (bench.harness.fs_floor) really does durable replaces, and says so in the report."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.harness import fs_floor, report
from bench.harness.runner import RunResult


def test_each_replace_fsyncs_file_and_folder_and_nothing_is_left(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    renames: list[tuple[str, str]] = []
    real_rename = os.rename
    monkeypatch.setattr(os, "rename", lambda a, b: renames.append((a, b)) or real_rename(a, b))
    rate = fs_floor.durable_replace_rate(tmp_path, 1024, 0.2, names=5)
    assert rate > 0
    assert len(synced) == 2 * len(renames) and len(renames) > 5  # seeded names, then timed replaces
    assert {Path(b).name for _, b in renames} == {f"n{i:03d}" for i in range(5)}
    assert list(tmp_path.iterdir()) == []


def test_the_report_gives_each_servers_single_client_rate_as_a_share(capsys: pytest.CaptureFixture[str]) -> None:
    best = {("PUT 10 KiB", 1, "uss"): RunResult("uss", "PUT 10 KiB", 1, "ops/s", ops=100, elapsed=1.0),
            ("PUT 10 KiB", 8, "uss"): RunResult("uss", "PUT 10 KiB", 8, "ops/s", ops=900, elapsed=1.0)}
    report.print_floors({"PUT 10 KiB": 200.0}, best, ["uss", "copyparty"])
    out = capsys.readouterr().out
    assert "PUT 10 KiB" in out and "200 ops/s" in out and "uss 0.50" in out and "copyparty" not in out
