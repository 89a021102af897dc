"""The bench's file-system floor (bench.harness.fs_floor) really does durable replaces, and says so in the report."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from bench.harness import fs_floor, report
from bench.harness.runner import RunResult


def test_each_loop_writes_as_it_says_and_nothing_is_left(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    for name in ("fsync", "rename", "unlink"):
        real = getattr(os, name)
        monkeypatch.setattr(os, name, lambda *a, _n=name, _f=real, **kw: calls.append(_n) or _f(*a, **kw))
    rates = fs_floor.write_rates(tmp_path, 1024, 0.2, names=5)
    assert rates.durable > 0 and rates.flushed > 0 and rates.plain > 0
    # Three loops one after another: renames with two fsyncs each (seeding included),
    # then unlinks with two fsyncs each, then unlinks alone (and the clean-up's).
    text = "".join({"fsync": "f", "rename": "r", "unlink": "u"}[c] for c in calls)
    assert re.fullmatch(r"(frf){6,}(uff){1,}(u){1,}", text), text[:60]
    assert list(tmp_path.iterdir()) == []


def test_the_report_gives_each_servers_single_client_rate_as_a_share(capsys: pytest.CaptureFixture[str]) -> None:
    best = {("PUT 10 KiB", 1, "uss"): RunResult("uss", "PUT 10 KiB", 1, "ops/s", ops=100, elapsed=1.0),
            ("PUT 10 KiB", 8, "uss"): RunResult("uss", "PUT 10 KiB", 8, "ops/s", ops=900, elapsed=1.0)}
    report.print_floors({"PUT 10 KiB": fs_floor.WriteRates(durable=200.0, flushed=300.0, plain=1000.0)}, best,
                       ["uss", "copyparty"])
    out = capsys.readouterr().out
    assert "PUT 10 KiB" in out and "200 ops/s" in out and "uss 0.50" in out and "copyparty" not in out
