"""File primitives every writer under the data directory shares: flock, atomic replace, fsync, write-behind.

They sit below the storage package, the key store, the lock table and the
failure counter, so those need not reach into each other for them. Every
one of them is safe across processes and across machines on a shared file
system with flock (a new inode per write; nothing rewritten in place).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fcntl
import os
import secrets
from collections.abc import Callable, Iterator

#: `with ignore_missing:` for removals that may race another remover.
ignore_missing = contextlib.suppress(FileNotFoundError)


#: <linux/fs.h>: start write-out of dirty pages, do not wait.
_SYNC_FILE_RANGE_WRITE = 2


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """libc's sync_file_range (Linux only; the os module has no binding for it), or None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        func = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    func.restype = ctypes.c_int
    return func  # type: ignore[no-any-return]


_sync_file_range = _load_sync_file_range()


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing `length` bytes at `offset` of `fd` to disk, without waiting (a hint only).

    While a large body is still arriving, the pages already written go to
    the disk, so the fsync at commit waits for the last stretch only. That
    fsync still gives the durability; where this call is missing or
    refused, it simply has more to do.
    """
    if _sync_file_range is not None and length > 0:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


#: A state read from a file's times is trusted for later requests only once every
#: time in it is older than this: file-system timestamps tick coarsely (a jiffy, at
#: most 10 ms, on ext4 and XFS before multigrain timestamps), so a change made within
#: the same tick could leave them unchanged. A change made after the read takes a time
#: no earlier than one tick before the read, so twice the longest tick is enough on
#: one machine. On a shared data directory, two versions with one time come from one
#: node's clock, and a reader on another node misjudges their age only if its clock
#: runs more than 10 ms ahead (docs/scale-out.md: clocks kept by NTP, as Ceph needs
#: anyway). It was 100 ms: under the mixed load most of a folder was that recent, and
#: its listing read every record again (a PROPFIND after a write, 100 files: 1548 ->
#: 1292 us of CPU). Times in whole seconds mean a file system that keeps no more
#: (ext3, FAT, some NFS servers): then two seconds.
RACY_NS = 20_000_000
RACY_COARSE_NS = 2_000_000_000


def settled(times_ns: list[int] | tuple[int, ...], now_ns: int) -> bool:
    """Whether every time is old enough that a later change must show a different one (git's "racy" rule)."""
    margin = RACY_COARSE_NS if any(t % 1_000_000_000 == 0 for t in times_ns) else RACY_NS
    return max(times_ns) < now_ns - margin


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make the names in a folder durable (a rename is not, until its folder is fsynced).

    Sharing one folder fsync between concurrent commits (group commit: a
    leader fsyncs for every rename made before it started, the others wait)
    was tried and lost at 8 clients (PUT 10 KiB 0.84x and 0.43x of the commit
    before, same run): the kernel already overlaps concurrent fsyncs (a
    journal shares one commit between them; the unjournaled ext4 the bench
    runs on writes each folder's few blocks), and waiting in Python only
    serialised them.
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def mkdir_durable(path: str | os.PathLike[str]) -> None:
    """os.mkdir(path) (its errors included), durable when it returns: the new folder, then its name.

    fsync of the parent alone writes the new name but not the new folder's
    inode, and on ext4 without a journal a power cut then leaves the name
    leading to whatever that inode held before: tests/test_power_loss.py saw
    a folder come back as an old upload's file.
    """
    os.mkdir(path)
    fsync_dir(path)
    fsync_dir(os.path.dirname(os.path.abspath(path)))


def ensure_dir(path: str) -> None:
    """os.makedirs(path, exist_ok=True), at one stat when the folder exists (the usual case)."""
    if not os.path.isdir(path):
        os.makedirs(path, exist_ok=True)


@contextlib.contextmanager
def flocked(path: str | os.PathLike[str], *, shared: bool = False, wait: bool = True) -> Iterator[int]:
    """A descriptor of `path` (created, with its folder, if need be), held under flock across processes and machines.

    Exclusive unless `shared`; the lock goes with the descriptor when the block ends.
    Without `wait`, BlockingIOError at once if another holds it.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except FileNotFoundError:  # its folder is new (a naming lock's): one stat fewer than checking first
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB))
        yield fd
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write every byte of `data` to `fd`. A write may take only part of them (on a disk that
    fills up, the next one then fails with ENOSPC): counting the rest as written stores a
    short file under the whole length."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def create_staged(staging: str | os.PathLike[str], suffix: str, mode: int = 0o666) -> tuple[str, int]:
    """A new file in `staging` under a random name ending in `suffix`, flock'ed: (path, descriptor).

    The sweep of staging/ (Store.sweep_staging, in any process of any node)
    removes such a file once no one holds its lock, and between the create
    and the flock there is a moment when no one does. The sweep unlinks
    while it holds the lock (remove_unless_locked), so a writer whose flock
    returns checks that the name still leads to its file, and starts over
    under a new name if the sweep took it.
    """
    staging = os.fspath(staging)
    while True:
        path = f"{staging}/{secrets.token_hex(16)}{suffix}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return path, fd
        except FileNotFoundError:
            pass
        except BaseException:
            os.close(fd)
            with ignore_missing:
                os.unlink(path)
            raise
        os.close(fd)  # swept between the create and the flock


def remove_unless_locked(path: str) -> bool:
    """Unlink `path` if no process holds its flock; whether it was removed.

    The lock is held across the unlink, so a writer still between create and
    flock (see create_staged) sees its file gone and starts over, and one
    that holds the lock is never touched.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)  # NFS needs write access for an exclusive flock
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False  # renamed into place by its writer meanwhile
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
    tmp, fd = create_staged(staging, ".tmp")  # locked: a live write, which every sweep leaves alone
    try:
        try:
            write_all(fd, data)
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
