"""Scale-out benchmark: uss_dav as 1 process against 2 processes (--workers 2), or, with --cephfs,
one node on local disk against one and two nodes on CephFS; same run.

    python -m bench.scaleout [--quick] [--scenarios mixed,propfind,get4k,put4k] [--clients 8]
                             [--rounds 2] [--duration 5] [--keep] [--json out.json]
    python -m bench.scaleout --cephfs [--quick] [--scenarios mixed,get10k,put10k,get4m,put4m] ...

Built on bench.harness: its scenarios, its runner (one thread and one
persistent connection per client, in this process) and its servers. The
servers of the default mode, each on 127.0.0.1 with its own data directory:

- uss_dav:      UssDav pinned to one process (USS_WORKERS=1; the default is
                one per core), locks on the data directory;
- uss_dav_2w:   the same with USS_WORKERS=2: two processes sharing the port
                (SO_REUSEPORT), locks on the data directory (the default);

(The Redis lock mode, and --single-redis with it, are retired: locks are files
on the data directory, coherent across machines.)

With --cephfs a one-host CephFS is brought up first (bench/harness/cephfs.py:
mon, mgr, memstore OSD and MDS on 127.0.0.1, two ceph-fuse mounts, 12-15 s)
and the servers are, each with its default workers (one per core):

- local:   one uss_dav node on local disk;
- ceph-1:  one node whose data directory is on the first ceph-fuse mount;
- ceph-2:  two nodes on one data directory, each through its own mount (as
           two machines), haproxy (round robin) in front.

Everything started (Ceph daemons, mounts, haproxy, uss_dav) is stopped, and the
mounts unmounted, on exit, Ctrl-C, SIGTERM or error. The summary gives ceph-1 /
local and ceph-2 / local, the CPU of each party (uss_dav, haproxy, the Ceph
daemons, ceph-fuse, the load generator, everything else) per run and per
request, and the cost of the lock check of one PUT on each file system.

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
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.harness import cephfs, proc, report
from bench.harness.balancer import BalancedUssDav
from bench.harness.cli import add_run_options, parse_runs
from bench.harness.runner import Bench, Settings, Tally, fmt_rate, run_rounds
from bench.harness.scenarios import Scenario
from bench.harness.servers import UssDav
from uss_dav.locks import FileLocks

DEFAULT_SCENARIOS = ("mixed", "propfind", "get4k", "put4k")
CEPHFS_SCENARIOS = ("mixed", "get10k", "put10k", "get4m", "put4m")
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


# --- the CephFS mode ------------------------------------------------------------------------

LOCAL, CEPH_1, CEPH_2 = "local", "ceph-1", "ceph-2"
#: The CPU columns of the CephFS mode: RunResult.extra's keys, then the load generator and the server.
BESIDE = ("haproxy", "ceph", "ceph-fuse", "others")
#: Lock questions WsgiDAV asks per PUT (docs/scale-out.md, "WebDAV locks without a lock server").
LOCK_QUESTIONS = 8


class Node(UssDav):
    """A uss_dav node that reports the CPU of the Ceph daemons and ceph-fuse beside its own: the cluster
    runs through every run, so the local node's runs show what it costs idle."""

    def __init__(self, workdir: Path, cluster: cephfs.CephFS, data: Path | None = None, name: str = LOCAL) -> None:
        super().__init__(workdir, data, name)
        self.cluster = cluster

    def beside_cpu_seconds(self) -> dict[str, float]:
        return self.cluster.cpu_seconds()


class Nodes(BalancedUssDav):
    """Nodes behind haproxy, reporting haproxy's CPU and the cluster's beside their own."""

    def __init__(self, workdir: Path, cluster: cephfs.CephFS, name: str, data_dirs: list[Path]) -> None:
        super().__init__(workdir, name, data_dirs)
        self.cluster = cluster

    def beside_cpu_seconds(self) -> dict[str, float]:
        return {**super().beside_cpu_seconds(), **self.cluster.cpu_seconds()}


