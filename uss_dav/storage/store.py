"""The Store: every byte written under the data directory goes through this package.

Layout of a data directory::

    keys/<sha256 of key>.json     key records (uss_dav.keys)
    collections/<cid>/...         each collection's files, served as its WebDAV root; a file's
                                  record (checksums, encoding) is its xattr RECORD_ATTR
    meta/<cid>/...                per-entry metadata, a tree parallel to the collection:
                                  <name>.m  the record as JSON, where it is not an xattr (a file
                                            written by an earlier version, or a file system
                                            without user xattrs)
                                  <name>.p  dead properties of a file or folder
                                  <name>.d/ the metadata of a folder's members
    meta/<cid>.p                  dead properties of the collection root
    staging/                      uploads in progress and the store's other temporary
                                  files; never listed, swept at start
    thumbs/<cid>/<sha1>/<size>.*  thumbnails, a folder per content they show

Writes are staged in staging/, passed through the write hook, given their
record, fsynced and renamed into place, so a reader or a crash never sees
half a file, and data and record move in one rename (and along with the
file wherever it is copied with its extended attributes). A record names
the stored size it describes: one read by name while an overwrite replaced
the file is detected and ignored rather than believed. (A `.m` record names
the inode too, and carries the record it replaced as "prev" for a reader of
the old file: it is written by a rename of its own, before the data's.)
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import stat as stat_mod
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import uss_dav.storage.errors as refusals
from uss_dav.files import (
    atomic_write_bytes,
    ensure_dir,
    flocked,
    fsync_dir,
    ignore_missing,
    mkdir_durable,
    remove_unless_locked,
    settled,
)
from uss_dav.storage.errors import Quota
from uss_dav.storage.paths import split_path
from uss_dav.storage.records import (
    RECORD_ATTR,
    Entry,
    HookListener,
    Opened,
    WriteHook,
    describes,
    file_entry,
    file_identity,
    naming_lock_path,
    pack_record,
    unpack_record,
)
from uss_dav.storage.reencode import Reencoding
from uss_dav.storage.sidecars import Sidecars
from uss_dav.storage.upload import Upload, check_checksum, file_digest, stream_digest

log = logging.getLogger(__name__)

#: Content-metadata records kept in memory (a few hundred bytes each).
META_CACHE_SIZE = 200_000
#: Entries of files kept by path, with the stat they were made from (see Store._entry): about
#: 400 bytes each. A folder with more members than this is relisted partly from the disk.
ENTRY_CACHE_SIZE = 20_000
#: How long a look at the free space serves for the check of a new upload's declared length.
FREE_SPACE_SECONDS = 1.0


def _xattrs_work(folder: str) -> bool:
    """Whether files in `folder` take user extended attributes (ext4, XFS, btrfs and CephFS do)."""
    fd, path = tempfile.mkstemp(dir=folder, suffix=".tmp")
    try:
        os.setxattr(fd, RECORD_ATTR, b"probe")
        return True
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EPERM):
            return False
        raise
    finally:
        os.close(fd)
        os.unlink(path)


def _mtime(entry: os.DirEntry[str]) -> float:
    try:
        return entry.stat(follow_symlinks=False).st_mtime
    except FileNotFoundError:
        return float("inf")


def stat_identity(st: os.stat_result) -> tuple[int, int, int, int]:
    """What a kept entry is checked against: new content is a new inode, and any change moves the times or size."""
    return (st.st_ino, st.st_ctime_ns, st.st_mtime_ns, st.st_size)


class Store(Sidecars, Reencoding):
    """The data directory: collections, their metadata and staged uploads."""

    def __init__(
        self,
        data_dir: Path,
        *,
        hook: WriteHook | None = None,
        block_size: int = 1 << 20,
        on_processed: HookListener | None = None,
    ) -> None:
        self.root = Path(data_dir).resolve()
        self.collections = self.root / "collections"
        self.meta = self.root / "meta"
        self.staging = self.root / "staging"
        self.keys_dir = self.root / "keys"
        self.locks_dir = self.root / "locks"
        self.thumbs = self.root / "thumbs"
        for d in (self.collections, self.meta, self.staging, self.keys_dir, self.locks_dir, self.thumbs):
            d.mkdir(parents=True, exist_ok=True)
        self.hook = hook
        self.on_processed = on_processed
        self.block_size = block_size
        # As strings: the per-request path building below runs on every request.
        self._collections, self._meta, self._staging = str(self.collections), str(self.meta), str(self.staging)
        self._meta_cache: dict[str, tuple[tuple[int, int, int], dict[str, Any]]] = {}
        self._records: dict[bytes, dict[str, Any]] = {}
        self._entries: dict[str, tuple[tuple[int, int, int, int], Entry, bytes | None]] = {}
        self._free_seen = (-FREE_SPACE_SECONDS, 0)  # (monotonic time, free bytes) of the last look (see begin_upload)
        self.records_in_xattrs = _xattrs_work(self._staging)
        if not self.records_in_xattrs:
            log.warning("%s: no user extended attributes here; records are kept in meta/ files", self.root)

    def _replace_file(self, path: str, data: bytes) -> os.stat_result:
        """Replace a record, property file or thumbnail at `path` (not fsynced: it can be rebuilt or re-sent).

        The bytes are written first under staging/: a crash before the rename
        leaves them there, where the start-up sweep finds them unlocked
        (atomic_write_bytes holds them flock'ed while it writes) and removes
        them, as it removes a crashed upload.
        """
        return atomic_write_bytes(path, data, self.staging, durable=False)

    # --- start-up and collections -------------------------------------------

    def sweep_staging(self) -> int:
        """Delete uploads and temporary files left by a crash; those of a live writer (any process) stay.

        An upload's files share an id (its .part file and the hook's output);
        the .part is flock'ed by its writer until commit or abort; the
        store's other temporary files (.tmp: records, thumbnails) are
        flock'ed while written. Only those found unlocked are removed, and
        with the lock held (files.remove_unless_locked), so an upload another
        process or node starts while this runs is never touched. Files of no
        upload at all are removed once they are an hour old. Runs at start,
        after a serving process is lost, and every staging_sweep_interval.
        """
        orphans: set[str] = set()
        uploads: set[str] = set()
        removed = 0
        for entry in os.scandir(self.staging):
            if not entry.name.endswith((".part", ".tmp")):
                continue
            upload_id = entry.name.split(".")[0]
            uploads.add(upload_id)
            if remove_unless_locked(entry.path):
                orphans.add(upload_id)
                removed += 1
        stale_before = time.time() - 3600
        for entry in os.scandir(self.staging):
            upload_id = entry.name.split(".")[0]
            if entry.name.endswith((".part", ".tmp")):
                continue  # locked above, or written since
            if upload_id in orphans or (upload_id not in uploads and _mtime(entry) < stale_before):
                with ignore_missing:
                    os.unlink(entry.path)
                    removed += 1
        if removed:
            log.info("swept %d leftover staging file(s)", removed)
        return removed

    def ensure_collection(self, cid: str) -> None:
        """Make a key's collection (and its metadata folder) if missing, durably: the key is durable too."""
        for folder in (self.collections / cid, self.meta / cid):
            with contextlib.suppress(FileExistsError):
                mkdir_durable(folder)

    def remove_collection(self, cid: str) -> None:
        """Remove a key's collection with its metadata and thumbnails, durably: purged photos must
        not come back after a power cut, under no key to reach or remove them."""
        for path in (self.collections / cid, self.meta / cid, self.thumbs / cid):
            shutil.rmtree(path, ignore_errors=True)
        with ignore_missing:
            os.unlink(self.meta / f"{cid}.p")
        for parent in (self.collections, self.meta, self.thumbs):
            fsync_dir(parent)

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    def _recent_free_bytes(self) -> int:
        """free_bytes as of at most FREE_SPACE_SECONDS ago: a statfs is a round trip to the monitors on CephFS.

        Good enough to refuse a body that cannot fit before it is sent; a
        disk that fills meanwhile is still answered 507 (ENOSPC) as it fills.
        """
        seen, free = self._free_seen
        now = time.monotonic()
        if now - seen > FREE_SPACE_SECONDS:
            free = self.free_bytes()
            self._free_seen = (now, free)
        return free

    def usage(self, cid: str) -> tuple[int, int]:
        """(number of files, bytes stored) of a collection."""
        files = size = 0
        for dirpath, _dirs, names in os.walk(self.collections / cid):
            for name in names:
                try:
                    st = os.lstat(os.path.join(dirpath, name))
                except FileNotFoundError:
                    continue
                if stat_mod.S_ISREG(st.st_mode):
                    files += 1
                    size += st.st_size
        return files, size

    # --- path mapping --------------------------------------------------------

    def _data_path(self, cid: str, parts: list[str]) -> str:
        return "/".join((self._collections, cid, *parts))

    def _meta_base(self, cid: str, parts: list[str]) -> str:
        """Metadata path stem of an entry: parents get '.d', the entry itself a suffix later."""
        if not parts:
            return f"{self._meta}/{cid}"
        return "/".join((self._meta, cid, *(p + ".d" for p in parts[:-1]), parts[-1]))

    def _walk(self, cid: str, parts: list[str]) -> tuple[str, os.stat_result | None]:
        """(path, lstat of it or None) after checking no component is a symlink.

        The data directory itself is resolved at start, so only the components
        inside the collection are looked at: never follow a symlink, wherever
        it points. Cheaper than os.path.realpath, which stats every component
        from the file-system root.
        """
        path = f"{self._collections}/{cid}"
        st = self._lstat(path)
        for part in parts:
            if st is None:  # the rest does not exist either
                return self._data_path(cid, parts), None
            if stat_mod.S_ISLNK(st.st_mode):
                raise refusals.OutsideCollection("path leads through a symlink")
            path = f"{path}/{part}"
            st = self._lstat(path)
        if st is not None and stat_mod.S_ISLNK(st.st_mode):
            raise refusals.OutsideCollection("path leads through a symlink")
        return path, st

    def _resolve(self, cid: str, rel: str) -> tuple[list[str], str]:
        parts = split_path(rel)
        return parts, self._walk(cid, parts)[0]

    def _lstat(self, path: str) -> os.stat_result | None:
        try:
            return os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None

    # --- reading -------------------------------------------------------------

    def _read_meta(
        self, cid: str, parts: list[str], st: os.stat_result, where: str | int, meta_path: str | None = None
    ) -> dict[str, Any] | None:
        """The record describing the data file with stat `st`, or None.

        `where` is the data file's path or an open descriptor of it. The
        record is an extended attribute of the file itself (RECORD_ATTR), so
        data and record are replaced by one rename and never disagree; its
        size check (records.describes) guards a lookup by name racing an
        overwrite. Parsed
        records are cached by their bytes: a getxattr replaces the parse.
        A file written by an earlier version (or on a file system without
        user xattrs) has its record in a `.m` file instead (`meta_path`,
        when the caller already knows it).
        """
        return self._record(cid, parts, st, where, meta_path)[0]

    def _record(
        self, cid: str, parts: list[str], st: os.stat_result, where: str | int, meta_path: str | None = None
    ) -> tuple[dict[str, Any] | None, bytes | None]:
        """_read_meta's record, and its bytes if it came from the data file's own attribute (see _entry)."""
        try:
            if isinstance(where, int):
                raw = os.getxattr(where, RECORD_ATTR)
            else:
                raw = os.getxattr(where, RECORD_ATTR, follow_symlinks=False)
        except OSError as exc:
            if exc.errno in (errno.ENODATA, errno.ENOTSUP):
                return self._read_meta_file(cid, parts, st, meta_path), None
            return None, None
        meta = self._records.get(raw)
        if meta is None:
            try:
                meta = unpack_record(raw)
            except ValueError as exc:
                log.warning("%s/%s: unreadable record: %s", cid, "/".join(parts), exc)
                return None, None
            if len(self._records) >= META_CACHE_SIZE:
                self._records.clear()
            self._records[raw] = meta
        return (meta, raw) if describes(meta, st) else (None, None)

    def _read_meta_file(
        self, cid: str, parts: list[str], st: os.stat_result, path: str | None = None
    ) -> dict[str, Any] | None:
        """The record in a `.m` file (see _read_meta), or None.

        The parsed record is cached by the identity of the metadata file
        (inode, mtime, size: every write replaces it with a new file), so a
        stat replaces the read and parse. Keying on the data file's inode
        alone would not do: inode numbers are reused, and a deleted file's
        record would be taken for a new file that got its number.
        """
        path = path or self._meta_base(cid, parts) + ".m"
        try:
            meta_st = os.stat(path)
        except OSError:
            return None
        cached = self._meta_cache.get(path)
        if cached is not None and cached[0] == file_identity(meta_st):
            meta = cached[1]
        else:
            try:
                with open(path, "rb") as fh:
                    meta = json.loads(fh.read())
            except (OSError, ValueError):
                return None
            self._cache_meta(path, meta_st, meta)
        if meta.get("ino") != st.st_ino or meta.get("stored_size") != st.st_size:
            prev = meta.get("prev")  # a reader of the version being replaced right now
            if prev and prev.get("ino") == st.st_ino and prev.get("stored_size") == st.st_size:
                return prev
            return None
        return meta

    def _cache_meta(self, path: str, meta_st: os.stat_result, meta: dict[str, Any]) -> None:
        """Keep a parsed record under the identity of its file (see _read_meta)."""
        if len(self._meta_cache) >= META_CACHE_SIZE:
            self._meta_cache.clear()
        self._meta_cache[path] = (file_identity(meta_st), meta)

    def _entry(
        self, cid: str, parts: list[str], st: os.stat_result, where: str | int, meta_path: str | None = None
    ) -> Entry:
        """The entry of a file or folder with stat `st`; `where` is its path or an open descriptor.

        A file's entry found by path is kept with the stat it was made from
        and given again while the file's inode, change time, modification
        time and size are the same: its record is an attribute of that
        inode, and setting it changes the change time. A listing of a folder
        where one file changed then reads one record, not one per member
        (a getxattr and a parse were 5 of the 7 us per member). See
        _kept_entry for a file changed within the last clock tick.
        """
        if stat_mod.S_ISDIR(st.st_mode):
            name = parts[-1] if parts else ""
            return Entry(name, True, 0, st.st_mtime, st.st_ctime, None, ino=st.st_ino, ctime_ns=st.st_ctime_ns)
        identity = stat_identity(st)
        if isinstance(where, str) and (kept := self._kept_entry(where, identity)) is not None:
            return kept
        return self._made_entry(cid, parts, st, where, identity, meta_path)

    def _made_entry(
        self,
        cid: str,
        parts: list[str],
        st: os.stat_result,
        where: str | int,
        identity: tuple[int, int, int, int],
        meta_path: str | None = None,
    ) -> Entry:
        """A file's entry made from its record, and kept (by path) for _kept_entry."""
        meta, raw = self._record(cid, parts, st, where, meta_path)
        entry = file_entry(parts[-1], st, meta)
        # A `.m` record can change apart from the inode, and a record that did not describe the
        # file (vanished, or being replaced) is nothing to keep.
        if isinstance(where, str) and raw is not None:
            if len(self._entries) >= ENTRY_CACHE_SIZE:
                self._entries.clear()
            self._entries[where] = (identity, entry, None if settled(identity[1:3], time.time_ns()) else raw)
        return entry

    def _kept_entry(self, path: str, identity: tuple[int, int, int, int]) -> Entry | None:
        """The entry kept for the file at `path` (see _entry) if it was made from a stat of this identity.

        An entry kept before its times settled (uss_dav.files.settled) is
        checked against the record once more: a file that replaced it within
        the same clock tick, on an inode number freed and handed out again,
        could show the same stat, but not the same record (its SHA-1 and
        sizes) unless it is the same bytes. The first check after its times
        settle lets later ones trust the stat alone. Under the mixed load
        a tenth of a listed folder is that recent, and a getxattr is less
        than half of making its entry again.
        """
        known = self._entries.get(path)
        if known is None or known[0] != identity:
            return None
        if known[2] is None:
            return known[1]
        try:
            raw = os.getxattr(path, RECORD_ATTR, follow_symlinks=False)
        except OSError:
            return None
        if raw != known[2]:
            return None
        if settled(identity[1:3], time.time_ns()):
            self._entries[path] = (identity, known[1], None)
        return known[1]

    def stat(self, cid: str, rel: str) -> Entry | None:
        """The entry at `rel`, or None if there is none (symlinks and devices count as none)."""
        parts = split_path(rel)
        try:
            path, st = self._walk(cid, parts)
        except refusals.OutsideCollection:
            return None
        if st is None or not (stat_mod.S_ISREG(st.st_mode) or stat_mod.S_ISDIR(st.st_mode)):
            return None
        return self._entry(cid, parts, st, path)

    def list_names(self, cid: str, rel: str) -> list[str]:
        """Names of the regular files and folders in a folder; symlinks are never listed."""
        _parts, path = self._resolve(cid, rel)
        names = []
        with os.scandir(path) as it:
            for entry in it:
                if entry.is_file(follow_symlinks=False) or entry.is_dir(follow_symlinks=False):
                    names.append(entry.name)
        return sorted(names)

    def list_entries(self, cid: str, rel: str) -> list[Entry]:
        """The files and folders in a folder, sorted by name; symlinks are never listed.

        The folder is read through a descriptor, so each member is stat'ed
        by name within it instead of by its whole path (a fifth of a
        100-member listing's stat time).
        """
        base, path = self._resolve(cid, rel)
        meta_dir = os.path.dirname(self._meta_base(cid, [*base, "x"]))
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError as exc:
            st = self._lstat(path) if exc.errno in (errno.ELOOP, errno.ENOTDIR) else None
            if st is not None and stat_mod.S_ISLNK(st.st_mode):  # made a symlink since the walk
                raise refusals.OutsideCollection("path leads through a symlink") from None
            raise
        entries = []
        try:
            with os.scandir(fd) as it:
                for item in it:
                    try:
                        st = item.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    name = item.name
                    if stat_mod.S_ISREG(st.st_mode):
                        # Most members of a listed folder are as they were: their kept entry,
                        # found before anything else _made_entry needs is built.
                        member = f"{path}/{name}"
                        identity = stat_identity(st)
                        kept = self._kept_entry(member, identity)
                        if kept is None:
                            kept = self._made_entry(cid, [*base, name], st, member, identity, f"{meta_dir}/{name}.m")
                        entries.append(kept)
                    elif stat_mod.S_ISDIR(st.st_mode):
                        entries.append(self._entry(cid, [*base, name], st, f"{path}/{name}"))
        finally:
            os.close(fd)
        entries.sort(key=lambda e: e.name)
        return entries

    def names_with_props(self, cid: str, rel: str) -> set[str]:
        """Names of the members of a folder that have dead properties (one directory read)."""
        folder = os.path.dirname(self._meta_base(cid, [*split_path(rel), "x"]))
        try:
            with os.scandir(folder) as it:
                return {e.name[:-2] for e in it if e.name.endswith(".p")}
        except (FileNotFoundError, NotADirectoryError):
            return set()

    def open(self, cid: str, rel: str) -> Opened | None:
        """The file at `rel`, opened, with the entry of exactly the bytes opened; None if absent.

        Size and ETag come from the open file, not from an earlier look-up, so
        a reader racing an overwrite gets one whole version, described truly.
        """
        parts = split_path(rel)
        if not parts:
            return None
        try:
            folder, folder_st = self._walk(cid, parts[:-1])
        except refusals.OutsideCollection:
            return None
        if folder_st is None:
            return None
        try:
            # O_NOFOLLOW: the last component is no symlink either; O_NONBLOCK: a FIFO
            # put there by hand does not hang the open (and is refused below).
            fd = os.open(f"{folder}/{parts[-1]}", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:  # absent, a symlink, or not a folder on the way
            return None
        st = os.fstat(fd)
        if not stat_mod.S_ISREG(st.st_mode):
            os.close(fd)
            return None
        fh = os.fdopen(fd, "rb", buffering=0)
        return Opened(rel, self._entry(cid, parts, st, fd), fh, self.hook)

    def open_read(self, cid: str, rel: str) -> IO[bytes]:
        """A readable, seekable stream of exactly the bytes GET returns."""
        opened = self.open(cid, rel)
        if opened is None:
            raise refusals.NotFound(rel)
        return opened.stream()

    # --- writing -------------------------------------------------------------

    def begin_upload(self, cid: str, rel: str, *, max_bytes: int = 0, declared: int | None = None) -> Upload:
        """Start staging a body for `rel`; writes past `max_bytes` (if set) raise TooLarge.

        A body `declared` larger than the file system's free space is refused
        at once (NoRoom), before the client sends it only to meet a full disk.
        """
        if declared and declared > (free := self._recent_free_bytes()):
            raise refusals.NoRoom(f"{declared} bytes do not fit: the server's disk has {free} free")
        parts = split_path(rel)
        if not parts:
            raise refusals.IsAFolder("the collection root is a folder")
        folder, parent = self._walk(cid, parts[:-1])
        if parent is None or not stat_mod.S_ISDIR(parent.st_mode):
            raise refusals.ParentMissing("parent folder does not exist")
        st = self._lstat(f"{folder}/{parts[-1]}")
        if st is not None and stat_mod.S_ISLNK(st.st_mode):
            raise refusals.OutsideCollection("path leads through a symlink")
        if st is not None and stat_mod.S_ISDIR(st.st_mode):
            raise refusals.IsAFolder("a folder has that name")
        return Upload(self._staging, cid, parts, max_bytes)

    def check_quota(self, cid: str, rel: str, new_size: int, quota: Quota) -> None:
        """Raise refusals.QuotaExceeded if storing `new_size` bytes at `rel` would pass the quota."""
        if not quota:
            return
        files, used = self.usage(cid)
        current = self.stat(cid, rel)
        replaced = current.stored_size if current and not current.is_dir else 0
        if quota.bytes and used - replaced + new_size > quota.bytes:
            raise refusals.QuotaExceeded(f"quota of {quota.bytes} bytes would be exceeded ({used} used)")
        if quota.files and current is None and files + 1 > quota.files:
            raise refusals.QuotaExceeded(f"quota of {quota.files} files reached")

    def abort(self, upload: Upload) -> None:
        """Let go of an upload: its staged file is removed, unless a commit renamed it into place."""
        upload.release()
        if not upload.placed:
            with ignore_missing:
                os.unlink(upload.path)

    def commit(
        self,
        upload: Upload,
        *,
        mode: str = "off",
        expected_length: int | None = None,
        create_only: bool = False,
        checksum: str | None = None,
        mtime: float | None = None,
        quota: Quota = Quota(),
        images_only: bool | None = None,
    ) -> Entry:
        """Compress, describe and rename a finished upload into place; return the new entry.

        `create_only` makes the rename fail with refusals.AlreadyExists if the name was
        taken meanwhile (If-None-Match: * with two racing writers). `checksum`
        is an OC-Checksum header to verify; `mtime` the modification time the
        file appears with; `images_only` overrides the hook's setting (the
        REST API takes decodable images only).
        """
        try:
            upload.close()
            if expected_length is not None and upload.length != expected_length:
                raise refusals.IncompleteBody(f"received {upload.length} of {expected_length} bytes")
            if checksum:
                check_checksum(checksum, upload.sha1(), upload.md5)
            return self._install(upload, mode, create_only, mtime, quota, images_only)
        finally:
            self.abort(upload)

    def _install(
        self,
        upload: Upload,
        mode: str,
        create_only: bool,
        mtime: float | None,
        quota: Quota,
        images_only: bool | None,
    ) -> Entry:
        sha1, md5 = upload.sha1(), None  # MD5 when first asked (see md5)
        data_path, encoding, info = upload.path, "identity", {}
        if self.hook is not None and upload.length:
            outcome = self.hook.process(upload.path, mode, images_only=images_only)
            if self.on_processed is not None:
                self.on_processed(upload.path, outcome)
            if outcome.format:
                log.info("%s/%s: %s", upload.cid, "/".join(upload.parts), outcome.reason)
            info = {"format": outcome.format, "width": outcome.width, "height": outcome.height, "mode": mode}
            if outcome.stored_path:
                data_path, encoding = outcome.stored_path, outcome.encoding
                if encoding == "identity":
                    sha1 = file_digest(data_path, "sha1")
                else:
                    # GET rebuilds these bytes: hashing the upload now costs far less than a rebuild later.
                    md5 = upload.md5()
        stored = os.stat(data_path)
        # In exact mode GET rebuilds the upload, so size and checksums stay the upload's.
        size = upload.length if encoding != "identity" else stored.st_size
        self.check_quota(upload.cid, "/".join(upload.parts), stored.st_size, quota)
        if mtime is not None:
            os.utime(data_path, (mtime, mtime))
            stored = os.stat(data_path)
        try:
            return self._rename_in(upload, data_path, stored, size, sha1, md5, encoding, info, create_only)
        finally:
            if data_path != upload.path:
                with ignore_missing:
                    os.unlink(data_path)

    def _rename_in(
        self,
        upload: Upload,
        data_path: str,
        st: os.stat_result,
        size: int,
        sha1: str,
        md5: str | None,
        encoding: str,
        info: dict[str, Any],
        create_only: bool,
    ) -> Entry:
        cid, parts = upload.cid, upload.parts
        meta = {
            "ino": st.st_ino,
            "stored_size": st.st_size,
            "size": size,
            "uploaded_size": upload.length,
            "sha1": sha1,
            "md5": md5,
            "encoding": encoding,
            **info,
        }
        # Only the file that is stored needs to reach the disk (not an upload
        # the hook replaced with a smaller file), with its record.
        if data_path == upload.path:
            self._seal(upload.fileno(), meta)
        else:
            fd = os.open(data_path, os.O_RDONLY)
            try:
                self._seal(fd, meta)
            finally:
                os.close(fd)
        target = self._data_path(cid, parts)
        with self._naming_locks(cid, parts):
            replaced = self._place(cid, parts, data_path, target, meta, create_only)
        # Renamed in, the staged name is gone (a link for create_only leaves it to remove).
        upload.placed = data_path == upload.path and not create_only
        fsync_dir(os.path.dirname(target))
        if replaced != sha1:
            self.drop_thumbnails(cid, replaced)
        # The stat from before the rename: same inode, and the name may already
        # be gone again (a concurrent DELETE or MOVE).
        return file_entry(parts[-1], st, meta)

    def _seal(self, fd: int, meta: dict[str, Any]) -> None:
        """Set its record on a staged data file (where records are xattrs) and make both durable, before its rename."""
        if self.records_in_xattrs:
            os.setxattr(fd, RECORD_ATTR, pack_record(meta))
        os.fsync(fd)

    @contextlib.contextmanager
    def _naming_locks(self, cid: str, *names: list[str], wait: bool = True) -> Iterator[None]:
        """The naming locks of several names, each once, in one order (no deadlock); see flocked for `wait`."""
        paths = sorted({naming_lock_path(self._meta_base(cid, parts)) for parts in names})
        with contextlib.ExitStack() as stack:
            for path in paths:
                stack.enter_context(flocked(path, wait=wait))
            yield

    def _place(
        self, cid: str, parts: list[str], data_path: str, target: str, meta: dict[str, Any], create_only: bool
    ) -> str | None:
        """Rename the data (its record set on it) into place; return the SHA-1 of what it replaced."""
        st, current = self._current(cid, parts)
        replaced = current["sha1"] if current else None
        if st is None:
            self._drop_stale_props(cid, parts)
        if create_only:
            # Claim the name first: a loser must not overwrite the winner's record.
            try:
                os.link(data_path, target)
            except FileExistsError:
                raise refusals.AlreadyExists("the name was taken meanwhile") from None
            if not self.records_in_xattrs:
                self._write_meta(cid, parts, ".m", meta)
        else:
            self._rename_over(cid, parts, data_path, target, meta, current)
        return replaced

    def _rename_over(
        self, cid: str, parts: list[str], data_path: str, target: str, meta: dict[str, Any], current: dict[str, Any] | None
    ) -> None:
        """Rename a sealed data file over `target`, whose record is `current` (call under the naming lock).

        Where records are xattrs, the rename moves data and record at once,
        and a `.m` left by an earlier version goes. Otherwise the `.m` comes
        first, so a reader never sees new bytes with no record; the record
        being replaced rides along as "prev", so a reader still holding the
        old file until the rename finds its record too.
        """
        if self.records_in_xattrs:
            os.replace(data_path, target)
            if current is not None and "ino" in current:  # the record of an earlier version's file
                with ignore_missing:
                    os.unlink(self._meta_base(cid, parts) + ".m")
            return
        prev = {k: v for k, v in current.items() if k != "prev"} if current else None
        self._write_meta(cid, parts, ".m", {**meta, "prev": prev} if prev else meta)
        os.replace(data_path, target)

    def _current_meta(self, cid: str, parts: list[str]) -> dict[str, Any] | None:
        """The valid content record of the file now stored at `parts`, if any."""
        return self._current(cid, parts)[1]

    def _current(self, cid: str, parts: list[str]) -> tuple[os.stat_result | None, dict[str, Any] | None]:
        """(lstat, valid content record) of what is stored at `parts` now: (None, None) when nothing is."""
        path = self._data_path(cid, parts)
        st = self._lstat(path)
        if st is None or not stat_mod.S_ISREG(st.st_mode):
            return st, None
        return st, self._read_meta(cid, parts, st, path)

    def _write_meta(self, cid: str, parts: list[str], suffix: str, value: dict[str, Any]) -> None:
        path = self._meta_base(cid, parts) + suffix
        ensure_dir(os.path.dirname(path))
        st = self._replace_file(path, json.dumps(value, sort_keys=True).encode())
        if suffix == ".m":
            # The reader that follows (the new entry) need not read it back. Cached
            # records are shared by every reader and never changed once written.
            self._cache_meta(path, st, value)

    def md5(self, cid: str, rel: str, entry: Entry) -> str | None:
        """MD5 of the bytes GET returns for the file `entry` describes; None if it has no record or changed since.

        Uploads are hashed with SHA-1 only (the ETag): MD5 costs twice as
        much CPU here (730 against 1500 MB/s, a third of a 4 MiB PUT's), and
        only ownCloud-style checksum readers (rclone) and the REST API ask
        for it. The first of them has it computed from the bytes GET returns
        and kept in the record, so every later one reads it. (A file GET
        rebuilds gets its MD5 at upload, where hashing is cheaper than a
        rebuild.)
        """
        if entry.md5 or not entry.sha1:
            return entry.md5
        parts = split_path(rel)
        opened = self.open(cid, rel)
        if opened is None:
            return None
        try:
            if opened.entry.sha1 != entry.sha1:  # replaced meanwhile: these are other bytes
                return None
            if opened.entry.md5:
                return opened.entry.md5
            st = os.fstat(opened.fileno())
            meta = self._read_meta(cid, parts, st, opened.fileno())
            with opened.stream() as stream:
                md5 = stream_digest(stream, "md5")
        finally:
            opened.close()
        if meta is not None:
            self._update_record(cid, parts, st, meta, wait=False, md5=md5)
        return md5

    def _update_record(
        self, cid: str, parts: list[str], st: os.stat_result, meta: dict[str, Any], *, wait: bool = True, **changes: Any
    ) -> None:
        """Change fields of the record of the file with stat `st`, in place, unless the file changed meanwhile.

        The folder's listing stamp is told (see set_mtime), so a kept
        listing is rendered again with the new values. Without `wait`, a
        record whose naming lock another holds is left as it is: a reader
        filling in a value it computed (md5) must not queue behind writers,
        nor hang on a lock that ceph-fuse kept for a process killed while
        holding it (seen: a PROPFIND waited over 60 s); a later reader
        fills it in.
        """
        target = self._walk(cid, parts)[0]
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(self._naming_locks(cid, parts, wait=wait))
            except BlockingIOError:
                return
            if not self._unchanged(cid, parts, target, st, meta):
                return
            try:
                if self.records_in_xattrs:
                    record = pack_record({**meta, **changes, "stored_size": st.st_size})
                    os.setxattr(target, RECORD_ATTR, record, follow_symlinks=False)
                else:
                    self._write_meta(cid, parts, ".m", {**meta, **changes})
                self._touch_folder_meta(cid, parts)
            except FileNotFoundError:
                pass  # deleted meanwhile (a DELETE takes no naming lock): nothing left to describe

    def create_empty(self, cid: str, rel: str) -> Entry:
        """An empty file at an unmapped name (LOCK-null resources, Finder and Office)."""
        return self.commit(self.begin_upload(cid, rel), create_only=True)

    def mkdir(self, cid: str, rel: str) -> None:
        """Make a folder, durable before the answer as a PUT's file is: a power cut must
        not take away a folder a client was told exists (tests/test_power_loss.py)."""
        parts, path = self._resolve(cid, rel)
        try:
            mkdir_durable(path)
        except FileExistsError:
            raise refusals.AlreadyExists("a file or folder has that name") from None
        except FileNotFoundError:
            raise refusals.ParentMissing("parent folder does not exist") from None
        self._drop_stale_props(cid, parts)

    def _drop_stale_props(self, cid: str, parts: list[str]) -> None:
        """A new name starts with no dead properties: a DELETE cut short (kill -9, power) between
        removing a file and its properties must not hand them to the next file of that name."""
        with ignore_missing:
            os.unlink(self._meta_base(cid, parts) + ".p")

    def set_mtime(self, cid: str, rel: str, seconds: float) -> None:
        parts, path = self._resolve(cid, rel)
        os.utime(path, (seconds, seconds), follow_symlinks=False)
        self._touch_folder_meta(cid, parts)

    def _touch_folder_meta(self, cid: str, parts: list[str]) -> None:
        """Mark the folder of `parts` as changed where its listing stamp sees it.

        Changing a file's times leaves its folder's mtime alone, so the change
        is recorded on the folder's metadata directory instead (see listing_stamp).
        """
        if not parts:
            return
        folder = os.path.dirname(self._meta_base(cid, parts))
        os.makedirs(folder, exist_ok=True)
        os.utime(folder)

    def listing_stamp(self, cid: str, rel: str) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
        """(inode, ctime) of a folder's metadata directory and of its own dead properties.

        With the folder's own stat (entries added, removed or renamed) this
        says whether its listing may have changed: every record, property
        file and time change of a member lands in the metadata directory
        (written by rename, or touched by set_mtime), whichever process
        made it. A file rewritten in place behind the store's back is not
        seen; the store never does that.
        """
        parts = split_path(rel)
        stamps = []
        for path in (os.path.dirname(self._meta_base(cid, [*parts, "x"])), self._meta_base(cid, parts) + ".p"):
            st = self._lstat(path)
            stamps.append(None if st is None else (st.st_ino, st.st_ctime_ns))
        return stamps[0], stamps[1]

    def folder_stamps(self, cid: str, rel: str, names: Iterable[str]) -> list[tuple[int, int] | None]:
        """(inode, ctime) of each named sub-folder of the folder at `rel`; None where it is not one now."""
        try:
            path, st = self._walk(cid, split_path(rel))
        except refusals.OutsideCollection:
            st = None
        stamps: list[tuple[int, int] | None] = []
        for name in names:
            sub = self._lstat(f"{path}/{name}") if st is not None else None
            stamps.append((sub.st_ino, sub.st_ctime_ns) if sub is not None and stat_mod.S_ISDIR(sub.st_mode) else None)
        return stamps

    def delete(self, cid: str, rel: str) -> None:
        """Remove a file, or a folder with everything in it, and their metadata.

        The removal is durable before the answer (the folder that held it is
        fsynced): a photo deleted must not come back after a power cut. It
        cost 1% of the mixed load at 1 client and 4% at 8 (the load is 10%
        DELETEs; `--baseline`, same run).
        """
        parts, path = self._resolve(cid, rel)
        if not parts:
            raise refusals.InvalidPath("the collection root cannot be deleted")
        st = self._lstat(path)
        if st is None:
            raise refusals.NotFound(rel)
        try:
            if stat_mod.S_ISDIR(st.st_mode):
                shutil.rmtree(path)
            else:
                current = self._current_meta(cid, parts)
                os.unlink(path)
                self.drop_thumbnails(cid, current["sha1"] if current else None)
        except FileNotFoundError:
            raise refusals.NotFound(rel) from None  # a concurrent DELETE or MOVE won
        fsync_dir(os.path.dirname(path))
        self._drop_meta(cid, parts)

    def _drop_meta(self, cid: str, parts: list[str]) -> None:
        base = self._meta_base(cid, parts)
        shutil.rmtree(base + ".d", ignore_errors=True)
        for suffix in (".m", ".p"):
            with ignore_missing:
                os.unlink(base + suffix)

    def move(self, cid: str, src: str, dst: str, *, replace: bool = True) -> None:
        """Rename a file or folder (with its metadata).

        An existing file at dst is replaced in the one rename, and its
        metadata and thumbnails go with it, as a delete would take them;
        with replace=False (files only) the rename fails with
        refusals.AlreadyExists instead, atomically.
        """
        src_parts, src_path = self._resolve(cid, src)
        dst_parts, dst_path = self._resolve(cid, dst)
        if not src_parts or not dst_parts:
            raise refusals.InvalidPath("the collection root cannot be moved")
        if self._lstat(os.path.dirname(dst_path)) is None:
            raise refusals.ParentMissing("destination folder does not exist")
        with self._naming_locks(cid, src_parts, dst_parts):
            self._move_locked(cid, src, src_parts, src_path, dst_parts, dst_path, replace)
        # The new name first: a cut between the two fsyncs leaves both names, never neither.
        # Without the source folder's, ext4 with no journal gave the old name back too.
        fsync_dir(os.path.dirname(dst_path))
        if os.path.dirname(src_path) != os.path.dirname(dst_path):
            fsync_dir(os.path.dirname(src_path))

    def _move_locked(
        self,
        cid: str,
        src: str,
        src_parts: list[str],
        src_path: str,
        dst_parts: list[str],
        dst_path: str,
        replace: bool,
    ) -> None:
        replaced = self._current_meta(cid, dst_parts) if replace else None
        try:
            if replace:
                os.replace(src_path, dst_path)
            else:
                os.link(src_path, dst_path, follow_symlinks=False)  # fails if dst exists
                os.unlink(src_path)
        except FileNotFoundError:
            raise refusals.NotFound(src) from None
        except OSError as exc:
            if exc.errno in (errno.EISDIR, errno.ENOTDIR, errno.ENOTEMPTY, errno.EEXIST, errno.EPERM):
                raise refusals.AlreadyExists("destination exists") from None
            raise
        self._drop_meta(cid, dst_parts)
        src_base, dst_base = self._meta_base(cid, src_parts), self._meta_base(cid, dst_parts)
        os.makedirs(os.path.dirname(dst_base), exist_ok=True)
        for suffix in (".m", ".p", ".d"):
            with ignore_missing:
                os.replace(src_base + suffix, dst_base + suffix)
        if replaced is not None:
            moved = self._current_meta(cid, dst_parts)
            if moved is None or moved["sha1"] != replaced["sha1"]:
                self.drop_thumbnails(cid, replaced["sha1"])

    def copy_file(self, cid: str, src: str, dst: str) -> Entry:
        """Copy one file (bytes, metadata and dead properties) atomically over dst."""
        src_parts, src_path = self._resolve(cid, src)
        upload = self.begin_upload(cid, dst)
        try:
            with open(src_path, "rb") as fh:
                upload.copy_from(fh, self.block_size)
            upload.close()
            src_st = os.stat(src_path)
            meta = self._read_meta(cid, src_parts, src_st, src_path)
            if meta is None:
                sha1 = file_digest(upload.path, "sha1")
                meta = {"size": src_st.st_size, "sha1": sha1, "md5": None, "encoding": "identity"}
            info = {k: v for k, v in meta.items() if k in ("format", "width", "height", "uploaded_size", "mode")}
            entry = self._rename_in(
                upload,
                upload.path,
                os.stat(upload.path),
                meta["size"],
                meta["sha1"],
                meta["md5"],
                meta.get("encoding", "identity"),
                info,
                create_only=False,
            )
            # Times only: shutil.copystat would copy the source's record over the copy's.
            os.utime(self._data_path(cid, upload.parts), ns=(src_st.st_atime_ns, src_st.st_mtime_ns))
            self._touch_folder_meta(cid, upload.parts)
        finally:
            self.abort(upload)
        self.write_props(cid, dst, self.read_props(cid, src))
        return entry

    def copy_folder(self, cid: str, src: str, dst: str) -> None:
        """Create dst as a folder (if needed) with src's dead properties; members are copied one by one."""
        try:
            self.mkdir(cid, dst)
        except refusals.AlreadyExists:
            pass
        self.write_props(cid, dst, self.read_props(cid, src))

    # --- thumbnails ----------------------------------------------------------
