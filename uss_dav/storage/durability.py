"""Making stored bytes durable at less cost: write-behind during an upload, shared folder fsyncs.

A 201 promises that the data and its name survive a power loss, so every
upload ends with an fsync of its data and of its folder. Two things make
those cheaper without weakening them:

- write-behind: while a large body is still arriving, the pages already
  written are handed to the disk (sync_file_range, SYNC_FILE_RANGE_WRITE,
  which starts write-out and does not wait for it). The closing fsync then
  waits for the last stretch only, not for the whole file at once.
- group commit: concurrent uploads into one folder share its fsync. One of
  them (the leader) fsyncs the folder for every rename made before it
  started; the others wait for it instead of queueing fsyncs of their own.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

_SYNC_FILE_RANGE_WRITE = 2  # <linux/fs.h>: start write-out of dirty pages, do not wait


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

    Durability still comes from the fsync at commit; where the call is
    missing or refused, that fsync simply has more to do.
    """
    if _sync_file_range is not None and length > 0:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


class _Folder:
    """The group-commit state of one folder: tickets taken, tickets made durable."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.taken = 0  # tickets handed out: one per rename waiting for durability
        self.durable = 0  # every ticket up to this one is covered by a finished fsync
        self.syncing = False
        self.users = 0  # callers inside sync() (for dropping idle folders)


class FolderSyncs:
    """fsync of folders, shared between concurrent callers within this process (group commit).

    A caller asks for durability only after its rename is done, so a fsync
    that starts after a ticket was taken covers that ticket's rename. A
    failed fsync raises in its leader; a waiting caller then tries for
    itself. Thread-safe; one per Store.
    """

    def __init__(self, fsync_dir: Callable[[str], None]) -> None:
        self._fsync_dir = fsync_dir
        self._lock = threading.Lock()
        self._folders: dict[str, _Folder] = {}

    def sync(self, path: str) -> None:
        """Return once every rename into `path` made before this call is durable."""
        with self._lock:
            folder = self._folders.get(path)
            if folder is None:
                folder = self._folders[path] = _Folder()
            folder.users += 1
        try:
            self._sync(folder, path)
        finally:
            with self._lock:
                folder.users -= 1
                if not folder.users:
                    del self._folders[path]

    def _sync(self, folder: _Folder, path: str) -> None:
        with folder.cond:
            folder.taken += 1
            ticket = folder.taken
            while folder.syncing and folder.durable < ticket:
                folder.cond.wait()
            if folder.durable >= ticket:
                return  # a leader's fsync started after our rename and has finished
            folder.syncing = True
            covers = folder.taken
        durable = False
        try:
            self._fsync_dir(path)
            durable = True
        finally:
            with folder.cond:
                folder.syncing = False
                if durable:
                    folder.durable = max(folder.durable, covers)
                folder.cond.notify_all()
