"""Sweeps staging/ again and again while a serving process runs.

The sweep at start removes what a crash left, but only files no process
holds locked (a live upload's .part is flock'ed by its writer). On a shared
data directory (CephFS, NFS) the lock of a process that died with its node,
or was killed a moment ago, is released by the cluster later: seconds to
minutes after. A sweep at start alone could then keep that partial upload
until some later restart, and every crash would add to staging/. Sweeping
every `interval` seconds removes it once its lock is gone. A sweep is one
scandir of a folder that is nearly always empty.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class StagingSweeper:
    """A daemon thread that calls `sweep` every `interval` seconds until stop()."""

    def __init__(self, sweep: Callable[[], int], interval: float) -> None:
        self._sweep = sweep
        self._interval = interval
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="staging-sweeper", daemon=True)

    def start(self) -> StagingSweeper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stopped.wait(self._interval):
            try:
                self._sweep()
            except OSError as exc:  # a full or unreachable disk: the next round tries again
                log.warning("sweeping staging/ failed: %s", exc)
