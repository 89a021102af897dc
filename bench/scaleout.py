"""Scale-out benchmark: uss_dav as 1 process against 2 processes (--workers 2), same run.

    .venv/bin/python bench/scaleout.py [--quick] [--scenarios mixed,propfind,get4k,put4k] [--clients 8]
                                       [--rounds 2] [--duration 5] [--single-redis] [--keep] [--json out.json]

Reuses bench/load.py: its scenarios, its runner (one thread and one
persistent connection per client, in this process) and its ServerUnderTest
classes. The servers, each on 127.0.0.1 with its own data directory:

- uss_dav:      load.UssDav pinned to one process (USS_WORKERS=1; the default is
                one per core), locks on the data directory;
- uss_dav_2w:   the same with USS_WORKERS=2: two processes sharing the port
                (SO_REUSEPORT), locks on the data directory (the default);
- uss_dav_rl, uss_dav_2r: (--single-redis) one and two processes with their locks
                in a redis-server this script starts on a free port (no
                persistence), as several machines share them: the cost of Redis.

Every scenario runs on each server in turn, `--rounds` times, alternating, and
the best round counts (the machine is shared; see the "others" column). For
each run the progress line shows the CPU of the load generator (this
process), of the server (all its processes) and of everything else on the
machine, in % of one core, from /proc. The summary gives the 2-process /
1-process ratio for each scenario; the mixed load should reach 1.5x.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import load
from load import SCENARIOS, RunResult, Settings, UssDav, fmt_rate, free_port, run_one

DEFAULT_SCENARIOS = ("mixed", "propfind", "get4k", "put4k")
TARGET_RATIO = 1.5
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------
# CPU accounting from /proc
# --------------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rpartition(")")[2].split()  # [state, ppid, pgrp, ...]


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU of every live process in process group `pgid` (a server and its workers)."""
    total = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields and fields[2] == str(pgid):
                total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def machine_cpu_seconds() -> float:
    """CPU seconds used by the whole machine so far (all cores; idle and iowait left out)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


# --------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------


class RedisServer:
    """Debian's redis-server on a free port, no persistence, in its own directory."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir / "redis"
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.access(exe, os.X_OK):
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / "redis.log", "ab") as log:
            self.proc = subprocess.Popen(
                [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                 "--save", "", "--appendonly", "no"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1, socket_connect_timeout=1)
        deadline = time.monotonic() + 15
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError("redis-server exited at start: " + (self.dir / "redis.log").read_text()[-2000:])
                try:
                    if client.ping():
                        return
                except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                    time.sleep(0.05)
        finally:
            client.close()
        raise RuntimeError("redis-server did not answer PING within 15 s")

    def cpu_seconds(self) -> float:
        return group_cpu_seconds(self.proc.pid) if self.proc and self.proc.poll() is None else 0.0

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class ScaledUssDav(UssDav):
    """load.UssDav with `workers` serving processes (USS_WORKERS: the default would be one per core),
    its locks in the script's Redis when `redis` is set. CPU: load.py's sum over the process tree."""

    workers = 1
    redis = False
    redis_url = ""  # the script's redis-server, once it runs

    def env(self) -> dict[str, str]:
        env = {**super().env(), "USS_WORKERS": str(self.workers)}
        if self.redis:
            env["USS_LOCKS"] = ScaledUssDav.redis_url
        return env


class UssDavOne(ScaledUssDav):
    name = "uss_dav"


class UssDavRedisLocks(ScaledUssDav):
    """One process, locks in Redis: isolates what the Redis look-ups cost."""

    name = "uss_dav_rl"
    redis = True


class UssDavTwoWorkers(ScaledUssDav):
    """run_server.py with --workers 2 on one port, locks on the data directory (the default)."""

    name = "uss_dav_2w"
    workers = 2

    def worker_pids(self) -> list[int]:
        if not self.alive():
            return []
        return sorted(int(e) for e in os.listdir("/proc")
                      if e.isdigit() and (f := _stat(int(e))) and f[1] == str(self.proc.pid))


class UssDavTwoWorkersRedis(UssDavTwoWorkers):
    """(--single-redis) two processes with their locks in Redis, as several machines would share them."""

    name = "uss_dav_2r"
    redis = True


# --------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------


def measured(server: load.ServerUnderTest, scenario: load.Scenario, clients: int, settings: Settings,
             state: dict, redis_server: RedisServer) -> tuple[RunResult, dict[str, float]]:
    """run_one, plus the CPU of Redis and of everything else on the machine during the run."""
    machine0, redis0, t0 = machine_cpu_seconds(), redis_server.cpu_seconds(), time.monotonic()
    result = run_one(server, scenario, clients, settings, state)
    wall = time.monotonic() - t0
    redis_cpu = redis_server.cpu_seconds() - redis0
    # The warm-up and set-up are inside this window and outside run_one's CPU counts: "others" is an
    # estimate of the load of other programs, good enough to spot a busy machine.
    busy = machine_cpu_seconds() - machine0
    window = max(result.window or result.elapsed, 1e-9)
    ours_rate = (result.client_cpu + result.server_cpu) / window
    extra = {
        "redis_pct": 100 * redis_cpu / wall,
        "machine_pct": 100 * busy / wall,
        "others_pct": max(0.0, 100 * busy / wall - 100 * ours_rate - 100 * redis_cpu / wall),
    }
    return result, extra


def pct(r: RunResult, who: str) -> float:
    wall = max(r.window or r.elapsed, r.elapsed, 1e-9)
    return 100 * (r.client_cpu if who == "client" else r.server_cpu) / wall


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenarios", default=",".join(DEFAULT_SCENARIOS),
                   help=f"comma-separated, from: {', '.join(SCENARIOS)} (default: {','.join(DEFAULT_SCENARIOS)})")
    p.add_argument("--clients", default="8", help="comma-separated client counts (default 8)")
    p.add_argument("--rounds", type=int, default=2, help="runs per scenario and server, alternating; best counts")
    p.add_argument("--duration", type=float, help="measured seconds per run (default 5, quick 2)")
    p.add_argument("--quick", action="store_true", help="2 s runs, one round")
    p.add_argument("--single-redis", action="store_true", help="also run one and two processes with their locks in Redis")
    p.add_argument("--workdir", default=None, help="parent of the temporary directories (default /tmp)")
    p.add_argument("--keep", action="store_true", help="keep data directories and logs")
    p.add_argument("--json", help="also write the results to this file")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        print(f"unknown scenario(s): {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}", file=sys.stderr)
        return 2
    clients = [int(c) for c in args.clients.split(",") if c.strip()]
    settings = Settings()
    rounds = max(1, args.rounds)
    if args.quick:
        settings = Settings(duration=2.0, warmup=0.5, warmup_ops=100, big_ops={}, big_default_ops=1,
                            big_warmup_ops=0, big_time_cap=30.0)
        rounds = 1 if args.rounds == 2 else rounds
    if args.duration:
        settings.duration = args.duration

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)

    print(f"{os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"{rounds} round(s) of {settings.duration:g} s per scenario and server", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="uss-scaleout-", dir=args.workdir))
    redis_server = RedisServer(workdir)
    types: list[type[ScaledUssDav]] = [UssDavOne, UssDavTwoWorkers]
    if args.single_redis:
        types[1:1] = [UssDavRedisLocks]
        types.append(UssDavTwoWorkersRedis)
    servers: list[ScaledUssDav] = []
    best: dict[tuple[str, int, str], RunResult] = {}
    extras: dict[tuple[str, int, str], dict[str, float]] = {}
    every: list[tuple[RunResult, dict[str, float]]] = []
    scenarios = [SCENARIOS[n]() for n in names]
    code = 0
    try:
        redis_server.start()
        ScaledUssDav.redis_url = redis_server.url
        for cls in types:
            srv = cls(workdir)
            servers.append(srv)
            srv.start()
        two = next(s for s in servers if type(s) is UssDavTwoWorkers)
        print(f"redis {redis_server.url}; servers: " + ", ".join(f"{s.name} {s.url}" for s in servers)
              + f" (2w workers: {two.worker_pids()}); data under {workdir}", flush=True)
        states: dict[str, dict] = {s.name: {} for s in servers}
        for sc in scenarios:
            for c in clients:
                for rnd in range(rounds):
                    order = servers if rnd % 2 == 0 else list(reversed(servers))
                    for srv in order:
                        if not srv.alive():
                            print(f"{srv.name} is not running; skipped {sc.name} x{c}", file=sys.stderr)
                            continue
                        t0 = time.monotonic()
                        try:
                            r, extra = measured(srv, sc, c, settings, states[srv.name], redis_server)
                        except RuntimeError as exc:
                            r, extra = RunResult(srv.name, sc.name, c, sc.unit, aborted=str(exc)), {}
                        every.append((r, extra))
                        key = (sc.name, c, srv.name)
                        if key not in best or (not r.aborted and r.rate > best[key].rate) or best[key].aborted:
                            best[key], extras[key] = r, extra
                        print(f"  {sc.name:<17} x{c:<2} {srv.name:<10} round {rnd + 1}: {fmt_rate(r):>7} {sc.unit:<5} "
                              f"ok={r.ops} miss={r.misses} err={r.errors}  cpu% client={pct(r, 'client'):.0f} "
                              f"server={pct(r, 'server'):.0f} redis={extra.get('redis_pct', 0):.0f} "
                              f"others={extra.get('others_pct', 0):.0f} ({time.monotonic() - t0:.1f} s)", flush=True)
    except KeyboardInterrupt:
        load.STOP.set()
        print("\ninterrupted; partial results:", file=sys.stderr)
        code = 130
    except RuntimeError as exc:
        load.STOP.set()
        print(f"\n{exc}", file=sys.stderr)
        code = 1
    finally:
        for srv in servers:
            srv.stop()
        redis_server.stop()
        tracebacks = [(s.name, n) for s in servers if (n := s.log_tail(10**9).count("Traceback (most recent"))]
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    names_order = [s.name for s in servers]
    print()
    load.print_table(best, scenarios, clients, names_order)
    load.print_problems(best)
    for name, n in tracebacks:
        print(f"[{name}] server log: {n} tracebacks" + ("" if args.keep else " (--keep keeps the log)"))

    print("\nCPU during the best runs, % of one core (2 cores = 200%): load generator / server / redis / others")
    for sc in scenarios:
        for c in clients:
            cells = []
            for name in names_order:
                r, e = best.get((sc.name, c, name)), extras.get((sc.name, c, name), {})
                if r and not r.aborted:
                    cells.append(f"{name} {pct(r, 'client'):.0f}/{pct(r, 'server'):.0f}/"
                                 f"{e.get('redis_pct', 0):.0f}/{e.get('others_pct', 0):.0f}")
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
            print(f"{sc.name} x{c}: 2 processes / 1 process = {ratio:.2f}x "
                  f"({fmt_rate(two)} / {fmt_rate(one)} {sc.unit}){verdict}")
            same, two_r = best.get((sc.name, c, UssDavRedisLocks.name)), best.get((sc.name, c, UssDavTwoWorkersRedis.name))
            if same and two_r and not same.aborted and not two_r.aborted and same.rate > 0:
                print(f"{'':>{len(sc.name) + len(str(c)) + 3}}2 processes / 1 process, both with locks in Redis = "
                      f"{two_r.rate / same.rate:.2f}x ({fmt_rate(two_r)} / {fmt_rate(same)} {sc.unit})")
            if sc.name == "mixed" and one.server_cpu > 0 and one.ops + one.misses and two.ops + two.misses:
                cost1 = 1000 * one.server_cpu / (one.ops + one.misses)
                cost2 = 1000 * two.server_cpu / (two.ops + two.misses)
                print(f"{'':>{len(sc.name) + len(str(c)) + 3}}server CPU per request: {cost1:.2f} ms (1 process) / "
                      f"{cost2:.2f} ms (2 processes); load generator "
                      f"{pct(two, 'client'):.0f}% of a core in the 2-process run")
    if args.json:
        Path(args.json).write_text(json.dumps([
            {"server": r.server, "scenario": r.scenario, "clients": r.clients, "unit": r.unit, "rate": r.rate,
             "ops": r.ops, "misses": r.misses, "errors": r.errors, "p50_ms": r.pct(0.5), "p99_ms": r.pct(0.99),
             "client_cpu_s": r.client_cpu, "server_cpu_s": r.server_cpu, "window_s": r.window or r.elapsed,
             "aborted": r.aborted, **extra}
            for r, extra in every], indent=1))
    if any(r.errors or r.aborted for r, _ in every):
        code = code or 1
    return code


if __name__ == "__main__":
    sys.exit(main())
