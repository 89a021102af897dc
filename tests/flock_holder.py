"""Another process holding an exclusive flock, as a live writer elsewhere (another process, another node) does."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator

_HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
os.write(fd, sys.argv[2].encode())
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(120)  # far past any test that holds it; a hung test ends by then
"""


@contextlib.contextmanager
def flock_held_elsewhere(path: str | os.PathLike[str], content: str = "") -> Iterator[None]:
    """`path` (created if need be, `content` written) locked by another process until the block ends;
    that process is killed then, so its lock goes as a crashed writer's does."""
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, os.fspath(path), content], stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n", "the holder did not lock"
        yield
    finally:
        holder.kill()
        holder.wait()
