"""What a durable small upload costs the file system alone: the floor under any server's PUT.

A PUT that survives power loss (uss_dav's) writes a new file, fsyncs it,
renames it over the old name and fsyncs the folder. Done here in a plain
loop, one thread, no HTTP and no server, on the file system the servers'
data lives on, this is the most PUTs per second any durable server can
reach on this machine. Printed beside the PUT 10 KiB rates, it shows how
much of a gap to a peer that does not fsync (copyparty, nginx) is the
disk's and how much is code.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path


def durable_replace_rate(parent: Path, size: int, seconds: float, names: int = 100) -> float:
    """Durable replaces per second of `size`-byte files over `names` names (as the PUT scenario cycles)."""
    body = os.urandom(size)
    with tempfile.TemporaryDirectory(prefix="fs-floor-", dir=parent) as folder:
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for i in range(names):  # the names exist, as they do once a PUT run has cycled once
                _durable_write(folder, dir_fd, f"n{i:03d}", f".t{i}", body)
            done, started = 0, time.perf_counter()
            deadline = started + seconds
            while time.perf_counter() < deadline:
                _durable_write(folder, dir_fd, f"n{done % names:03d}", f".t{done}", body)
                done += 1
            return done / (time.perf_counter() - started)
        finally:
            os.close(dir_fd)


def _durable_write(folder: str, dir_fd: int, name: str, staged: str, body: bytes) -> None:
    fd = os.open(f"{folder}/{staged}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, body)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(f"{folder}/{staged}", f"{folder}/{name}")
    os.fsync(dir_fd)
