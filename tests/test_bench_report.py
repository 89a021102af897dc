"""bench.harness.report's model of copyparty charged with what durability adds to its writes, on made-up rates."""

from __future__ import annotations

import pytest

from bench.harness import report
from bench.harness.fs_floor import WriteRates
from bench.harness.runner import RunResult
from bench.harness.scenarios import SCENARIOS


def _results(scenario: str, rates: dict[str, float], clients: int = 1) -> dict[tuple[str, int, str], RunResult]:
    sc = SCENARIOS[scenario]()
    return {(sc.name, clients, server): RunResult(server, sc.name, clients, sc.unit, credit=rate, window=1.0)
            for server, rate in rates.items()}


def test_copyparty_is_charged_what_the_disk_adds_to_its_own_writes(capsys: pytest.CaptureFixture[str]) -> None:
    # Times per write on the disk: 400 us atomic and durable, 300 us flushed, 100 us plain,
    # so durability adds 300 us or 200 us. copyparty 250 us per PUT: charged 550 and 450 us.
    # uss_dav 1000 us per PUT: 0.55x and 0.45x.
    best = _results("put10k", {"uss_dav": 1000, "copyparty": 4000})
    report.print_flushes_charged({"PUT 10 KiB": WriteRates(durable=2500, flushed=1e6 / 300, plain=10000)}, best)
    assert capsys.readouterr().out.splitlines() == [
        (
            "copyparty charged with what the disk adds to its writes, PUT 10 KiB x1: "
            "atomic and durable (+300 us) 1818 ops/s, uss_dav 0.55x; only flushed (+200 us) 2222 ops/s, uss_dav 0.45x"
        )
    ]


def test_nothing_is_printed_without_both_servers_at_one_client(capsys: pytest.CaptureFixture[str]) -> None:
    floors = {"PUT 10 KiB": WriteRates(durable=2500, flushed=3000, plain=10000)}
    report.print_flushes_charged(floors, _results("put10k", {"uss_dav": 1000, "nginx": 4000}))
    report.print_flushes_charged(floors, _results("put10k", {"uss_dav": 1000, "copyparty": 4000}, clients=8))
    assert capsys.readouterr().out == ""
