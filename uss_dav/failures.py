"""Failed authentications per client address, counted on the data directory by every serving process."""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
import time
from collections.abc import Callable
from pathlib import Path

from uss_dav.files import atomic_write_bytes, flocked


class FailureCounter:
    """Failed authentications per client address in a sliding window, counted on the data directory.

    Past `limit` failures an address gets 429 instead of 401 until the window
    moves on; a valid key is still admitted (it is checked first), so a
    guessing neighbour does not lock out real clients. Each address has a
    small file of failure times in `directory`, named by a hash of the
    address, read and replaced whole (write + rename) under flock of its
    `.lock` file, so all serving processes, and machines sharing the
    directory, count together. Never rewritten in place: on CephFS a file
    rewritten in place under flock by two clients lost half the counts
    (another client's page cache served the old bytes). Only failures touch
    it; files idle for a window are removed now and then.
    """

    PRUNE_EVERY = 256

    def __init__(
        self, directory: Path, limit: int = 20, window: float = 60.0, *, on_fail: Callable[[str], None] | None = None
    ) -> None:
        """`on_fail` hears of every failure, whatever the limit (/metrics counts them)."""
        self.directory, self.limit, self.window = directory, limit, window
        self.on_fail = on_fail
        self._until_prune = self.PRUNE_EVERY
        if limit > 0:
            directory.mkdir(parents=True, exist_ok=True)

    def fail(self, address: str) -> float | None:
        """Count a failure; return seconds to wait if the address is now over the limit."""
        if self.on_fail is not None:
            self.on_fail(address)
        if self.limit <= 0:
            return None
        now = time.time()  # a clock every process shares
        path = self.directory / hashlib.sha256(address.encode("utf-8", "surrogateescape")).hexdigest()[:32]
        with flocked(f"{path}.lock"):
            try:
                raw = path.read_bytes()
            except FileNotFoundError:
                raw = b""
            times = [*self._recent(raw, now), now][-(self.limit + 1):]
            atomic_write_bytes(path, struct.pack(f"<{len(times)}d", *times), self.directory, durable=False)
        self._until_prune -= 1
        if self._until_prune <= 0:
            self._until_prune = self.PRUNE_EVERY
            self._prune(now)
        return max(1.0, min(times) + self.window - now) if len(times) > self.limit else None

    def limited(self) -> int:
        """How many addresses are over the limit right now (read without locks: a gauge, not a decision)."""
        if self.limit <= 0:
            return 0
        now, count = time.time(), 0
        for entry in os.scandir(self.directory):
            if entry.name.endswith((".lock", ".tmp")):
                continue
            with contextlib.suppress(OSError), open(entry.path, "rb") as fh:
                count += len(self._recent(fh.read(), now)) > self.limit
        return count

    def _recent(self, raw: bytes, now: float) -> list[float]:
        """The failure times in a counts file's bytes that are still inside the window."""
        return [t for (t,) in struct.iter_unpack("<d", raw[: len(raw) // 8 * 8]) if t > now - self.window]

    def _prune(self, now: float) -> None:
        """Remove the files of addresses that have not failed for a window (and stale temporary files)."""
        for entry in os.scandir(self.directory):
            if entry.name.endswith(".lock"):
                continue  # goes with its counts file
            with contextlib.suppress(FileNotFoundError):
                if entry.stat().st_mtime < now - self.window:
                    os.unlink(entry.path)
                    if not entry.name.endswith(".tmp"):
                        os.unlink(f"{entry.path}.lock")