def lock_check_us(data: Path, repeat: int = 2000) -> float:
    """Microseconds the lock questions of one PUT cost on this data directory (no lock held: each one is
    an fstat of locks/generation), asked in this process as a node's worker asks them."""
    locks = FileLocks(data / "locks", data / "staging")
    locks.open()
    try:
        locks.get_lock_list("/mix/f000.bin", include_root=True, include_children=False, token_only=False)
        t0 = time.perf_counter()
        for _ in range(repeat * LOCK_QUESTIONS):
            locks.get_lock_list("/mix/f000.bin", include_root=True, include_children=False, token_only=False)
        return 1e6 * (time.perf_counter() - t0) / repeat
    finally:
        locks.close()


def print_ceph_summary(best: dict, scenarios: list[Scenario], clients: list[int], lock_us: dict[str, float]) -> None:
    """Where the time goes (CPU of each party, per run and per request), the ratios, the errors, the lock check."""
    print("\nCPU during the best runs, % of one core (2 cores = 200%), and CPU ms per request:")
    rows = [["scenario", "clients", "server", "p50 ms", "load gen", "uss_dav", *BESIDE, "uss_dav ms/req",
             "ceph+fuse ms/req"]]
    for sc in scenarios:
        for c in clients:
            for name in (LOCAL, CEPH_1, CEPH_2):
                r = best.get((sc.name, c, name))
                if not report.ran(r):
                    continue
                requests = max(1, r.ops + r.misses)
                ceph_s = (r.extra.get("ceph", 0) + r.extra.get("ceph-fuse", 0)) * r.wall / 100
                rows.append([sc.name, str(c), name, f"{r.pct(0.5):.1f}", f"{r.cpu_pct('client'):.0f}",
                             f"{r.cpu_pct('server'):.0f}", *(f"{r.extra.get(k, 0):.0f}" for k in BESIDE),
                             f"{1000 * r.server_cpu / requests:.2f}", f"{1000 * ceph_s / requests:.2f}"])
    report.table(rows)
    print()
    for sc in scenarios:
        for c in clients:
            local = best.get((sc.name, c, LOCAL))
            cells = [f"{name} / local = {report.fmt_ratio(best.get((sc.name, c, name)), local)}"
                     for name in (CEPH_1, CEPH_2)]
            print(f"{sc.name} x{c}: " + ", ".join(cells) + f" ({sc.unit}: " + " / ".join(
                f"{n} {fmt_rate(best.get((sc.name, c, n)))}" for n in (LOCAL, CEPH_1, CEPH_2)) + ")")
    errors = {n: sum(r.errors for (_, _, name), r in best.items() if name == n) for n in (LOCAL, CEPH_1, CEPH_2)}
    print("errors in the best runs: " + ", ".join(f"{n} {e}" for n, e in errors.items()))
    for c in clients:
        mixed = best.get(("mixed", c, CEPH_2))
        if mixed and c == 8:
            verdict = "met" if not mixed.errors and not mixed.aborted else "NOT met"
            print(f"mixed x8 on two CephFS nodes: {mixed.errors} errors (bar: 0, {verdict})")
    if lock_us:
        print(f"lock check of one PUT ({LOCK_QUESTIONS} lock questions, an fstat of locks/generation each): "
              + ", ".join(f"{where} {us:.0f} µs" for where, us in lock_us.items()) + " (bar: < 200 µs on local disk)")


