"""WebDAV locks kept on the data directory, so every process and every machine serving it shares them.

This is WsgiDAV's lock storage interface (get, create, refresh, delete,
get_lock_list) over `locks/`: one JSON file per lock, written whole by
rename, plus `generation`, whose *size* counts the changes made so far, and
`generation.lock`, the file writers and readers flock.

WsgiDAV asks "any lock here?" eight times per PUT and nearly always the answer
is no. Each process keeps the locks it read last and reads them again only
when the counter has moved, so the common question costs one fstat of
`generation`. A writer holds flock(LOCK_EX) on `generation.lock` while it
changes lock files and then extends `generation` by one byte; a process
re-reading holds LOCK_SH, so it never sees half a change. The flocked file is
never written: on CephFS a client writing a file that a client waiting for
its flock holds open hung both (ceph-fuse 16.2). Counts only grow, so unlike a time
stamp or an inode number two changes can never look alike.

Why a size and not bytes in the file: a file's size is metadata, which a
shared file system keeps coherent between machines (CephFS through its
capabilities, NFS on every lock and open), whereas the bytes of a file
rewritten in place can be served stale from another machine's page cache:
on CephFS two clients counting in one file under flock lost half their
counts (../shared/CEPH.md, docs/scale-out.md). The lock files themselves are
only ever replaced by rename, so a reader opens a new inode each time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
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
    LockManager,
    generate_lock_token,
    normalize_lock_root,
    validate_lock,
)

from uss_dav.files import atomic_write_bytes, flocked

log = logging.getLogger(__name__)

Lock = dict[str, Any]

#: How this storage keeps locks: servers on one data directory must all say the same (uss_dav.nodes).
MODE = "files:locks/*.json, changes counted by the size of locks/generation"

#: Lifetime of a lock asked for without a timeout, and the longest granted (WsgiDAV's own values).
DEFAULT_TIMEOUT = 604800.0
MAX_TIMEOUT = 4 * 604800.0


@dataclass(frozen=True)
class _View:
    """The locks as read at one generation (-1: never read)."""

    generation: int = -1
    locks: dict[str, Lock] = field(default_factory=dict)  # token -> lock
    by_root: dict[str, list[str]] = field(default_factory=dict)  # root -> tokens
    #: When the first of these locks expires (inf: none will).
    first_expiry: float = math.inf
    #: The collections (first URL segments, see area_of) holding at least one lock.
    areas: frozenset[str] = frozenset()

    @classmethod
    def of(cls, generation: int, locks: dict[str, Lock]) -> _View:
        by_root: dict[str, list[str]] = {}
        for token, lock in locks.items():
            by_root.setdefault(lock["root"], []).append(token)
        expiries = [float(lock["expire"]) for lock in locks.values() if float(lock["expire"]) >= 0]
        areas = frozenset(area_of(root) for root in by_root)
        return cls(generation, locks, by_root, min(expiries, default=math.inf), areas)


def area_of(url: str) -> str:
    """The first segment of a lock URL: the collection id, since resources are keyed `/<collection id><path>`.

    "" for the root `/`, which lies above every collection.
    """
    return url.lstrip("/").partition("/")[0]


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
        self.corrupt = directory / "corrupt"
        self._generation = str(directory / "generation")
        self._flock = f"{self._generation}.lock"
        self._view = _View()
        self._fd: int | None = None  # `generation`, opened by open(): its size is the counter

    def __repr__(self) -> str:
        return f"FileLocks({str(self.directory)!r})"

    def file_for(self, token: str) -> str:
        """The file of a lock: named by a hash, since tokens arrive from clients."""
        return f"{self.directory}/{hashlib.sha256(token.encode()).hexdigest()[:40]}.json"

    # --- WsgiDAV's interface ------------------------------------------------

    def open(self) -> None:
        self.directory.mkdir(exist_ok=True)
        self._fd = os.open(self._generation, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def cleanup(self) -> None:
        """Remove expired locks (every change, and every read that meets one, does that too)."""
        with self._change():
            pass

    def clear(self) -> None:
        with self._change() as change:
            for token in list(change.locks):
                change.drop(token)

    def get(self, token: str) -> Lock | None:
        return self._current().locks.get(token)

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

    def none_near(self, url: str) -> bool:
        """Whether no lock can stand in the way of a write to `url`: none is held in its collection, nor above it.

        As current as get_lock_list (one fstat of the shared counter), so
        a lock another process or node granted a moment ago counts.
        """
        view = self._current()
        if not view.locks:
            return True
        area = area_of(url)
        return bool(area) and area not in view.areas and "" not in view.areas

    def get_lock_list(self, path: str, *, include_root: bool, include_children: bool, token_only: bool) -> list[Any]:
        view = self._current()
        if not view.locks:
            return []
        path = normalize_lock_root(path)
        tokens = list(view.by_root.get(path, ())) if include_root else []
        if include_children:
            tokens += [t for root, ts in view.by_root.items() if util.is_child_uri(path, root) for t in ts]
        return [view.locks[t]["token"] if token_only else view.locks[t] for t in tokens]

    # --- reading and changing ------------------------------------------------

    def _count(self) -> int:
        """The counter as it is now: the size of `generation`, one fstat."""
        assert self._fd is not None, "FileLocks.open() was not called"
        return os.fstat(self._fd).st_size

    def _count_up(self, generation: int) -> None:
        fd = os.open(self._generation, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.ftruncate(fd, generation)
            # On CephFS another client's next stat of an unsynced change can wait
            # for the MDS journal (up to its tick); a synced one it sees at once.
            os.fsync(fd)
        finally:
            os.close(fd)

    def _current(self) -> _View:
        """The live locks as they are now: the cached view while the counter has not moved.

        A view holding a lock past its expiry is purged first (a change like
        any other), so no reader ever answers with an expired lock.
        """
        view = self._view
        if self._count() != view.generation:
            with flocked(self._flock, shared=True):
                view = self._read(self._count())
        if view.first_expiry < time.time():
            self.cleanup()  # after the shared lock is gone: this one takes it exclusively
            view = self._view
        return view

    def _read(self, generation: int) -> _View:
        """The lock files at `generation` (the caller holds the file lock); cached for the next caller."""
        view = self._view
        if view.generation != generation:
            locks: dict[str, Lock] = {}
            with os.scandir(self.directory) as entries:
                for entry in entries:
                    if entry.name.endswith(".json"):
                        lock = self._load(entry.path)
                        if lock is not None:
                            locks[lock["token"]] = lock
            view = self._view = _View.of(generation, locks)
        return view

    def _load(self, path: str) -> Lock | None:
        """The lock in one file; a file that holds none is moved to `corrupt/`, with a log line."""
        try:
            with open(path, "rb") as fh:
                lock = _from_json(fh.read())
            if isinstance(lock["token"], str) and isinstance(lock["root"], str):
                float(lock["expire"])
                return lock
            problem = "token or root is not a string"
        except FileNotFoundError:
            return None  # released meanwhile by a process that does not hold our lock: cleanup()
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
        self.corrupt.mkdir(exist_ok=True)
        aside = self.corrupt / f"{os.path.basename(path)}.{time.time_ns()}"
        with contextlib.suppress(FileNotFoundError):  # another reader moved it first
            os.replace(path, aside)
            log.warning("lock file %s holds no lock (%s): moved to %s", path, problem, aside)
        return None

    @contextlib.contextmanager
    def _change(self) -> Iterator[_Change]:
        """The live locks held exclusively, expired ones removed; what the block changes counts as one change."""
        with flocked(self._flock):
            generation = self._count()
            change = _Change(self, dict(self._read(generation).locks))
            now = time.time()
            for token in [t for t, lock in change.locks.items() if _expired(lock, now)]:
                change.drop(token)
            try:
                yield change
            finally:
                if change.changed:
                    self._count_up(generation + 1)
                    self._view = _View.of(generation + 1, change.locks)


class FileLockManager(LockManager):
    """WsgiDAV's LockManager over FileLocks, answering the common write check at once.

    Before a PUT, WsgiDAV asks twice whether a lock stands in the way, each
    time walking from the URL up to `/` with one storage look-up per level
    (eight per PUT). Nearly always no lock is held in the whole collection:
    FileLocks says so from its current view (see none_near), and then no
    walk is needed. Otherwise WsgiDAV's own rule decides, unchanged.
    """

    storage: FileLocks

    def _get_write_conflicts(self, url: str, depth: str, token_list: list[str], principal: str) -> DAVErrorCondition:
        if self.storage.none_near(url):
            return DAVErrorCondition(PRECONDITION_CODE_LockConflict)
        return super()._get_write_conflicts(url, depth, token_list, principal)
