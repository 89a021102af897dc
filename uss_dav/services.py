"""The long-lived objects a running server (or a command) shares, and the key lifecycle, written once.

A key and its collection come and go together: `create_key` makes the
collection before anyone can use the key (rclone never creates its root),
`revoke_key` refuses the key at once and, with purge, deletes what it held.
The CLI, the REST key endpoints, the first-start greeting and the importer
all go through here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hooks import ImageCompressor
from uss_dav.config import Config
from uss_dav.failures import FailureCounter
from uss_dav.keys import KeyRecord, KeyStore
from uss_dav.storage import Quota, Store, WriteHook
from uss_dav.tally import Tally


@dataclass
class Services:
    """The store, the keys, the codec pool and the failure counts of one data directory."""

    config: Config
    store: Store
    keys: KeyStore
    hook: WriteHook | None
    failures: FailureCounter
    #: What /metrics counts; the store and the failure counter report to it.
    tally: Tally
    #: Collections known to exist, so that a request checks at most once per process.
    _ready: set[str] = field(default_factory=set, repr=False)

    def ensure_collection(self, cid: str) -> None:
        """Make a key's collection if it is missing (checked on disk once per process)."""
        if cid not in self._ready:
            self.store.ensure_collection(cid)
            self._ready.add(cid)

    def mode_for(self, record: KeyRecord) -> str:
        """The compression mode of a key's uploads: the one it was made with.

        Keys made before records held a mode (compression None) meant "the
        configured mode", and still do (see README "Compression").
        """
        return record.compression or self.config.compression.mode

    def quota_for(self, record: KeyRecord) -> Quota:
        """A key's limits: its own where set, else the configured ones."""
        c = self.config
        return Quota(
            bytes=c.quota_bytes if record.quota_bytes is None else record.quota_bytes,
            files=c.quota_files if record.quota_files is None else record.quota_files,
        )

    def create_key(self, label: str, compression: str | None = None, **options: Any) -> tuple[KeyRecord, str]:
        """A new key (shown once: the store keeps its hash) and its empty collection.

        The key records the mode it is made with, `compression` or the
        configured default, so a later change of the default leaves it alone.
        """
        record, key = self.keys.create(label, compression or self.config.compression.mode, **options)
        self.store.ensure_collection(record.collection)
        return record, key

    def revoke_key(self, key_id: str, *, purge: bool = False) -> KeyRecord:
        """Refuse a key from now on; with `purge`, delete its collection too."""
        record = self.keys.revoke(key_id)
        if purge:
            self.store.remove_collection(record.collection)
        return record

    def close(self) -> None:
        """Write the last counts for /metrics, and stop the codec processes, if any were started."""
        self.tally.close()
        if isinstance(self.hook, ImageCompressor):
            self.hook.close()


def make_hook(config: Config) -> ImageCompressor:
    """The image compressor the store runs every upload through."""
    c = config.compression
    return ImageCompressor(
        max_pixels=c.max_pixels,
        timeout=c.timeout,
        workers=c.workers,
        png_level=c.png_level,
        lossy_quality=c.lossy_quality,
        images_only=config.images_only,
    )


def open_services(config: Config, *, with_hook: bool = True) -> Services:
    """The services of `config`'s data directory; commands that store nothing pass with_hook=False."""
    hook = make_hook(config) if with_hook else None
    tally = Tally()  # counts in memory; written for /metrics only once a serving process starts it
    store = Store(config.data_dir, hook=hook, block_size=config.block_size, on_processed=tally.processed)
    failures = FailureCounter(
        store.root / "failures", config.auth_failure_limit, config.auth_failure_window, on_fail=tally.auth_failed
    )
    return Services(config, store, KeyStore(store.keys_dir, store.staging), hook, failures, tally)
