"""The load generator: runs one scenario on one server with N clients, and a whole run of them in rounds.

Each client is one thread with one persistent connection (`client.Conn`, lean in CPU) in this process,
with its own seeded random generator, so every server gets the same sequence
of requests. Timed scenarios: a short warm-up, then a measured window; a
request that straddles the window's end counts for the share of it inside,
so one stalled request cannot change the rate of a whole run. Count-bound
scenarios (64 MiB): a fixed number of transfers per client, rate = bytes /
time until the last client finished.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from bench.harness import proc
from bench.harness.client import Conn
from bench.harness.scenarios import ERR, MISS, OK, Scenario
from bench.harness.servers import ServerUnderTest

STOP = threading.Event()  # set on Ctrl-C: every client loop ends at its next request


@dataclass
class Settings:
    duration: float = 5.0  # measured seconds, timed scenarios
    warmup: float = 1.0  # warm-up seconds, timed scenarios
    warmup_ops: int = 200  # at most this many warm-up ops per client
    max_ops: int = 100_000  # per client, timed scenarios
    big_ops: dict[int, int] = field(default_factory=lambda: {1: 8})  # per-client count by client number
    big_default_ops: int = 4
    big_warmup_ops: int = 1
    big_time_cap: float = 60.0  # seconds, measured phase of a count-bound run
    request_timeout: float = 120.0  # seconds without a byte before a client gives up (count-bound runs)
    small_timeout: float = 15.0  # the same for the timed scenarios

    @classmethod
    def quick(cls, duration: float = 1.5, warmup: float = 0.3, warmup_ops: int = 50) -> Settings:
        """Short windows, one count-bound transfer per client and no warm-up for those."""
        return cls(duration=duration, warmup=warmup, warmup_ops=warmup_ops, big_ops={}, big_default_ops=1,
                   big_warmup_ops=0, big_time_cap=30.0)

    def count_for(self, clients: int) -> int:
        return self.big_ops.get(clients, self.big_default_ops)

    def describe(self, scenarios: list[Scenario], clients: list[int]) -> str:
        """What the runs were: window and warm-up, and the transfers of count-bound scenarios if any ran."""
        text = f"timed runs {self.duration:g} s after {self.warmup:g} s warm-up"
        if any(sc.by_count for sc in scenarios):
            text += (f"; count-bound (64 MiB) runs {self.big_warmup_ops} warm-up + "
                     f"{', '.join(f'{self.count_for(c)} x{c}' for c in clients)} transfers per client")
        return text


@dataclass
class RunResult:
    server: str
    scenario: str
    clients: int
    unit: str
    ops: int = 0
    misses: int = 0
    errors: int = 0
    nbytes: int = 0
    elapsed: float = 0.0  # count-bound runs: start to the last client's end
    window: float = 0.0  # timed runs: the measured window (the duration)
    credit: float = 0.0  # timed runs: completed ops, pro rata for those straddling the window's end
    credit_bytes: float = 0.0  # timed runs: the same for the bytes moved
    latencies: list[float] = field(default_factory=list)
    error_samples: list[str] = field(default_factory=list)  # one example per kind of error
    error_kinds: dict[str, int] = field(default_factory=dict)
    aborted: str = ""
    warmup_errors: list[str] = field(default_factory=list)
    slowest: tuple[float, str] = (0.0, "")
    client_cpu: float = 0.0  # CPU seconds of this (load generator) process during the measured phase
    server_cpu: float = 0.0  # CPU seconds of the server's processes during the measured phase
    extra: dict[str, float] = field(default_factory=dict)  # what a script measured beside (% of a core)

    @property
    def rate(self) -> float:
        mb = self.unit == "MB/s"
        if self.window > 0:
            return self.credit_bytes / 1e6 / self.window if mb else self.credit / self.window
        if self.elapsed <= 0:
            return 0.0
        return self.nbytes / 1e6 / self.elapsed if mb else (self.ops + self.misses) / self.elapsed

    @property
    def wall(self) -> float:
        """The measured phase in seconds (at least the window; longer when the last request ran over)."""
        return max(self.window or self.elapsed, self.elapsed)

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        s = sorted(self.latencies)
        return s[min(len(s) - 1, int(q * len(s)))] * 1000

    def cpu_pct(self, who: str) -> float:
        """CPU of the load generator ("client") or of the server, in % of one core over the measured phase."""
        wall = self.wall
        return 100 * (self.client_cpu if who == "client" else self.server_cpu) / wall if wall > 0 else 0.0


def run_one(server: ServerUnderTest, scenario: Scenario, clients: int, settings: Settings, state: dict) -> RunResult:
    """One run: set-up, warm-up and the measured phase of `scenario` on `server` with `clients` clients."""
    result = RunResult(server.name, scenario.name, clients, scenario.unit)
    setup = Conn(server, settings.request_timeout)
    try:
        scenario.prepare(server, setup, clients, state)
    finally:
        setup.close()
    os.sync()  # no write-back of the previous run's data during this one

    if scenario.by_count:
        warm_n, warm_t = settings.big_warmup_ops, settings.big_time_cap
        meas_n, meas_t = settings.count_for(clients), settings.big_time_cap
        timeout = settings.request_timeout
    else:
        warm_n, warm_t = settings.warmup_ops, settings.warmup
        meas_n, meas_t = settings.max_ops, settings.duration
        timeout = settings.small_timeout

    barrier = threading.Barrier(clients + 1)
    halt = threading.Event()  # this run only: set when it overruns its hard limit
    start: dict[str, float] = {}
    lock = threading.Lock()
    ends: list[float] = []

    def client(idx: int) -> None:
        rng = random.Random(1000 + idx)  # same op sequence for every server
        conn = Conn(server, timeout)
        seq = 0
        try:
            t_end = time.monotonic() + warm_t
            for _ in range(warm_n):
                if STOP.is_set() or halt.is_set() or time.monotonic() >= t_end:
                    break
                out = scenario.op(conn, idx, seq, rng)
                seq += 1
                if out.kind == ERR:
                    with lock:
                        result.warmup_errors.append(out.detail)
            barrier.wait()
            barrier.wait()  # the main thread has set start["t"]
            t_end = start["t"] + meas_t
            lat: list[float] = []
            ok = miss = err = nbytes = 0
            kinds: dict[str, int] = {}
            samples: dict[str, str] = {}
            slowest = (0.0, "")
            credit = credit_bytes = 0.0
            for _ in range(meas_n):
                if STOP.is_set() or halt.is_set():
                    break
                t0 = time.monotonic()
                if t0 >= t_end:
                    break
                out = scenario.op(conn, idx, seq, rng)
                t1 = time.monotonic()
                took = t1 - t0
                lat.append(took)
                if took > slowest[0]:
                    slowest = (took, conn.last)
                seq += 1
                if out.kind in (OK, MISS):
                    # the share of this op that fell inside the window (a stalled op adds ~0)
                    share = (min(t1, t_end) - t0) / took if took > 0 else 1.0
                    credit += share
                    credit_bytes += share * out.nbytes
                if out.kind == OK:
                    ok += 1
                    nbytes += out.nbytes
                elif out.kind == MISS:
                    miss += 1
                else:
                    err += 1
                    kind = error_kind(out.detail)
                    kinds[kind] = kinds.get(kind, 0) + 1
                    samples.setdefault(kind, out.detail)
            with lock:
                ends.append(time.monotonic())
                result.ops += ok
                result.misses += miss
                result.errors += err
                result.nbytes += nbytes
                result.credit += credit
                result.credit_bytes += credit_bytes
                result.latencies.extend(lat)
                for kind, n in kinds.items():
                    if kind not in result.error_kinds:
                        result.error_samples.append(samples[kind])
                    result.error_kinds[kind] = result.error_kinds.get(kind, 0) + n
                result.slowest = max(result.slowest, slowest)
        except threading.BrokenBarrierError:
            pass
        except Exception as exc:  # noqa: BLE001 -- a bug in a scenario: end the run rather than hang it
            result.aborted = f"client {idx}: {type(exc).__name__}: {exc}"
            barrier.abort()
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    try:
        try:
            _wait_barrier(barrier, timeout=warm_t + settings.request_timeout + 30)
            cpu0 = (time.process_time(), server.cpu_seconds())
            beside0, machine0 = server.beside_cpu_seconds(), proc.machine_cpu_seconds()
            start["t"] = time.monotonic()
            _wait_barrier(barrier, timeout=10)
        except RuntimeError as exc:
            halt.set()
            result.aborted = result.aborted or str(exc)
            return result
        hard_limit = start["t"] + meas_t + timeout + 30
        for t in threads:
            while t.is_alive():
                t.join(0.2)
                if time.monotonic() > hard_limit:
                    halt.set()
                    result.aborted = "clients did not finish in time"
                    break
    except BaseException:
        halt.set()
        barrier.abort()
        raise
    result.client_cpu = time.process_time() - cpu0[0]
    result.server_cpu = server.cpu_seconds() - cpu0[1]
    beside = {k: v - beside0.get(k, 0.0) for k, v in server.beside_cpu_seconds().items()}
    machine = proc.machine_cpu_seconds() - machine0
    span = time.monotonic() - start["t"]
    if ends:
        result.elapsed = max(ends) - start["t"]
    if not scenario.by_count:
        result.window = meas_t
    # % of one core over the measured phase; "others": the rest of the machine (other programs, kernel
    # threads such as write-back), so a busy machine shows.
    result.extra = {k: 100 * v / span for k, v in beside.items()}
    result.extra["others"] = max(0.0, 100 * (machine - result.client_cpu - result.server_cpu - sum(beside.values()))
                                 / span)
    if not server.alive():
        result.aborted = f"server died:\n{server.log_tail()}"
    return result


def error_kind(detail: str) -> str:
    """What errors have in common: method and outcome, without names, numbers and dates."""
    method, _, rest = detail.partition(" ")
    outcome = rest.partition(" -> ")[2]
    return method + " " + re.sub(r"[0-9]+", "#", outcome)[:60]


def _wait_barrier(barrier: threading.Barrier, timeout: float) -> None:
    """Barrier.wait, but interruptible by Ctrl-C and bounded."""
    done = threading.Event()
    err: list[BaseException] = []

    def waiter() -> None:
        try:
            barrier.wait(timeout)
        except BaseException as exc:  # noqa: BLE001
            err.append(exc)
        done.set()

    threading.Thread(target=waiter, daemon=True).start()
    while not done.wait(0.2):
        pass
    if err:
        raise RuntimeError(f"clients did not reach the start line: {err[0]!r}")


# --------------------------------------------------------------------------
# A whole run: servers in rounds, the best round of each kept
# --------------------------------------------------------------------------

Key = tuple[str, int, str]  # (scenario name, clients, server name)
Measure = Callable[[ServerUnderTest, Scenario, int, Settings, dict], RunResult]


@dataclass
class Tally:
    """Every run, and the best round of each (scenario, clients, server)."""

    best: dict[Key, RunResult] = field(default_factory=dict)
    every: list[RunResult] = field(default_factory=list)

    def add(self, r: RunResult) -> None:
        self.every.append(r)
        key = (r.scenario, r.clients, r.server)
        old = self.best.get(key)
        if old is None or old.aborted or (not r.aborted and r.rate > old.rate):
            self.best[key] = r

    @property
    def failed(self) -> list[RunResult]:
        return [r for r in self.every if r.errors or r.aborted]


def fmt_rate(r: RunResult | None) -> str:
    if r is None:
        return "-"
    if r.aborted:
        return "ABORT"
    v = r.rate
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 1 else f"{v:.2f}"



def progress_line(r: RunResult, round_: int, rounds: int, took: float) -> str:
    extra = "".join(f" {k}={v:.0f}" for k, v in r.extra.items())
    rnd = f" round {round_ + 1}" if rounds > 1 else ""
    return (f"  {r.scenario:<17} x{r.clients:<2} {r.server:<10}{rnd} {fmt_rate(r):>8} {r.unit:<5} "
            f"ok={r.ops} miss={r.misses} err={r.errors} cpu% client={r.cpu_pct('client'):.0f} "
            f"server={r.cpu_pct('server'):.0f}{extra} ({took:.1f} s)")


def run_rounds(servers: list[ServerUnderTest], scenarios: list[Scenario], clients: list[int], rounds: int,
               settings: Settings, tally: Tally, measure: Measure = run_one) -> None:
    """Each scenario at each client count on each server, `rounds` times, the order of the servers reversed
    every other round (a slow moment of a shared machine then does not always hit the same server)."""
    states: dict[str, dict] = {s.name: {} for s in servers}
    for sc in scenarios:
        for c in clients:
            for rnd in range(max(1, rounds)):
                for srv in servers if rnd % 2 == 0 else servers[::-1]:
                    if not srv.handles(sc):
                        continue
                    if not srv.alive():
                        print(f"{srv.name} is not running; skipped {sc.name} x{c}", file=sys.stderr)
                        continue
                    t0 = time.monotonic()
                    try:
                        r = measure(srv, sc, c, settings, states[srv.name])
                    except RuntimeError as exc:
                        r = RunResult(srv.name, sc.name, c, sc.unit, aborted=str(exc))
                    tally.add(r)
                    print(progress_line(r, rnd, rounds, time.monotonic() - t0), flush=True)


class Bench:
    """One benchmark run's directory and servers, in a `with` block.

    On leaving it every server is stopped and the directory removed (kept
    with `keep`); Ctrl-C, SIGTERM and a server that does not start end the
    block early with `code` 130 or 1, so that the partial results can still
    be printed.
    """

    def __init__(self, prefix: str, parent: str | None = None, keep: bool = False) -> None:
        self.prefix, self.parent, self.keep = prefix, parent, keep
        self.servers: list[ServerUnderTest] = []
        self.code = 0
        self.notes: list[str] = []  # tracebacks found in the servers' logs

    def __enter__(self) -> Bench:
        def on_term(signum: int, frame: object) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored
        self.workdir = Path(tempfile.mkdtemp(prefix=self.prefix, dir=self.parent))
        return self

    def start(self, server: ServerUnderTest) -> ServerUnderTest:
        self.servers.append(server)
        server.start()
        return server

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> bool:
        if kind is not None and issubclass(kind, KeyboardInterrupt):
            STOP.set()
            print("\ninterrupted; partial results:", file=sys.stderr)
            self.code = 130
        elif kind is not None and issubclass(kind, RuntimeError):  # a server did not start
            STOP.set()
            print(f"\n{exc}", file=sys.stderr)
            self.code = 1
        for srv in self.servers:
            srv.stop()
        self.notes = [f"[{s.name}] server log: {n} tracebacks" + ("" if self.keep else " (--keep keeps the log)")
                      for s in self.servers if (n := s.tracebacks())]
        if self.keep:
            print(f"kept {self.workdir}", file=sys.stderr)
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return self.code != 0
