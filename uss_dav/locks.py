"""WebDAV locks kept on the data directory, so every process serving it shares them.

This is WsgiDAV's lock storage interface (get, create, refresh, delete,
get_lock_list) over `locks/`: one JSON file per lock, plus `generation`, an
8-byte counter of the changes made so far.

WsgiDAV asks "any lock here?" eight times per PUT and nearly always the answer
is no. Each process keeps the locks it read last and reads them again only
when the counter has moved. Every process maps `generation` shared (mmap), so
looking at the counter is a memory read, not a system call. A writer holds
flock(LOCK_EX) on `generation` while it changes lock files and then counts
one up; a process re-reading holds LOCK_SH, so it never sees half a change.
Counts only grow, so unlike a time stamp two changes can never look alike.

A shared mapping is coherent between the processes of one machine, not
between machines on a network file system: several nodes share locks
through Redis (`locks: redis://...`), not through this.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import mmap
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wsgidav import util
from wsgidav.dav_error import (
    HTTP_LOCKED,
    HTTP_PRECONDITION_FAILED,
    DAVError,
    DAVErrorCondition,
    PRECONDITION_CODE_LockConflict,
)
from wsgidav.lock_man.lock_manager import (
    generate_lock_token,
    normalize_lock_root,
    validate_lock,
)

from uss_dav.files import atomic_write_bytes, flocked

Lock = dict[str, Any]

COUNTER_BYTES = 8

#: Lifetime of a lock asked for without a timeout, and the longest granted (WsgiDAV's own values).
DEFAULT_TIMEOUT = 604800.0
MAX_TIMEOUT = 4 * 604800.0


@dataclass(frozen=True)
class _View:
    """The locks as read at one generation (-1: never read)."""

    generation: int = -1
    locks: dict[str, Lock] = field(default_factory=dict)  # token -> lock
    by_root: dict[str, list[str]] = field(default_factory=dict)  # root -> tokens

    @classmethod
    def of(cls, generation: int, locks: dict[str, Lock]) -> _View:
        by_root: dict[str, list[str]] = {}
        for token, lock in locks.items():
            by_root.setdefault(lock["root"], []).append(token)
        return cls(generation, locks, by_root)


def _to_json(lock: Lock) -> bytes:
    """A lock as JSON; WsgiDAV keeps the owner as XML bytes, stored here as latin-1 text."""
    owner = lock.get("owner")
    if isinstance(owner, bytes):
        lock = {**lock, "owner": owner.decode("latin-1"), "owner_is_bytes": True}
    return json.dumps(lock).encode()


def _from_json(data: bytes) -> Lock:
    lock: Lock = json.loads(data)
    if lock.pop("owner_is_bytes", False):
        lock["owner"] = lock["owner"].encode("latin-1")
    return lock


def _granted(timeout: float) -> float:
    """The lifetime granted for a requested one: infinite (-1) and too long get MAX_TIMEOUT."""
    return MAX_TIMEOUT if timeout < 0 or timeout > MAX_TIMEOUT else float(timeout)


def _expired(lock: Lock, now: float) -> bool:
    return 0 <= float(lock["expire"]) < now


def conflicts(new: Lock, old: Lock) -> bool:
    """Whether `old` stands in the way of `new`: LockManager's rule, asked again under the file lock.

    A lock on the same resource, or a depth-infinity lock on a parent,
    conflicts unless both are shared; a depth-infinity lock conflicts with
    any lock below it.
    """
    if old["root"] == new["root"] or (old["depth"] == "infinity" and util.is_child_uri(old["root"], new["root"])):
        return not (old["scope"] == "shared" and new["scope"] == "shared")
    return new["depth"] == "infinity" and util.is_child_uri(new["root"], old["root"])


class _Change:
    """The live locks, read fresh under LOCK_EX; put and drop write through to the lock files."""

    def __init__(self, storage: FileLocks, locks: dict[str, Lock]) -> None:
        self.storage, self.locks, self.changed = storage, locks, False

    def put(self, lock: Lock) -> None:
        path = self.storage.file_for(lock["token"])
        atomic_write_bytes(path, _to_json(lock), self.storage.staging, durable=False)
        self.locks[lock["token"]] = lock
        self.changed = True

    def drop(self, token: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.storage.file_for(token))
        del self.locks[token]
        self.changed = True


class FileLocks:
    """WsgiDAV lock storage in `directory`, shared by every process on it (see the module docstring)."""

    def __init__(self, directory: Path, staging: Path) -> None:
        self.directory, self.staging = directory, staging
        self._generation = str(directory / "generation")
        self._view = _View()
        self._counter: mmap.mmap | None = None  # `generation`, mapped by open()

    def __repr__(self) -> str:
        return f"FileLocks({str(self.directory)!r})"

    def file_for(self, token: str) -> str:
        """The file of a lock: named by a hash, since tokens arrive from clients."""
        return f"{self.directory}/{hashlib.sha256(token.encode()).hexdigest()[:40]}.json"

    # --- WsgiDAV's interface ------------------------------------------------

    def open(self) -> None:
        self.directory.mkdir(exist_ok=True)
        with flocked(self._generation) as fd:
            if os.fstat(fd).st_size < COUNTER_BYTES:
                os.ftruncate(fd, COUNTER_BYTES)  # a new counter reads 0
            self._counter = mmap.mmap(fd, COUNTER_BYTES)  # MAP_SHARED: every process sees one counter
            fcntl.flock(fd, fcntl.LOCK_UN)  # explicitly: the map keeps a duplicate of fd, and with it the lock

    def close(self) -> None:
        if self._counter is not None:
            self._counter.close()
            self._counter = None

    def cleanup(self) -> None:
        """Remove expired locks (every change does that too)."""
        with self._change():
            pass

    def clear(self) -> None:
        with self._change() as change:
            for token in list(change.locks):
                change.drop(token)

    def get(self, token: str) -> Lock | None:
        lock = self._current().locks.get(token)
        return None if lock is None or _expired(lock, time.time()) else lock

    def create(self, path: str, lock: Lock) -> Lock:
        """Store a new lock on `path`; 423 if another process granted a conflicting one meanwhile."""
        assert lock.get("token") is None and lock.get("expire") is None
        lock["root"] = normalize_lock_root(path)
        lock["timeout"] = _granted(float(lock.get("timeout") or DEFAULT_TIMEOUT))
        lock["expire"] = time.time() + lock["timeout"]
        validate_lock(lock)
        lock["token"] = generate_lock_token()
        with self._change() as change:
            # LockManager checked with what this process had read; another may have locked since.
            in_the_way = [old["root"] for old in change.locks.values() if conflicts(lock, old)]
            if in_the_way:
                condition = DAVErrorCondition(PRECONDITION_CODE_LockConflict)
                for root in in_the_way:
                    condition.add_href(root)
                raise DAVError(HTTP_LOCKED, err_condition=condition)
            change.put(lock)
        return lock

    def refresh(self, token: str, *, timeout: float) -> Lock:
        with self._change() as change:
            old = change.locks.get(token)
            if old is None:
                raise DAVError(HTTP_PRECONDITION_FAILED, "the lock has expired or was released")
            seconds = _granted(timeout)
            lock = {**old, "timeout": seconds, "expire": time.time() + seconds}
            change.put(lock)
        return lock

    def delete(self, token: str) -> bool:
        with self._change() as change:
            if token not in change.locks:
                return False
            change.drop(token)
        return True

    def get_lock_list(self, path: str, *, include_root: bool, include_children: bool, token_only: bool) -> list[Any]:
        view = self._current()
        if not view.locks:
            return []
        path = normalize_lock_root(path)
        tokens = list(view.by_root.get(path, ())) if include_root else []
        if include_children:
            tokens += [t for root, ts in view.by_root.items() if util.is_child_uri(path, root) for t in ts]
        now = time.time()
        live = [view.locks[t] for t in tokens if not _expired(view.locks[t], now)]
        return [lock["token"] for lock in live] if token_only else live

    # --- reading and changing ------------------------------------------------

    def _count(self) -> int:
        """The counter as it is now: a read of shared memory (a torn read only makes a reader re-read)."""
        assert self._counter is not None, "FileLocks.open() was not called"
        return int.from_bytes(self._counter[:COUNTER_BYTES], "little")

    def _current(self) -> _View:
        """The locks as they are now: the cached view while the counter has not moved."""
        view = self._view
        if self._count() == view.generation:
            return view
        with flocked(self._generation, shared=True):
            return self._read(self._count())

    def _read(self, generation: int) -> _View:
        """The lock files at `generation` (the caller holds the file lock); cached for the next caller."""
        view = self._view
        if view.generation != generation:
            locks: dict[str, Lock] = {}
            with os.scandir(self.directory) as entries:
                for entry in entries:
                    if entry.name.endswith(".json"):
                        with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
                            lock = _from_json(Path(entry.path).read_bytes())
                            locks[lock["token"]] = lock
            view = self._view = _View.of(generation, locks)
        return view

    @contextlib.contextmanager
    def _change(self) -> Iterator[_Change]:
        """The live locks held exclusively, expired ones removed; what the block changes counts as one change."""
        with flocked(self._generation):
            generation = self._count()
            change = _Change(self, dict(self._read(generation).locks))
            now = time.time()
            for token in [t for t, lock in change.locks.items() if _expired(lock, now)]:
                change.drop(token)
            try:
                yield change
            finally:
                if change.changed:
                    assert self._counter is not None
                    self._counter[:COUNTER_BYTES] = (generation + 1).to_bytes(COUNTER_BYTES, "little")
                    self._view = _View.of(generation + 1, change.locks)
