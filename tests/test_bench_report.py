"""bench.harness.report's model of copyparty charged with uss_dav's flushes, on made-up rates."""

from __future__ import annotations

import pytest

from bench.harness import report
from bench.harness.runner import RunResult
from bench.harness.scenarios import SCENARIOS


def _results(scenario: str, rates: dict[str, float]) -> dict[tuple[str, int, str], RunResult]:
    sc = SCENARIOS[scenario]()
    return {(sc.name, 1, server): RunResult(server, sc.name, 1, sc.unit, credit=rate, window=1.0)
            for server, rate in rates.items()}


def test_copyparty_is_charged_each_servers_measured_flush_cost(capsys: pytest.CaptureFixture[str]) -> None:
    # Times per request: uss_dav 1000 us with fsync, 600 without (400 of flushes);
    # bare 500 and 250 (250); copyparty 250. Charged: 650 us and 500 us per request.
    best = _results("put10k", {"uss_dav": 1000, "uss_dav_nofsync": 1000 / 0.6, "bare": 2000,
                               "bare_nofsync": 4000, "copyparty": 4000})
    report.print_flushes_charged(best, [SCENARIOS["put10k"](), SCENARIOS["get10k"]()], [1, 8])
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        (
            "copyparty charged with the flushes, PUT 10 KiB x1: "
            "at uss_dav's flush cost 1538 ops/s, uss_dav 0.65x; at bare's flush cost 2000 ops/s, uss_dav 0.50x"
        )
    ]


def test_nothing_is_printed_without_every_server_it_needs(capsys: pytest.CaptureFixture[str]) -> None:
    best = _results("put10k", {"uss_dav": 1000, "uss_dav_nofsync": 1500, "bare": 2000, "copyparty": 4000})
    report.print_flushes_charged(best, [SCENARIOS["put10k"]()], [1])
    assert capsys.readouterr().out == ""
