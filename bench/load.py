"""Load benchmark: uss_dav against its peers (stock WsgiDAV; copyparty, nginx, bare cheroot on request), one run.

    python -m bench.load [--quick] [--scenarios get10k,put10k,...] [--clients 1,8] [--copyparty] [--nginx] [--bare]
                         [--baseline REV]

Each server runs as its own subprocess on 127.0.0.1 with its own data
directory under one temporary directory; this process is the load generator
(one thread and one persistent connection per client). Every scenario runs
against every server, one server at a time, at each client count; the table
gives the rates and uss_dav's ratio to each peer, and the line below it the
durability each server was measured with. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time

from bench.harness import fs_floor, report
from bench.harness.cli import add_run_options, parse_runs
from bench.harness.runner import Bench, Settings, Tally, run_rounds
from bench.harness.scenarios import ISSUE20, KIB, Put, Scenario
from bench.harness.servers import (
    Bare,
    Copyparty,
    Nginx,
    ServerUnderTest,
    StockWsgiDAV,
    UssDav,
    UssDavNoFsync,
    at_commit,
)


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[Scenario], list[int]]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_options(p, scenarios=ISSUE20, clients="1,8", rounds=1, duration="default 5, quick 1.5",
                    quick="short runs (1.5 s windows, one 64 MiB transfer per client)")
    p.add_argument("--copyparty", action="store_true", help="also run copyparty (pip install -e '.[bench]')")
    p.add_argument("--nginx", action="store_true", help="also run nginx + dav-ext, if installed")
    p.add_argument("--bare", action="store_true",
                   help="also run bare cheroot (no WebDAV, durable PUT): the ceiling for a cheroot app")
    p.add_argument("--nofsync", action="store_true",
                   help="also run uss_dav with fsync made a no-op (eatmydata), "
                        "compared with the peers that do not fsync")
    p.add_argument("--all", action="store_true", help="--copyparty --nginx: issue 20's peers")
    p.add_argument("--baseline", metavar="REV",
                   help="also run uss_dav as it was at commit REV (a git worktree), to see a change's cost in one run")
    return parse_runs(p, argv)


def server_types(args: argparse.Namespace) -> list[type[ServerUnderTest]]:
    """uss_dav first (the subject of the ratios), then the peers asked for that can run here."""
    wanted: list[type[ServerUnderTest]] = [UssDav]
    wanted += [Copyparty] if args.copyparty or args.all else []
    wanted += [Nginx] if args.nginx or args.all else []
    wanted += [StockWsgiDAV]
    wanted += [Bare] if args.bare else []
    wanted += [UssDavNoFsync] if args.nofsync else []
    usable = []
    for cls in wanted:
        why = cls.available()
        if why:
            print(f"{cls.name}: skipped, {why}", file=sys.stderr)
        else:
            usable.append(cls)
    return usable


def main(argv: list[str] | None = None) -> int:
    args, scenarios, clients = parse_args(argv)
    settings = Settings.quick() if args.quick else Settings()
    if args.duration:
        settings.duration = args.duration

    t_start = time.monotonic()
    tally = Tally()
    with contextlib.ExitStack() as stack:
        types = server_types(args)
        if args.baseline:  # entered first, left last: the baseline's tree outlives its server
            types.insert(1, stack.enter_context(at_commit(args.baseline)))
        bench = stack.enter_context(Bench("uss-bench-", args.workdir, args.keep))
        for cls in types:
            bench.start(cls(bench.workdir))
        print("servers: " + ", ".join(f"{s.name} {s.url}" for s in bench.servers) + f"; data under {bench.workdir}",
              flush=True)
        run_rounds(bench.servers, scenarios, clients, args.rounds, settings, tally)
        # The servers are idle now: the disk's own rate for each small upload, on the disk they used.
        floors = {sc.name: fs_floor.write_rates(bench.workdir, sc.size, settings.duration)
                  for sc in scenarios if isinstance(sc, Put) and sc.size <= 64 * KIB}

    names = [s.name for s in bench.servers]
    print()
    pairs = [(names[0], peer) for peer in names[1:]]
    if UssDavNoFsync.name in names:  # like for like: no fsync on either side
        pairs += [(UssDavNoFsync.name, peer) for peer in ("copyparty", "nginx", "stock") if peer in names]
    report.print_results(tally.best, scenarios, clients, names, pairs)
    print()
    report.print_durability(bench.servers)
    report.print_floors(floors, tally.best, names)
    report.print_flushes_charged(floors, tally.best)
    report.print_problems(tally.best)
    if bench.notes:
        print("\n".join(bench.notes))
    rounds = f"best of {args.rounds} rounds; " if args.rounds > 1 else ""
    print(f"\ntotal {time.monotonic() - t_start:.0f} s; {rounds}{settings.describe(scenarios, clients)}")
    if args.json:
        report.write_json(args.json, list(tally.best.values()))
    if tally.failed and args.rounds > 1:
        print(f"{len(tally.failed)} of {len(tally.every)} runs had errors or were aborted "
              "(the table shows each server's best round)")
    return bench.code or (1 if tally.failed else 0)


if __name__ == "__main__":
    sys.exit(main())