def run_cephfs(args: argparse.Namespace, scenarios: list[Scenario], clients: list[int], rounds: int,
               settings: Settings) -> int:
    """The CephFS mode: bring the cluster up, run local / ceph-1 / ceph-2, take everything down again."""
    reason = cephfs.missing()
    if reason:
        print(f"--cephfs: cannot bring up CephFS: {reason}", file=sys.stderr)
        return 1
    # The cluster's folder is not inside the bench's: that one is removed while the mounts may still be up.
    cluster = cephfs.CephFS(Path(tempfile.mkdtemp(prefix="uss-scaleout-ceph-", dir=args.workdir)))
    tally, lock_us = Tally(), dict[str, float]()
    try:
        with Bench("uss-scaleout-", args.workdir, args.keep) as bench:
            t0 = time.monotonic()
            cluster.up()
            print(f"CephFS up in {time.monotonic() - t0:.1f} s: {', '.join(map(str, cluster.mounts.values()))}",
                  flush=True)
            a, b = (cluster.mounts[c] for c in cephfs.CLIENTS)
            local, ceph_1 = Node(bench.workdir, cluster), Node(bench.workdir, cluster, a / CEPH_1, CEPH_1)
            for srv in (local, ceph_1, Nodes(bench.workdir, cluster, CEPH_2, [a / CEPH_2, b / CEPH_2])):
                bench.start(srv)
            print("servers: " + ", ".join(f"{s.name} {s.url}" for s in bench.servers), flush=True)
            run_rounds(bench.servers, scenarios, clients, rounds, settings, tally)
            lock_us = {"local disk": lock_check_us(local.data), "CephFS": lock_check_us(ceph_1.data)}
    finally:
        t0 = time.monotonic()
        # A second Ctrl-C must not leave the mounts behind: the tear-down's waits are bounded anyway.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        cluster.down()
        print(f"CephFS down in {time.monotonic() - t0:.1f} s", file=sys.stderr)
        if args.keep:
            print(f"kept {cluster.root}", file=sys.stderr)
        elif not any(os.path.ismount(m) for m in cluster.mounts.values()):
            shutil.rmtree(cluster.root, ignore_errors=True)

    return finish(args, bench, tally, scenarios, clients, [LOCAL, CEPH_1, CEPH_2],
                  lambda: print_ceph_summary(tally.best, scenarios, clients, lock_us))


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[Scenario], list[int]]:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_options(p, scenarios=CEPHFS_SCENARIOS if "--cephfs" in argv else DEFAULT_SCENARIOS, clients="8",
                    rounds=2, duration="default 5, quick 2", quick="2 s runs, one round")
    p.add_argument("--cephfs", action="store_true",
                   help="one node on local disk, one on CephFS, two on CephFS behind haproxy (brings up a "
                        f"one-host CephFS; default scenarios {','.join(CEPHFS_SCENARIOS)})")
    return parse_runs(p, argv)


def print_summary(best: dict, scenarios: list[Scenario], clients: list[int], names: list[str]) -> None:
    """CPU during the best runs, then 2 processes / 1 process per scenario against the target."""
    print("\nCPU during the best runs, % of one core (2 cores = 200%): load generator / server / others")
    for sc in scenarios:
        for c in clients:
            cells = [f"{name} {r.cpu_pct('client'):.0f}/{r.cpu_pct('server'):.0f}/"
                     f"{r.extra.get('others', 0):.0f}"
                     for name in names if report.ran(r := best.get((sc.name, c, name)))]
            print(f"  {sc.name:<17} x{c:<2} " + "   ".join(cells))
    print()
    for sc in scenarios:
        for c in clients:
            one, two = best.get((sc.name, c, UssDavOne.name)), best.get((sc.name, c, UssDavTwoWorkers.name))
            if not (report.ran(one) and report.ran(two)) or one.rate <= 0:
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
    if args.cephfs:
        return run_cephfs(args, scenarios, clients, rounds, settings)
    tally = Tally()
    with Bench("uss-scaleout-", args.workdir, args.keep) as bench:
        for cls in (UssDavOne, UssDavTwoWorkers):
            bench.start(cls(bench.workdir))
        two = next(s for s in bench.servers if type(s) is UssDavTwoWorkers)
        print("servers: " + ", ".join(f"{s.name} {s.url}" for s in bench.servers)
              + f" (2w serving processes: {proc.children(two.proc.pid)}); data under {bench.workdir}", flush=True)
        run_rounds(bench.servers, scenarios, clients, rounds, settings, tally)

    names = [s.name for s in bench.servers]
    return finish(args, bench, tally, scenarios, clients, names,
                  lambda: print_summary(tally.best, scenarios, clients, names))


def finish(args: argparse.Namespace, bench: Bench, tally: Tally, scenarios: list[Scenario], clients: list[int],
           names: list[str], summary: Callable[[], None]) -> int:
    """The results (each server against the first), the problems, the mode's summary, the JSON; the exit status."""
    print()
    report.print_results(tally.best, scenarios, clients, names, [(name, names[0]) for name in names[1:]])
    report.print_problems(tally.best)
    if bench.notes:
        print("\n".join(bench.notes))
    summary()
    if args.json:
        report.write_json(args.json, tally.every)
    return bench.code or (1 if tally.failed else 0)


if __name__ == "__main__":
    sys.exit(main())
