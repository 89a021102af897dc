"""Who serves this data directory: one record per running server, so that servers which could
not see each other's WebDAV locks are refused at start, not found out by a lost update.

Each server (one per machine, with all its worker processes) writes
`nodes/<host>-<pid>.json` (host, pid, lock mode, start time) when it starts
and holds flock on it for as long as any of its processes runs: the workers
inherit the descriptor. That lock is the heartbeat: it needs no timer, a
stopped or killed server releases it at once, and a dead machine's is
released when the shared file system ends its session (CephFS evicts it,
NFSv4 lets its lease expire). A record nobody holds is left over and removed.

A starting server compares its lock mode with every live record; a
different one means the two keep WebDAV locks where the other cannot see
them (an older uss_dav, another lock protocol), so it refuses to start.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)


class NodeConflict(Exception):
    """Another live server on this data directory keeps its WebDAV locks where this one cannot see them."""


@dataclass(frozen=True)
class NodeRecord:
    host: str
    pid: int
    lock_mode: str
    started: float


class Membership:
    """This server's record, held under flock until leave() (or until its last process ends)."""

    def __init__(self, path: Path, fd: int, record: NodeRecord) -> None:
        self.path, self.record, self._fd = path, record, fd

    def leave(self) -> None:
        """Remove the record and release it (a clean stop)."""
        if self._fd < 0:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        os.close(self._fd)
        self._fd = -1


def join(data_dir: Path, lock_mode: str) -> Membership:
    """Check the live servers on `data_dir`, then add this one; NodeConflict if one is incompatible."""
    directory = Path(data_dir) / "nodes"
    directory.mkdir(parents=True, exist_ok=True)
    for peer in live_peers(directory):
        if peer.lock_mode != lock_mode:
            raise NodeConflict(
                f"{peer.host} (pid {peer.pid}) serves {data_dir} with WebDAV locks kept as {peer.lock_mode!r}, "
                f"this server keeps them as {lock_mode!r}: neither would see the other's locks"
            )
    record = NodeRecord(socket.gethostname(), os.getpid(), lock_mode, time.time())
    path = directory / f"{record.host}-{record.pid}.json"
    return Membership(path, _write_held(path, record), record)


def live_peers(directory: Path) -> list[NodeRecord]:
    """The records of running servers; left-over ones (nobody holds them) are removed on the way."""
    peers = []
    for entry in os.scandir(directory):
        if not entry.name.endswith(".json"):
            continue
        record = _read_if_held(entry.path)
        if record is not None:
            peers.append(record)
    return peers


def _read_if_held(path: str) -> NodeRecord | None:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)  # NFS grants an exclusive flock only to a writer
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # held: a running server
            try:
                return NodeRecord(**json.loads(os.pread(fd, 65536, 0)))
            except (ValueError, TypeError) as exc:
                raise NodeConflict(f"{path} is held by a running server but unreadable ({exc})") from None
        log.info("removing %s: left by a server that no longer runs", path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return None
    finally:
        os.close(fd)


def _write_held(path: Path, record: NodeRecord) -> int:
    """Write the record whole and rename it into place already locked; return the descriptor holding it.

    Locked before it has its name, so no other server can ever find it unheld.
    Not close-on-exec-sensitive: forked workers inherit it, and with it the lock.
    """
    tmp = path.parent / f".{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, json.dumps(asdict(record)).encode())
        os.fsync(fd)
        os.replace(tmp, path)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return fd
