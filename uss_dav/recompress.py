"""The `recompress` command: re-encode files already stored, as each key's mode (or --mode) would store them now.

Files imported `--as-is`, stored while a codec was missing or written
before a mode change are passed through the write hook again
(Store.recompress: committed like a PUT, a client's write meanwhile wins).
Which files to look at is decided from their records alone
(storage.needs_recompress), and a file done records the mode it was done
with, so a run stopped half-way resumes where it stopped and a second run
changes nothing. One file per codec worker is in flight at a time, so at
most that many are held in memory.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from tqdm import tqdm

from uss_dav.config import Config
from uss_dav.keys import KeyRecord, UnknownKey
from uss_dav.services import Services, open_services
from uss_dav.storage import (
    Entry,
    NotFound,
    Recompressed,
    StorageError,
    Store,
    needs_recompress,
)

log = logging.getLogger(__name__)


@dataclass
class Summary:
    """What a run did (or, dry, would do), in files and stored bytes."""

    dry_run: bool
    looked_at: int = 0
    changed: int = 0
    unchanged: int = 0
    raced: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    bytes_before: int = 0
    bytes_after: int = 0

    def add(self, cid: str, result: Recompressed) -> None:
        self.looked_at += 1
        if result.action in ("recompressed", "would recompress"):
            self.changed += 1
            self.bytes_before += result.stored_before
            self.bytes_after += result.stored_after
        elif result.action == "unchanged":
            self.unchanged += 1
        elif result.action == "changed meanwhile":
            self.raced += 1
        else:
            self.skipped.append((f"{cid}/{result.name}", result.reason))

    def report(self) -> str:
        verb = "would re-encode" if self.dry_run else "re-encoded"
        saved = self.bytes_before - self.bytes_after
        lines = [
            (
                f"{verb} {self.changed} of {self.looked_at} file(s) looked at: "
                f"{self.bytes_before} -> {self.bytes_after} bytes stored, {saved} bytes "
                f"{'to save' if self.dry_run else 'saved'}"
            ),
            f"unchanged (no smaller encoding): {self.unchanged}",
        ]
        if self.raced:
            lines.append(f"changed by a client meanwhile (left as the client wrote them): {self.raced}")
        lines += [f"skipped {name}: {reason}" for name, reason in self.skipped]
        return "\n".join(lines)


def files_of(store: Store, cid: str, folder: str = "/") -> Iterator[tuple[str, Entry]]:
    """(path, entry) of every file in a collection, depth first, by name."""
    for entry in store.list_entries(cid, folder):
        path = f"{folder.rstrip('/')}/{entry.name}"
        if entry.is_dir:
            yield from files_of(store, cid, path)
        else:
            yield path, entry


def plan(store: Store, cid: str, mode: str) -> list[str]:
    """The paths of a collection's files that `mode` may store differently (from their records alone)."""
    return [
        path
        for path, entry in files_of(store, cid)
        if entry.size and entry.sha1 and needs_recompress(entry.name, entry.encoding, entry.format, entry.mode, mode)
    ]


def recompress(
    services: Services,
    records: list[KeyRecord],
    mode: str | None,
    *,
    dry_run: bool = False,
    progress: Callable[[int], Callable[[], None]] | None = None,
    before_commit: Callable[[], None] | None = None,
) -> Summary:
    """Re-encode the files of `records`' collections, each with `mode` or its key's own.

    `progress(total)` returns the callable ticked once per file done.
    """
    store, summary = services.store, Summary(dry_run)
    work = [
        (record.collection, path, mode or services.mode_for(record))
        for record in records
        for path in plan(store, record.collection, mode or services.mode_for(record))
    ]
    tick = progress(len(work)) if progress else (lambda: None)

    def one(job: tuple[str, str, str]) -> tuple[str, Recompressed | None]:
        cid, path, file_mode = job
        try:
            return cid, store.recompress(cid, path, file_mode, dry_run=dry_run, before_commit=before_commit)
        except NotFound:
            return cid, None  # deleted since the plan was made: nothing to do
        except (StorageError, OSError) as exc:
            log.error("%s%s: %s", cid, path, exc)
            return cid, Recompressed(path, "skipped", 0, 0, f"{type(exc).__name__}: {exc}")

    workers = services.config.compression.workers
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="recompress") as pool:
        # map() submits every job at once, but a job is three strings: files are read only
        # when one of the `workers` threads takes it.
        for cid, result in pool.map(one, work):
            if result is not None:
                summary.add(cid, result)
            tick()
    return summary


def run(config: Config, key_id: str | None, mode: str | None, *, dry_run: bool = False) -> int:
    """The `recompress` command: re-encode, with a progress bar on stderr; print the summary."""
    services = open_services(config)
    try:
        try:
            records = [services.keys.get(key_id)] if key_id else services.keys.list()
        except UnknownKey:
            print(f"no key with id {key_id}", file=sys.stderr)
            return 1
        bar: list[tqdm] = []

        def progress(total: int) -> Callable[[], None]:
            bar.append(tqdm(total=total, unit="file", desc="recompress", file=sys.stderr, disable=None))
            return lambda: bar[0].update()

        try:
            summary = recompress(services, records, mode, dry_run=dry_run, progress=progress)
        finally:
            for b in bar:
                b.close()
    finally:
        services.close()
    print(summary.report())
    return 0
