"""What a run prints: the results as a markdown table with ratios, the details, the problems, and JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypeGuard

from bench.harness.fs_floor import WriteRates
from bench.harness.runner import Key, RunResult, fmt_rate
from bench.harness.scenarios import Scenario
from bench.harness.servers import ServerUnderTest


def ran(r: RunResult | None) -> TypeGuard[RunResult]:
    """Whether `r` is a run that finished (it may still have measured nothing)."""
    return r is not None and not r.aborted


def fmt_ratio(a: RunResult | None, b: RunResult | None) -> str:
    return f"{a.rate / b.rate:.2f}" if ran(a) and ran(b) and b.rate > 0 else "-"


def table(rows: list[list[str]]) -> None:
    """Columns aligned, the first row a header underlined with dashes; the first column left-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def markdown(rows: list[list[str]]) -> None:
    """The rows as a markdown table, the first row its header."""
    print("| " + " | ".join(rows[0]) + " |")
    print("|" + "|".join("---" for _ in rows[0]) + "|")
    for row in rows[1:]:
        print("| " + " | ".join(row) + " |")


def print_results(best: dict[Key, RunResult], scenarios: list[Scenario], clients: list[int], servers: list[str],
                  ratios: list[tuple[str, str]]) -> None:
    """The rate of every server and the ratios `a/b` named in `ratios`, as markdown; then, aligned,
    the errors and the latencies."""
    head = ["scenario", "clients", "unit", *servers, *(f"{a}/{b}" for a, b in ratios)]
    rates, details = [head], [["scenario", "clients", *(f"{s} err p50/p99 ms" for s in servers)]]
    for sc in scenarios:
        for c in clients:
            rs = {s: best.get((sc.name, c, s)) for s in servers}
            if not any(rs.values()):
                continue
            rates.append([sc.name, str(c), sc.unit, *(fmt_rate(rs[s]) for s in servers),
                          *(fmt_ratio(rs.get(a), rs.get(b)) for a, b in ratios)])
            details.append([sc.name, str(c), *(
                f"{r.errors} {r.pct(0.5):.1f}/{r.pct(0.99):.1f}" if r and r.latencies else "-"
                for r in rs.values())])
    markdown(rates)
    print()
    table(details)


def print_durability(servers: list[ServerUnderTest]) -> None:
    """Which durability each server was measured with: an upload's cost depends on it more than on code."""
    print("durability measured:")
    for s in servers:
        print(f"  {s.name}: {s.durability}")


def print_floors(floors: dict[str, WriteRates], best: dict[Key, RunResult], servers: list[str]) -> None:
    """The file system's durable-upload rate (bench.harness.fs_floor) beside each server's single-client rate."""
    for scenario, rates in floors.items():
        shares = ", ".join(f"{s} {r.rate / rates.durable:.2f}" for s in servers
                           if ran(r := best.get((scenario, 1, s))))
        print(f"file-system floor for {scenario} (write, fsync, rename over, fsync folder; one thread, no HTTP): "
              f"{rates.durable:.0f} ops/s; x1 rates as a share of it: {shares or '-'}")


def print_flushes_charged(floors: dict[str, WriteRates], best: dict[Key, RunResult]) -> None:
    """uss_dav against copyparty as if copyparty paid what uss_dav's durability costs the disk, at 1 client.

    copyparty never fsyncs, so no run can show it keeping uss_dav's
    promise. What the promise adds to copyparty's own way of writing a file
    is measured on the same disk instead (fs_floor.WriteRates): durable and
    atomic, as uss_dav's PUT is, or only flushed. copyparty's time per
    request plus either is the rate it would have. Only for one client: the
    loops run one at a time, and concurrent uploads overlap their fsyncs.
    """
    for scenario, rates in floors.items():
        uss, copyparty = (best.get((scenario, 1, s)) for s in ("uss_dav", "copyparty"))
        if not (ran(uss) and ran(copyparty)) or uss.rate <= 0 or copyparty.rate <= 0:
            continue
        parts = []
        for what, rate in (("atomic and durable", rates.durable), ("only flushed", rates.flushed)):
            cost = 1 / rate - 1 / rates.plain
            charged = 1 / (1 / copyparty.rate + cost)
            parts.append(f"{what} (+{cost * 1e6:.0f} us) {charged:.0f} ops/s, uss_dav {uss.rate / charged:.2f}x")
        print(f"copyparty charged with what the disk adds to its writes, {scenario} x1: " + "; ".join(parts))


def print_problems(results: dict[Key, RunResult]) -> None:
    lines = []
    for r in results.values():
        where = f"[{r.server} | {r.scenario} x{r.clients}]"
        if r.aborted:
            lines.append(f"{where} ABORTED: {r.aborted}")
        if r.errors:
            lines.append(f"{where} {r.errors} errors:")
            for (_kind, n), sample in zip(r.error_kinds.items(), r.error_samples):
                lines.append(f"    {n} x {sample}")
        if r.latencies and r.slowest[0] > max(1.0, 20 * r.pct(0.5) / 1000):
            lines.append(f"{where} slowest request {r.slowest[0]:.2f} s (p50 {r.pct(0.5):.1f} ms): {r.slowest[1]}")
        if r.warmup_errors:
            lines.append(f"{where} {len(r.warmup_errors)} errors during warm-up (not counted), "
                         f"first: {r.warmup_errors[0]}")
        if r.misses:
            lines.append(f"{where} {r.misses} expected 404s (raced names), {r.ops} ok")
    if lines:
        print()
        print("\n".join(lines))


def write_json(path: str, results: list[RunResult]) -> None:
    Path(path).write_text(json.dumps([
        {"server": r.server, "scenario": r.scenario, "clients": r.clients, "unit": r.unit, "rate": r.rate,
         "ops": r.ops, "misses": r.misses, "errors": r.errors, "window_s": r.window or r.elapsed,
         "p50_ms": r.pct(0.5), "p99_ms": r.pct(0.99), "client_cpu_s": r.client_cpu, "server_cpu_s": r.server_cpu,
         "error_kinds": r.error_kinds, "error_samples": r.error_samples, "aborted": r.aborted, **r.extra}
        for r in results], indent=1))
