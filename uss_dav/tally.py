"""The counts behind /metrics, kept per serving process in plain ints, written to a shared directory in batches.

A request adds to a few ints under one lock: no system call, no shared-file
write. (prometheus_client's multi-process mode did a locked mmap write per
counter or histogram update, four or five per request: most of what the
metrics layer cost a GET.) When a directory is given, a thread started in
the serving process writes this process's totals there, whole, every
`interval` seconds if they moved, and once more at close; /metrics sums
every process's file (uss_dav.metrics). So a scrape sees its own process's
counts at once and the other processes' as of their last write: at most
`interval` (0.5 s) old. A clean stop loses nothing; a serving process
that is killed loses at most its last interval. Files are written by
rename, never in place, so a reader sees a whole snapshot; a process's
file stays when it ends, so totals never go down.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import threading
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uss_dav.files import atomic_write_bytes

log = logging.getLogger(__name__)

#: Upper bounds of the latency histogram's buckets, in seconds (+Inf is implied).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: How often a serving process writes its totals; the most a scrape lags behind another process.
FLUSH_INTERVAL = 0.5
SUFFIX = ".counts"
#: The plain totals, by name (the names /metrics shows, without _total).
TOTALS = ("bytes_in", "bytes_out", "saved", "fallbacks", "auth_failures")


@dataclass
class Totals:
    """One process's counts, or their sum over processes: what a file holds."""

    #: (method, status) -> requests answered.
    requests: dict[tuple[str, str], int] = field(default_factory=dict)
    #: method -> requests per latency bucket (not cumulative; the last is +Inf).
    latency: dict[str, list[int]] = field(default_factory=dict)
    #: method -> seconds, summed.
    latency_sum: dict[str, float] = field(default_factory=dict)
    plain: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TOTALS, 0))

    def add(self, other: Totals) -> None:
        """Add another process's counts to these."""
        for key, n in other.requests.items():
            self.requests[key] = self.requests.get(key, 0) + n
        for method, counts in other.latency.items():
            mine = self.latency.setdefault(method, [0] * len(counts))
            for i, n in enumerate(counts):
                mine[i] += n
        for method, seconds in other.latency_sum.items():
            self.latency_sum[method] = self.latency_sum.get(method, 0.0) + seconds
        for name, n in other.plain.items():
            self.plain[name] = self.plain.get(name, 0) + n

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "requests": [[m, s, n] for (m, s), n in self.requests.items()],
                "latency": self.latency,
                "latency_sum": self.latency_sum,
                "plain": self.plain,
            }
        ).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Totals:
        d = json.loads(raw)
        return cls(
            requests={(m, s): n for m, s, n in d["requests"]},
            latency=d["latency"],
            latency_sum=d["latency_sum"],
            plain=d["plain"],
        )


class Tally:
    """The counts of one serving process; see the module docstring.

    Until `start` gives it a directory (never, with one serving process or
    in a command) nothing is written: the counts are read from memory only.
    """

    def __init__(self, interval: float = FLUSH_INTERVAL) -> None:
        self.interval = interval
        self.directory: Path | None = None
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._totals = Totals()
        self._moved = False
        self._name = f"{os.getpid()}-{secrets.token_hex(4)}{SUFFIX}"
        self._stop = threading.Event()
        self._writer: threading.Thread | None = None

    # --- counting: called on every request, so kept to a few dict and int updates under one lock

    def request(self, method: str, status: str, seconds: float, bytes_in: int, bytes_out: int) -> None:
        """Count one answered request: its method and status, latency, and body bytes in and out."""
        bucket = bisect_left(LATENCY_BUCKETS, seconds)  # a bucket counts what is <= its bound
        t = self._totals
        with self._lock:
            key = (method, status)
            t.requests[key] = t.requests.get(key, 0) + 1
            counts = t.latency.get(method)
            if counts is None:
                counts = t.latency[method] = [0] * (len(LATENCY_BUCKETS) + 1)
            counts[bucket] += 1
            t.latency_sum[method] = t.latency_sum.get(method, 0.0) + seconds
            if bytes_in:
                t.plain["bytes_in"] += bytes_in
            if bytes_out:
                t.plain["bytes_out"] += bytes_out
            self._moved = True

    def add(self, name: str, n: int = 1) -> None:
        """Add to one of the plain totals (TOTALS)."""
        with self._lock:
            self._totals.plain[name] += n
            self._moved = True

    def auth_failed(self, address: str) -> None:
        """The failure counter's listener: one failed authentication."""
        self.add("auth_failures")

    def processed(self, path: str, outcome: Any) -> None:
        """The store's listener for its write hook: a fall-back, and the bytes the stored file saves on the upload."""
        if getattr(outcome, "fallback", None):
            self.add("fallbacks")
        stored = getattr(outcome, "stored_path", None)
        if not stored:
            return
        try:
            saved = os.path.getsize(path) - os.path.getsize(stored)
        except OSError:
            return
        if saved > 0:
            self.add("saved", saved)

    # --- reading and writing

    def snapshot(self) -> Totals:
        """A copy of this process's counts."""
        with self._lock:
            t = self._totals
            return Totals(
                dict(t.requests), {m: list(c) for m, c in t.latency.items()}, dict(t.latency_sum), dict(t.plain)
            )

    def all_processes(self) -> Totals:
        """This process's counts (as they are now) plus every other process's last written ones."""
        total = self.snapshot()
        for other in self._others():
            total.add(other)
        return total

    def _others(self) -> Iterator[Totals]:
        if self.directory is None:
            return
        for entry in os.scandir(self.directory):
            if not entry.name.endswith(SUFFIX) or entry.name == self._name:
                continue
            try:
                with open(entry.path, "rb") as fh:
                    yield Totals.from_bytes(fh.read())
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("skipping the counts file %s: %s", entry.name, exc)

    def start(self, directory: Path | None) -> None:
        """Write this process's totals to `directory` every interval from now on (None: keep them in memory only).

        Called in the serving process (a thread does not survive a fork);
        a command that never calls it writes nothing anywhere.
        """
        if directory is None or self._writer is not None:
            return
        self.directory = directory
        self._writer = threading.Thread(target=self._write_every_interval, name="uss-metrics-writer", daemon=True)
        self._writer.start()

    def _write_every_interval(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.write()
            except OSError as exc:  # the next interval tries again
                log.warning("could not write the metrics counts: %s", exc)

    def write(self) -> None:
        """Write this process's totals to its file, if they moved since the last write."""
        if self.directory is None:
            return
        with self._write_lock:  # the writer thread and close() in turn; the snapshot taken inside, so the newest wins
            with self._lock:
                if not self._moved:
                    return
                self._moved = False
            data = self.snapshot().to_bytes()
            try:
                atomic_write_bytes(self.directory / self._name, data, self.directory, durable=False)
            except BaseException:
                with self._lock:
                    self._moved = True
                raise

    def close(self) -> None:
        """Stop the writer and write what is left: a clean stop loses no count."""
        self._stop.set()
        if self._writer is not None:
            self._writer.join()
            self._writer = None
        with contextlib.suppress(FileNotFoundError):  # the directory went first (a server stopping)
            self.write()
