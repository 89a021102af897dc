"""What the load benchmarks' command lines share: the options naming the runs, and their checks."""

from __future__ import annotations

import argparse

from bench.harness.scenarios import SCENARIOS, Scenario, make


def add_run_options(p: argparse.ArgumentParser, *, scenarios: tuple[str, ...], clients: str, rounds: int,
                    quick: str, duration: str) -> None:
    """--scenarios, --clients, --rounds, --duration, --quick, --workdir, --keep and --json."""
    p.add_argument("--scenarios", default=",".join(scenarios),
                   help=f"comma-separated, from: {', '.join(SCENARIOS)} (default: {','.join(scenarios)})")
    p.add_argument("--clients", default=clients, help=f"comma-separated client counts (default {clients})")
    p.add_argument("--rounds", type=int, default=rounds,
                   help="runs of each scenario on each server, the order of the servers reversed every other "
                        f"round; the best counts (default {rounds})")
    p.add_argument("--duration", type=float, help=f"measured seconds per timed run ({duration})")
    p.add_argument("--quick", action="store_true", help=quick)
    p.add_argument("--workdir", default=None, help="parent of the temporary data directories (default /tmp)")
    p.add_argument("--keep", action="store_true", help="keep the data directories and server logs")
    p.add_argument("--json", help="also write the results to this file")


def parse_runs(p: argparse.ArgumentParser, argv: list[str] | None,
               ) -> tuple[argparse.Namespace, list[Scenario], list[int]]:
    """The options, with the scenarios and client counts of --scenarios and --clients; exits with status 2
    and the reason when they name an unknown scenario or a client count out of 1-64."""
    args = p.parse_args(argv)
    try:
        scenarios = make([s.strip() for s in args.scenarios.split(",") if s.strip()])
        clients = [int(c) for c in args.clients.split(",") if c.strip()]
    except ValueError as exc:
        p.error(str(exc))
    if not clients or any(c < 1 or c > 64 for c in clients):
        p.error("--clients: numbers from 1 to 64")
    return args, scenarios, clients
