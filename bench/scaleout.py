"""Scale-out benchmark: uss_dav as 1 process against 2 processes (--workers 2), same run.

    python -m bench.scaleout [--quick] [--scenarios mixed,propfind,get4k,put4k] [--clients 8]
                             [--rounds 2] [--duration 5] [--keep] [--json out.json]

Built on bench.harness: its scenarios, its runner (one thread and one
persistent connection per client, in this process) and its servers. The
servers, each on 127.0.0.1 with its own data directory:

- uss_dav:      UssDav pinned to one process (USS_WORKERS=1; the default is
                one per core), locks on the data directory;
- uss_dav_2w:   the same with USS_WORKERS=2: two processes sharing the port
                (SO_REUSEPORT), locks on the data directory (the default);

(The Redis lock mode, and --single-redis with it, are retired: locks are files
on the data directory, coherent across machines.)

Every scenario runs on each server in turn, `--rounds` times, alternating, and
the best round counts (the machine is shared; see the "others" column). For
each run the progress line shows the CPU of the load generator (this
process), of the server (all its processes) and of everything else on the
machine, in % of one core, from /proc. The summary gives the 2-process /
1-process ratio for each scenario; the mixed load should reach 1.5x.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from bench.harness import proc, report
from bench.harness.cli import add_run_options, parse_runs
from bench.harness.runner import (
    Bench,
    RunResult,
    Settings,
    Tally,
    fmt_rate,
    run_one,
    run_rounds,
)
from bench.harness.scenarios import Scenario
from bench.harness.servers import ServerUnderTest, UssDav

DEFAULT_SCENARIOS = ("mixed", "propfind", "get4k", "put4k")
TARGET_RATIO = 1.5


class ScaledUssDav(UssDav):
    """UssDav with `workers` serving processes (USS_WORKERS: the default would be one per core)."""

    workers = 1

    def env(self) -> dict[str, str]:
        return {**super().env(), "USS_WORKERS": str(self.workers)}


class UssDavOne(ScaledUssDav):
    name = "uss_dav"


class UssDavTwoWorkers(ScaledUssDav):
    """run_server.py with two serving processes on one port, locks on the data directory (the default)."""

    name = "uss_dav_2w"
    workers = 2


def measured(server: ServerUnderTest, scenario: Scenario, clients: int, settings: Settings, state: dict) -> RunResult:
    """run_one, plus the CPU of everything else on the machine during the run (% of a core)."""
    machine0, t0 = proc.machine_cpu_seconds(), time.monotonic()
    result = run_one(server, scenario, clients, settings, state)
    wall = time.monotonic() - t0
    # The warm-up and set-up are inside this window and outside run_one's CPU counts: "others" is an
    # estimate of the load of other programs, good enough to spot a busy machine.
    machine_pct = 100 * (proc.machine_cpu_seconds() - machine0) / wall
    ours_pct = 100 * (result.client_cpu + result.server_cpu) / max(result.window or result.elapsed, 1e-9)
    result.extra = {"others": max(0.0, machine_pct - ours_pct)}
    return result


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[Scenario], list[int]]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_options(p, scenarios=DEFAULT_SCENARIOS, clients="8", rounds=2, duration="default 5, quick 2",
                    quick="2 s runs, one round")
    return parse_runs(p, argv)


def print_summary(best: dict, scenarios: list[Scenario], clients: list[int], names: list[str]) -> None:
    """CPU during the best runs, then 2 processes / 1 process per scenario against the target."""
    print("\nCPU during the best runs, % of one core (2 cores = 200%): load generator / server / others")
    for sc in scenarios:
        for c in clients:
            cells = [f"{name} {r.cpu_pct('client'):.0f}/{r.cpu_pct('server'):.0f}/"
                     f"{r.extra.get('others', 0):.0f}"
                     for name in names if (r := best.get((sc.name, c, name))) and not r.aborted]
            print(f"  {sc.name:<17} x{c:<2} " + "   ".join(cells))
    print()
    for sc in scenarios:
        for c in clients:
            one, two = best.get((sc.name, c, UssDavOne.name)), best.get((sc.name, c, UssDavTwoWorkers.name))
            if not (one and two) or one.aborted or two.aborted or one.rate <= 0:
                continue
            ratio = two.rate / one.rate
            verdict = ""
            if sc.name == "mixed":
                verdict = f"  (target >= {TARGET_RATIO:g}x: {'met' if ratio >= TARGET_RATIO else 'NOT met'})"
            indent = " " * (len(sc.name) + len(str(c)) + 3)
            print(f"{sc.name} x{c}: 2 processes / 1 process = {ratio:.2f}x "
                  f"({fmt_rate(two)} / {fmt_rate(one)} {sc.unit}){verdict}")
            if sc.name == "mixed" and one.server_cpu > 0 and one.ops + one.misses and two.ops + two.misses:
                cost1 = 1000 * one.server_cpu / (one.ops + one.misses)
                cost2 = 1000 * two.server_cpu / (two.ops + two.misses)
                print(f"{indent}server CPU per request: {cost1:.2f} ms (1 process) / {cost2:.2f} ms (2 processes); "
                      f"load generator {two.cpu_pct('client'):.0f}% of a core in the 2-process run")


def main(argv: list[str] | None = None) -> int:
    args, scenarios, clients = parse_args(argv)
    rounds = max(1, args.rounds)
    settings = Settings()
    if args.quick:
        settings = Settings.quick(duration=2.0, warmup=0.5, warmup_ops=100)
        rounds = 1 if args.rounds == 2 else rounds
    if args.duration:
        settings.duration = args.duration

    print(f"{os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"{rounds} round(s) of {settings.duration:g} s per scenario and server", flush=True)
    tally = Tally()
    with Bench("uss-scaleout-", args.workdir, args.keep) as bench:
        for cls in (UssDavOne, UssDavTwoWorkers):
            bench.start(cls(bench.workdir))
        two = next(s for s in bench.servers if type(s) is UssDavTwoWorkers)
        print("servers: " + ", ".join(f"{s.name} {s.url}" for s in bench.servers)
              + f" (2w serving processes: {proc.children(two.proc.pid)}); data under {bench.workdir}", flush=True)
        run_rounds(bench.servers, scenarios, clients, rounds, settings, tally, measured)

    names = [s.name for s in bench.servers]
    print()
    report.print_results(tally.best, scenarios, clients, names, [(name, names[0]) for name in names[1:]])
    report.print_problems(tally.best)
    if bench.notes:
        print("\n".join(bench.notes))
    print_summary(tally.best, scenarios, clients, names)
    if args.json:
        report.write_json(args.json, tally.every)
    return bench.code or (1 if tally.failed else 0)


if __name__ == "__main__":
    sys.exit(main())
