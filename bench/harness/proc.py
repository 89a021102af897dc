"""Linux /proc, read in one place: processes, their trees, CPU, memory, sockets, mounts.

Benchmarks need the CPU and memory of a server together with every process
below it (uss_dav's serving processes and codec pools, nginx's workers);
tests/test_scaleout.py needs the same facts about a server's serving
processes. Every reader returns an empty or zero answer for a process that
has ended meanwhile: a tree changes while it is being walked.
"""

from __future__ import annotations

import contextlib
import glob
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Stat:
    """The fields of /proc/<pid>/stat that the benchmarks and tests use."""

    pid: int
    state: str  # "R", "S", "Z", ...
    ppid: int
    pgrp: int
    session: int
    minor_faults: int
    cpu_ticks: int  # user + system, in clock ticks

    @property
    def cpu_seconds(self) -> float:
        return self.cpu_ticks / CLK_TCK

    @property
    def zombie(self) -> bool:
        return self.state == "Z"


def stat(pid: int) -> Stat | None:
    """The process's /proc/<pid>/stat, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
        # The command name may hold spaces and parentheses: the fields start after the last ")".
        f = text.rpartition(")")[2].split()
        return Stat(pid, f[0], int(f[1]), int(f[2]), int(f[3]), int(f[7]), int(f[11]) + int(f[12]))
    except (OSError, ValueError, IndexError):
        return None


def all_pids() -> list[int]:
    return [int(e) for e in os.listdir("/proc") if e.isdigit()]


def children(pid: int) -> list[int]:
    """The live (not zombie) children of `pid`, from /proc/<pid>/task/*/children."""
    found: list[int] = []
    for path in glob.glob(f"/proc/{pid}/task/*/children"):
        with contextlib.suppress(OSError, ValueError):
            found += [int(p) for p in Path(path).read_text().split()]
    return [c for c in found if (s := stat(c)) is not None and not s.zombie]


def process_tree(root: int) -> list[tuple[int, int]]:
    """(pid, parent pid) of `root` and every live process below it; the root's parent is given as 0."""
    tree, todo = [(root, 0)], [root]
    while todo:
        parent = todo.pop()
        for child in children(parent):
            tree.append((child, parent))
            todo.append(child)
    return tree


def group_members(pgid: int) -> set[int]:
    """The live processes of process group `pgid` (a server started in its own session, and all it forked)."""
    return {pid for pid in all_pids() if (s := stat(pid)) is not None and s.pgrp == pgid and not s.zombie}


def session_members(sid: int) -> set[int]:
    """The live processes of session `sid`: all a server started with start_new_session forked, whatever their group."""
    return {pid for pid in all_pids() if (s := stat(pid)) is not None and s.session == sid and not s.zombie}


def tree_stats(root: int) -> dict[int, Stat]:
    """stat() of `root` and of every process below it, by pid."""
    return {pid: s for pid, _ in process_tree(root) if (s := stat(pid)) is not None}


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU so far of `root` and every process below it."""
    return sum(s.cpu_ticks for s in tree_stats(root).values()) / CLK_TCK


def machine_cpu_seconds() -> float:
    """CPU seconds the whole machine has used so far (all cores; idle and iowait left out)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def cmdline(pid: int) -> str:
    """The process's command line, arguments separated by spaces; "?" when it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def status_kib(pid: int) -> dict[str, int]:
    """VmHWM and VmRSS of a process in KiB (empty when it is gone)."""
    values: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                values[key] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return values


def pss_kib(pid: int) -> int:
    """A process's PSS in KiB (0 when it is gone): shared pages split between the processes that share them."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


class MemorySampler:
    """Samples a process tree every `interval` seconds while in a `with` block.

    Keeps the peak of the summed VmRSS, with `pss` also of the summed PSS (the
    peaks of the processes' own VmHWM need not coincide), and each process's
    highest VmHWM seen.
    """

    def __init__(self, root: int, *, pss: bool = False, interval: float = 0.05) -> None:
        self.root = root
        self.pss = pss
        self.interval = interval
        self.peak_rss = 0
        self.peak_pss = 0
        self.hwm: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        rss = pss = 0
        for pid, _ in process_tree(self.root):
            status = status_kib(pid)
            rss += status.get("VmRSS", 0)
            self.hwm[pid] = max(self.hwm.get(pid, 0), status.get("VmHWM", 0))
            if self.pss:
                pss += pss_kib(pid)
        self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> MemorySampler:  # noqa: PYI034
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Usage:
    """CPU seconds and minor page faults of a process (own) and of the processes below it (below)."""

    own: float = 0.0
    below: float = 0.0
    own_faults: int = 0
    below_faults: int = 0


@dataclass
class UsageSnapshot:
    own: Usage
    below: dict[int, Stat] = field(default_factory=dict)


class CpuMeter:
    """Usage of this process (process_time, getrusage) or of a server, and of the processes below it."""

    def __init__(self, root: int | None = None) -> None:
        self.root = root  # None: this process

    def snapshot(self) -> UsageSnapshot:
        import resource

        root = self.root or os.getpid()
        stats = tree_stats(root)
        if self.root is None:
            own = Usage(time.process_time(), 0.0, resource.getrusage(resource.RUSAGE_SELF).ru_minflt)
        else:
            s = stats.get(root)
            own = Usage(s.cpu_seconds if s else 0.0, 0.0, s.minor_faults if s else 0)
        return UsageSnapshot(own, {pid: s for pid, s in stats.items() if pid != root})

    @staticmethod
    def delta(a: UsageSnapshot, b: UsageSnapshot) -> Usage:
        def before(pid: int) -> tuple[int, int]:
            s = a.below.get(pid)
            return (s.cpu_ticks, s.minor_faults) if s else (0, 0)

        below = sum(s.cpu_ticks - before(pid)[0] for pid, s in b.below.items()) / CLK_TCK
        below_faults = sum(s.minor_faults - before(pid)[1] for pid, s in b.below.items())
        return Usage(b.own.own - a.own.own, below, b.own.own_faults - a.own.own_faults, below_faults)


def open_files(pid: int) -> list[str]:
    """What each descriptor of `pid` leads to (readlink of /proc/<pid>/fd/*): paths, "socket:[inode]", ...;
    empty when the process is gone, without those closed while it is read."""
    links: list[str] = []
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                links.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return links


def connection_owners(pids: set[int], port: int) -> Counter[int]:
    """How many established TCP connections to local `port` each of `pids` holds (sockets matched by inode)."""
    inodes: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                if int(cols[1].rsplit(":", 1)[1], 16) == port and cols[3] == "01":  # 01: ESTABLISHED
                    inodes.add(int(cols[9]))
    owners: Counter[int] = Counter()
    for pid in pids:
        for link in open_files(pid):
            if link.startswith("socket:[") and int(link[8:-1]) in inodes:
                owners[pid] += 1
    return owners


def fs_type(path: Path) -> str:
    """The file-system type holding `path`, from /proc/mounts (the longest mount point that is a prefix)."""
    best, kind = "", "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) > 2 and str(path).startswith(parts[1]) and len(parts[1]) >= len(best):
                best, kind = parts[1], parts[2]
    return kind
