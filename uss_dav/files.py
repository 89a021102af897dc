"""File primitives every writer under the data directory shares: flock, atomic replace, fsync.

They sit below the storage package, the key store, the lock table and the
failure counter, so those need not reach into each other for them. Every
one of them is safe across processes and across machines on a shared file
system with flock (a new inode per write; nothing rewritten in place).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
from collections.abc import Iterator

#: `with ignore_missing:` for removals that may race another remover.
ignore_missing = contextlib.suppress(FileNotFoundError)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make the names in a folder durable (a rename is not, until its folder is fsynced)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_dir(path: str) -> None:
    """os.makedirs(path, exist_ok=True), at one stat when the folder exists (the usual case)."""
    if not os.path.isdir(path):
        os.makedirs(path, exist_ok=True)


@contextlib.contextmanager
def flocked(path: str | os.PathLike[str], *, shared: bool = False) -> Iterator[int]:
    """A descriptor of `path` (created if need be), held under flock across processes and machines.

    Exclusive unless `shared`; the lock goes with the descriptor when the block ends.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)


def atomic_write_bytes(
    path: str | os.PathLike[str], data: bytes, staging: str | os.PathLike[str], *, durable: bool = True
) -> os.stat_result:
    """Replace `path` with `data` so that readers see the old or the new file, never a mix.

    The bytes are written first to `staging` (same file system), under the
    name Store.sweep_staging looks for, so a crash before the rename leaves
    a file the sweep removes. Returns the stat of the file written (a rename
    keeps its inode and mtime).
    """
    path = os.fspath(path)
    tmp = f"{os.fspath(staging)}/{secrets.token_hex(16)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # a live write: the start-up sweep leaves it alone
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if durable:
                os.fsync(fd)
            st = os.fstat(fd)
            os.replace(tmp, path)  # still locked: renamed or unlocked, never swept mid-write
        finally:
            os.close(fd)
    except BaseException:
        with ignore_missing:
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(os.path.dirname(path))
    return st
