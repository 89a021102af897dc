"""What a small upload costs the file system alone: the floor under any server's PUT, and what durability adds.

A PUT that survives power loss and replaces atomically (uss_dav's) writes
a new file, fsyncs it, renames it over the old name and fsyncs the folder.
Done here in a plain loop, one thread, no HTTP and no server, on the file
system the servers' data lives on, this is the most PUTs per second any
such server can reach on this machine. Printed beside the PUT 10 KiB rates,
it shows how much of a gap to a peer that does not fsync (copyparty, nginx)
is the disk's and how much is code.

The same loop is timed two more ways, as copyparty overwrites a file
(unlink, create in place, write: neither atomic nor durable) and that
again with file and folder fsynced. Their differences are what keeping
uss_dav's promise, or only flushing, would cost a server that writes as
copyparty does (report.print_flushes_charged). They are measured here, not
as a server under eatmydata less the server: eatmydata stops fsync, but
ext4 (auto_da_alloc) still starts writing a file out when it is renamed
over an existing name, so a server that replaces by rename keeps part of
the flush's cost without fsync.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class WriteRates:
    """Writes per second of one file over an existing name, three ways."""

    #: staged, fsynced, renamed over, folder fsynced: atomic and durable (uss_dav's PUT)
    durable: float
    #: unlinked, created in place, written, file and folder fsynced: durable, not atomic
    flushed: float
    #: unlinked, created in place, written: neither (copyparty's PUT over a file)
    plain: float


def write_rates(parent: Path, size: int, seconds: float, names: int = 100) -> WriteRates:
    """The three WriteRates of `size`-byte files cycled over `names` names (as the PUT scenario cycles),
    each timed for `seconds`."""
    body = os.urandom(size)
    with tempfile.TemporaryDirectory(prefix="fs-floor-", dir=parent) as folder:
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for i in range(names):  # the names exist, as they do once a PUT run has cycled once
                _durable(folder, dir_fd, f"n{i:03d}", f".t{i}", body)
            os.sync()  # none of the seeding's write-back left to slow the first loop
            return WriteRates(
                durable=_rate(seconds, lambda n: _durable(folder, dir_fd, f"n{n % names:03d}", f".t{n}", body)),
                flushed=_rate(seconds, lambda n: _in_place(folder, dir_fd, f"n{n % names:03d}", body, flush=True)),
                plain=_rate(seconds, lambda n: _in_place(folder, dir_fd, f"n{n % names:03d}", body, flush=False)),
            )
        finally:
            os.close(dir_fd)


def _rate(seconds: float, write: Callable[[int], None]) -> float:
    done, started = 0, time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        write(done)
        done += 1
    return done / (time.perf_counter() - started)


def _durable(folder: str, dir_fd: int, name: str, staged: str, body: bytes) -> None:
    fd = os.open(f"{folder}/{staged}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, body)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(f"{folder}/{staged}", f"{folder}/{name}")
    os.fsync(dir_fd)


def _in_place(folder: str, dir_fd: int, name: str, body: bytes, *, flush: bool) -> None:
    os.unlink(f"{folder}/{name}")
    fd = os.open(f"{folder}/{name}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, body)
        if flush:
            os.fsync(fd)
            os.fsync(dir_fd)
    finally:
        os.close(fd)
