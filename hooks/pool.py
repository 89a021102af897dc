"""Codec process pools whose semaphores have no name in /dev/shm once their workers are up.

A ProcessPoolExecutor's queues hold five POSIX semaphores. Under the
"forkserver" and "spawn" start methods each one has a name
(/dev/shm/sem.mp-*), since a worker opens it by name, and the name stays
until the pool is garbage collected or, after a crash, until
multiprocessing's resource tracker removes it. The tracker is one more
process of the server's process group: a SIGKILL to the whole group (a
test harness, `kill -9 -PGID`, a process manager's last resort) ends it
with the rest, and the names stayed in /dev/shm for good.

A name is only needed while a worker has yet to open it, so start_pool
starts every worker at once, waits until each has opened the queues, and
unlinks the names then (the semaphores themselves live on, as an unlinked
file does). From then on no kill of any kind can leave them behind. A pool
in Python 3.11 never starts a worker after these (a dead one breaks the
pool, which the caller replaces); should one ever be started, it could not
open the queues and would end at once, breaking the pool the same way.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import util
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from typing import Any

logger = logging.getLogger(__name__)


def start_pool(
    workers: int,
    *,
    initializer: Callable[..., object] | None = None,
    initargs: tuple[Any, ...] = (),
    timeout: float = 30.0,
) -> ProcessPoolExecutor:
    """A started pool of `workers` processes ("forkserver", else "spawn"; never plain fork).

    Returns once every worker has opened the pool's semaphores and their
    names are gone from /dev/shm; after `timeout` seconds without that (a
    worker that could not start), the names are left to multiprocessing's
    usual clean-up and a warning is logged.
    """
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    if not hasattr(ProcessPoolExecutor, "_launch_processes"):  # a Python whose pool cannot start all workers at once
        logger.warning("codec pool: cannot start its workers at once; semaphore names kept")
        return ProcessPoolExecutor(workers, multiprocessing.get_context(method), initializer, initargs)
    ctx = _recording_context(method)
    ready_r, ready_w = ctx.Pipe(duplex=False)
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=ctx,
        initializer=_report_then_init,
        initargs=(ready_w, initializer, initargs),
    )
    try:
        pool._launch_processes()  # before any submit, as the pool itself does for "fork"
        ready_w.close()  # the workers hold their own copies: EOF once all of them have ended
        if _wait_ready(ready_r, workers, timeout):
            try:
                _unlink_names(ctx.semlocks)
            except AttributeError:  # a Python whose multiprocessing keeps its finalizers elsewhere
                logger.warning("codec pool: cannot reach the semaphores' finalizers; semaphore names kept")
        else:
            logger.warning("codec pool: workers did not all start within %.0f s; semaphore names kept", timeout)
    finally:
        ready_w.close()
        ready_r.close()
    return pool


def _report_then_init(ready: Connection, initializer: Callable[..., object] | None, initargs: tuple[Any, ...]) -> None:
    """In a worker: say it has started (its queues, semaphores included, are open by now), then run the initializer."""
    try:
        ready.send_bytes(b"1")
    except OSError:  # the pool's creator stopped waiting (it timed out): nothing to tell
        pass
    ready.close()
    if initializer is not None:
        initializer(*initargs)


def _wait_ready(ready: Connection, workers: int, timeout: float) -> bool:
    """Whether all `workers` reported within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    for _ in range(workers):
        remaining = deadline - time.monotonic()
        try:
            if remaining <= 0 or not ready.poll(remaining):
                return False
            ready.recv_bytes()
        except (EOFError, OSError):  # every worker ended before all reported
            return False
    return True


def _unlink_names(semlocks: list[Any]) -> None:
    """Remove the semaphores' names now, through the finalizer multiprocessing gave each.

    Running that finalizer (sem_unlink, then unregister from the resource
    tracker) rather than calling sem_unlink directly also retires it, so it
    does not try again when the pool is collected.
    """
    mine = {id(lock) for lock in semlocks}
    for finalizer in list(util._finalizer_registry.values()):
        ref = getattr(finalizer, "_weakref", None)
        if ref is not None and id(ref()) in mine:
            finalizer()
    semlocks.clear()


def _recording_context(method: str) -> BaseContext:
    """A context of start method `method` that keeps the semaphores a pool creates through it."""
    base = type(multiprocessing.get_context(method))

    class RecordingContext(base):  # type: ignore[valid-type, misc]
        def __init__(self) -> None:
            super().__init__()
            self.semlocks: list[Any] = []

        def Lock(self) -> Any:  # noqa: N802 (multiprocessing's names)
            return self._kept(super().Lock())

        def Semaphore(self, value: int = 1) -> Any:  # noqa: N802
            return self._kept(super().Semaphore(value))

        def BoundedSemaphore(self, value: int = 1) -> Any:  # noqa: N802
            return self._kept(super().BoundedSemaphore(value))

        def _kept(self, lock: Any) -> Any:
            self.semlocks.append(lock)
            return lock

    return RecordingContext()
