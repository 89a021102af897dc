"""Every byte written under the data directory goes through this module.

Layout of a data directory::

    keys/<sha256 of key>.json     key records (uss_dav.keys)
    collections/<cid>/...         each collection's files, served as its WebDAV root
    meta/<cid>/...                per-entry metadata, a tree parallel to the collection:
                                  <name>.m  content metadata of a file (checksums, encoding)
                                  <name>.p  dead properties of a file or folder
                                  <name>.d/ the metadata of a folder's members
    meta/<cid>.p                  dead properties of the collection root
    staging/                      uploads in progress and the store's other temporary
                                  files; never listed, swept at start
    thumbs/<cid>/<sha1>-<size>.*  thumbnails, keyed by the content they show

Writes are staged in staging/, fsynced, passed through the write hook,
described by a metadata file and renamed into place, so a reader or a crash
never sees half a file. The metadata records the inode and size of the data
file it describes: a stale record (another writer won a race, a crash came
between the two renames, a file was copied in by hand) is detected and
ignored rather than believed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import json
import logging
import os
import queue
import secrets
import shutil
import stat as stat_mod
import threading
import time
import unicodedata
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NamedTuple, Protocol

log = logging.getLogger(__name__)

_ignore_missing = contextlib.suppress(FileNotFoundError)

#: Longest name (UTF-8 bytes) of a file or folder: leaves room for the
#: two-character metadata suffix under the usual 255-byte file-system limit.
MAX_NAME_BYTES = 250
#: Content-metadata records kept in memory (a few hundred bytes each).
META_CACHE_SIZE = 200_000


class StorageError(Exception):
    """Base of the errors below; the front ends map each to one HTTP status."""


class InvalidPath(StorageError):
    """The path has a segment we never store ('..', NUL, backslash, too long)."""


class OutsideCollection(StorageError):
    """The path resolves through a symlink: it could lead out of the collection."""


class NotFound(StorageError):
    pass


class ParentMissing(StorageError):
    """The parent folder of the target does not exist (HTTP 409)."""


class AlreadyExists(StorageError):
    pass


class IsAFolder(StorageError):
    pass


class IncompleteBody(StorageError):
    """The client sent fewer bytes than it announced (it went away mid-upload)."""


class TooLarge(StorageError):
    """The body passed the upload size limit."""


class QuotaExceeded(StorageError):
    """The write would take the collection over its quota."""


@dataclass(frozen=True)
class Quota:
    """A collection's limits; 0 means unlimited."""

    bytes: int = 0
    files: int = 0

    def __bool__(self) -> bool:
        return bool(self.bytes or self.files)


class ChecksumMismatch(StorageError):
    """The body does not match the checksum the client sent with it."""


def check_checksum(header: str, sha1: str, md5: str) -> None:
    """Verify an ownCloud-style `OC-Checksum: SHA1:<hex>` (or MD5:, ADLER32: ignored)."""
    for token in header.split():
        algorithm, _, value = token.partition(":")
        expected = {"sha1": sha1, "md5": md5}.get(algorithm.lower())
        if expected is not None and value.lower() != expected:
            raise ChecksumMismatch(f"body does not match OC-Checksum {algorithm.upper()}")


class WriteHook(Protocol):
    """What storage needs of the image compressor (hooks.ImageCompressor)."""

    def process(self, path: str, mode: str, *, images_only: bool | None = None) -> Any: ...

    def restore_data(self, data: bytes, encoding: str) -> bytes: ...


class Entry(NamedTuple):
    """A file or folder as clients see it: size and ETag describe what GET returns.

    A NamedTuple rather than a frozen dataclass: listings build thousands.
    """

    name: str
    is_dir: bool
    size: int
    mtime: float
    ctime: float
    etag: str | None
    sha1: str | None = None
    md5: str | None = None
    encoding: str = "identity"
    stored_size: int = 0
    uploaded_size: int | None = None
    format: str | None = None
    width: int | None = None
    height: int | None = None
    #: The data file's inode and inode-change time: together they change whenever anything about it does.
    ino: int = 0
    ctime_ns: int = 0


def _fsync_dir(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


#: Naming lock files per metadata folder: names hash onto them, so writers of
#: different names in one folder seldom wait for each other.
NAMING_LOCK_SLOTS = 16


def _naming_lock_path(meta_base: str) -> str:
    """The lock file that serialises record-and-rename of one name (shared by the names that hash alike).

    Without it two writers of one name interleave as record A, record B,
    rename B, rename A: A's bytes end up under B's record, which names
    another inode, so the file would lose its checksums until rewritten.
    """
    folder, name = os.path.split(meta_base)
    return f"{folder}/.lock-{zlib.crc32(name.encode('utf-8', 'surrogateescape')) % NAMING_LOCK_SLOTS:x}"


@contextlib.contextmanager
def flocked(path: str | os.PathLike[str], *, shared: bool = False) -> Iterator[int]:
    """A descriptor of `path` (created if need be), held under flock across processes and machines.

    Exclusive unless `shared`; the lock goes with the descriptor when the block ends.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield fd
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
    tmp = f"{os.fspath(staging)}/{secrets.token_hex(16)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # a live write: the start-up sweep leaves it alone
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if durable:
                os.fsync(fd)
            st = os.fstat(fd)
            os.replace(tmp, path)  # still locked: renamed or unlocked, never swept mid-write
        finally:
            os.close(fd)
    except BaseException:
        with _ignore_missing:
            os.unlink(tmp)
        raise
    if durable:
        _fsync_dir(os.path.dirname(path))
    return st


def _file_identity(st: os.stat_result) -> tuple[int, int, int]:
    """What changes whenever a file written by rename is replaced."""
    return st.st_ino, st.st_mtime_ns, st.st_size


def _file_entry(name: str, st: os.stat_result, meta: dict[str, Any] | None) -> Entry:
    """The entry of a file with stat `st` and its record (None: a file without one, such as one put there by hand)."""
    if meta is None:
        etag = f"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}"
        return Entry(
            name, False, st.st_size, st.st_mtime, st.st_ctime, etag,
            stored_size=st.st_size, ino=st.st_ino, ctime_ns=st.st_ctime_ns,
        )
    return Entry(
        name,
        False,
        meta["size"],
        st.st_mtime,
        st.st_ctime,
        meta["sha1"],
        sha1=meta["sha1"],
        md5=meta["md5"],
        encoding=meta.get("encoding", "identity"),
        stored_size=st.st_size,
        uploaded_size=meta.get("uploaded_size"),
        format=meta.get("format"),
        width=meta.get("width"),
        height=meta.get("height"),
        ino=st.st_ino,
        ctime_ns=st.st_ctime_ns,
    )


def ensure_dir(path: str) -> None:
    """os.makedirs(path, exist_ok=True), at one stat when the folder exists (the usual case)."""
    if not os.path.isdir(path):
        os.makedirs(path, exist_ok=True)


def is_apple_file(name: str) -> bool:
    """Finder's AppleDouble (._*) and folder-settings (.DS_Store) files: never images, never listed as such."""
    return name.startswith("._") or name == ".DS_Store"


def split_path(rel: str) -> list[str]:
    """The segments of a collection-relative path, in NFC; raise InvalidPath for names we never store."""
    # Stored in NFC, found whether the client sends NFC or NFD (macOS sends NFD).
    parts = [unicodedata.normalize("NFC", p) for p in rel.split("/") if p]
    for part in parts:
        if part in (".", "..") or "\x00" in part or "\\" in part:
            raise InvalidPath(f"invalid name {part!r}")
        try:
            encoded = part.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidPath("name is not valid UTF-8") from None
        if len(encoded) > MAX_NAME_BYTES:
            raise InvalidPath(f"name longer than {MAX_NAME_BYTES} bytes")
    return parts


class _Digests:
    """SHA-1 and MD5 of a body as it streams in.

    SHA-1 (three times MD5's speed here) runs inline; past the first few
    MiB, MD5 moves to a thread of its own, beside the socket reads, file
    writes and SHA-1 (all of which release the GIL): on a large upload one
    core does MD5 while the other receives. Both in one thread capped
    uploads at 1/(1/416 + 1/1283 MB/s) = 314 MB/s on this machine's cores.
    The queue between them is bounded, so memory stays flat.
    """

    INLINE = 4 * 1024 * 1024

    def __init__(self) -> None:
        self._sha1, self._md5 = hashlib.sha1(), hashlib.md5()
        self._seen = 0
        self._queue: queue.Queue[bytes | None] | None = None
        self._thread: threading.Thread | None = None

    def update(self, data: bytes) -> None:
        self._seen += len(data)
        self._sha1.update(data)
        if self._queue is None and self._seen <= self.INLINE:
            self._md5.update(data)
            return
        if self._queue is None:
            self._queue = queue.Queue(maxsize=8)
            self._thread = threading.Thread(target=self._run, name="upload-md5", daemon=True)
            self._thread.start()
        self._queue.put(data)

    def _run(self) -> None:
        assert self._queue is not None
        while (data := self._queue.get()) is not None:
            self._md5.update(data)

    def finish(self) -> tuple[str, str]:
        self.stop()
        return self._sha1.hexdigest(), self._md5.hexdigest()

    def stop(self) -> None:
        if self._thread is not None:
            assert self._queue is not None
            self._queue.put(None)
            self._thread.join()
            self._thread = None


class Upload:
    """A body being streamed into staging/; hashed as it arrives.

    File-like (write, writelines, close) so WsgiDAV's PUT can feed it directly.
    """

    def __init__(self, store: Store, cid: str, parts: list[str], max_bytes: int = 0) -> None:
        self.store, self.cid, self.parts, self.max_bytes = store, cid, parts, max_bytes
        self.path = str(store.staging / f"{secrets.token_hex(16)}.part")
        self._fh: IO[bytes] = open(self.path, "xb", buffering=0)
        # Held until commit or abort: the start-up sweep leaves locked files alone.
        fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX)
        self.length = 0
        self._digests = _Digests()
        self._final: tuple[str, str] | None = None

    def write(self, data: bytes) -> int:
        if self.max_bytes and self.length + len(data) > self.max_bytes:
            raise TooLarge(f"upload larger than the {self.max_bytes}-byte limit")
        self._fh.write(data)
        self._digests.update(data)
        self.length += len(data)
        return len(data)

    def writelines(self, chunks: Iterable[bytes]) -> None:
        for chunk in chunks:
            self.write(chunk)

    def close(self) -> None:
        """The body is complete; it stays staged until Store.commit (which fsyncs what it stores)."""

    def sync(self) -> None:
        """Flush the staged bytes to disk, through the handle that wrote them."""
        os.fsync(self._fh.fileno())

    def digests(self) -> tuple[str, str]:
        if self._final is None:
            self._final = self._digests.finish()
        return self._final

    def release(self) -> None:
        self._digests.stop()
        if not self._fh.closed:
            self._fh.close()


class Opened:
    """An open file and the entry that describes its bytes (see Store.open)."""

    def __init__(self, path: str, entry: Entry, fh: IO[bytes], hook: WriteHook | None) -> None:
        self.path, self.entry, self._fh, self._hook = path, entry, fh, hook

    def stream(self) -> IO[bytes]:
        """The bytes GET returns: the file itself, or the rebuilt original (exact mode)."""
        if self.entry.encoding == "identity":
            return self._fh
        with self._fh:
            if self._hook is None:
                raise StorageError(f"no hook to restore {self.entry.encoding}")
            return io.BytesIO(self._hook.restore_data(self._fh.read(), self.entry.encoding))

    def close(self) -> None:
        self._fh.close()


def _mtime(entry: os.DirEntry[str]) -> float:
    try:
        return entry.stat(follow_symlinks=False).st_mtime
    except FileNotFoundError:
        return float("inf")


def _hash_file(path: str, block_size: int) -> tuple[str, str]:
    sha1, md5 = hashlib.sha1(), hashlib.md5()
    with open(path, "rb") as fh:
        while chunk := fh.read(block_size):
            sha1.update(chunk)
            md5.update(chunk)
    return sha1.hexdigest(), md5.hexdigest()


class Store:
    """The data directory: collections, their metadata and staged uploads."""

    def __init__(self, data_dir: Path, *, hook: WriteHook | None = None, block_size: int = 1 << 20) -> None:
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
        self.block_size = block_size
        # As strings: the per-request path building below runs on every request.
        self._collections, self._meta = str(self.collections), str(self.meta)
        self._meta_cache: dict[str, tuple[tuple[int, int, int], dict[str, Any]]] = {}

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
        flock'ed while written. Only ids found unlocked are removed, so an
        upload another node starts while this runs is never touched. Files
        of no upload at all are removed once they are an hour old.
        """
        orphans: set[str] = set()
        uploads: set[str] = set()
        for entry in os.scandir(self.staging):
            if not entry.name.endswith((".part", ".tmp")):
                continue
            upload_id = entry.name.split(".")[0]
            uploads.add(upload_id)
            try:
                fd = os.open(entry.path, os.O_RDWR)  # NFS needs write access for an exclusive flock
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                orphans.add(upload_id)
            except BlockingIOError:
                pass
            finally:
                os.close(fd)
        removed = 0
        stale_before = time.time() - 3600
        for entry in os.scandir(self.staging):
            upload_id = entry.name.split(".")[0]
            if upload_id in orphans or (upload_id not in uploads and _mtime(entry) < stale_before):
                with _ignore_missing:
                    os.unlink(entry.path)
                    removed += 1
        if removed:
            log.info("swept %d leftover staging file(s)", removed)
        return removed

    def ensure_collection(self, cid: str) -> None:
        (self.collections / cid).mkdir(exist_ok=True)
        (self.meta / cid).mkdir(exist_ok=True)

    def remove_collection(self, cid: str) -> None:
        for path in (self.collections / cid, self.meta / cid, self.thumbs / cid):
            shutil.rmtree(path, ignore_errors=True)
        with _ignore_missing:
            os.unlink(self.meta / f"{cid}.p")

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

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
                raise OutsideCollection("path leads through a symlink")
            path = f"{path}/{part}"
            st = self._lstat(path)
        if st is not None and stat_mod.S_ISLNK(st.st_mode):
            raise OutsideCollection("path leads through a symlink")
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
        self, cid: str, parts: list[str], st: os.stat_result, path: str | None = None
    ) -> dict[str, Any] | None:
        """The content metadata describing the data file with stat `st`, or None.

        The parsed record is cached by the identity of the metadata file
        (inode, mtime, size: every write replaces it with a new file), so a
        stat replaces the read and parse, and a record written by any process
        is seen at once. Keying on the data file's inode alone would not do:
        inode numbers are reused, and a deleted file's record would be taken
        for a new file that got its number. `path` is the metadata file, when
        the caller already knows it.
        """
        path = path or self._meta_base(cid, parts) + ".m"
        try:
            meta_st = os.stat(path)
        except OSError:
            return None
        cached = self._meta_cache.get(path)
        if cached is not None and cached[0] == _file_identity(meta_st):
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
        self._meta_cache[path] = (_file_identity(meta_st), meta)

    def _entry(self, cid: str, parts: list[str], st: os.stat_result, meta_path: str | None = None) -> Entry:
        name = parts[-1] if parts else ""
        if stat_mod.S_ISDIR(st.st_mode):
            return Entry(name, True, 0, st.st_mtime, st.st_ctime, None, ino=st.st_ino, ctime_ns=st.st_ctime_ns)
        return _file_entry(name, st, self._read_meta(cid, parts, st, meta_path))

    def stat(self, cid: str, rel: str) -> Entry | None:
        """The entry at `rel`, or None if there is none (symlinks and devices count as none)."""
        parts = split_path(rel)
        try:
            _path, st = self._walk(cid, parts)
        except OutsideCollection:
            return None
        if st is None or not (stat_mod.S_ISREG(st.st_mode) or stat_mod.S_ISDIR(st.st_mode)):
            return None
        return self._entry(cid, parts, st)

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
        """The files and folders in a folder, sorted by name; symlinks are never listed."""
        base, path = self._resolve(cid, rel)
        meta_dir = os.path.dirname(self._meta_base(cid, [*base, "x"]))
        entries = []
        with os.scandir(path) as it:
            for item in it:
                try:
                    st = item.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if stat_mod.S_ISREG(st.st_mode) or stat_mod.S_ISDIR(st.st_mode):
                    meta_path = f"{meta_dir}/{item.name}.m"
                    entries.append(self._entry(cid, [*base, item.name], st, meta_path))
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
        except OutsideCollection:
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
        return Opened(rel, self._entry(cid, parts, st), fh, self.hook)

    def open_read(self, cid: str, rel: str) -> IO[bytes]:
        """A readable, seekable stream of exactly the bytes GET returns."""
        opened = self.open(cid, rel)
        if opened is None:
            raise NotFound(rel)
        return opened.stream()

    # --- writing -------------------------------------------------------------

    def begin_upload(self, cid: str, rel: str, *, max_bytes: int = 0) -> Upload:
        """Start staging a body for `rel`; writes past `max_bytes` (if set) raise TooLarge."""
        parts = split_path(rel)
        if not parts:
            raise IsAFolder("the collection root is a folder")
        folder, parent = self._walk(cid, parts[:-1])
        if parent is None or not stat_mod.S_ISDIR(parent.st_mode):
            raise ParentMissing("parent folder does not exist")
        st = self._lstat(f"{folder}/{parts[-1]}")
        if st is not None and stat_mod.S_ISLNK(st.st_mode):
            raise OutsideCollection("path leads through a symlink")
        if st is not None and stat_mod.S_ISDIR(st.st_mode):
            raise IsAFolder("a folder has that name")
        return Upload(self, cid, parts, max_bytes)

    def check_quota(self, cid: str, rel: str, new_size: int, quota: Quota) -> None:
        """Raise QuotaExceeded if storing `new_size` bytes at `rel` would pass the quota."""
        if not quota:
            return
        files, used = self.usage(cid)
        current = self.stat(cid, rel)
        replaced = current.stored_size if current and not current.is_dir else 0
        if quota.bytes and used - replaced + new_size > quota.bytes:
            raise QuotaExceeded(f"quota of {quota.bytes} bytes would be exceeded ({used} used)")
        if quota.files and current is None and files + 1 > quota.files:
            raise QuotaExceeded(f"quota of {quota.files} files reached")

    def abort(self, upload: Upload) -> None:
        upload.release()
        with _ignore_missing:
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

        `create_only` makes the rename fail with AlreadyExists if the name was
        taken meanwhile (If-None-Match: * with two racing writers). `checksum`
        is an OC-Checksum header to verify; `mtime` the modification time the
        file appears with; `images_only` overrides the hook's setting (the
        REST API takes decodable images only).
        """
        try:
            upload.close()
            if expected_length is not None and upload.length != expected_length:
                raise IncompleteBody(f"received {upload.length} of {expected_length} bytes")
            if checksum:
                check_checksum(checksum, *upload.digests())
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
        sha1, md5 = upload.digests()
        data_path, encoding, info = upload.path, "identity", {}
        if self.hook is not None and upload.length:
            outcome = self.hook.process(upload.path, mode, images_only=images_only)
            if outcome.format:
                log.info("%s/%s: %s", upload.cid, "/".join(upload.parts), outcome.reason)
            info = {"format": outcome.format, "width": outcome.width, "height": outcome.height}
            if outcome.stored_path:
                data_path, encoding = outcome.stored_path, outcome.encoding
                if encoding == "identity":
                    sha1, md5 = _hash_file(data_path, self.block_size)
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
                with _ignore_missing:
                    os.unlink(data_path)

    def _rename_in(
        self,
        upload: Upload,
        data_path: str,
        st: os.stat_result,
        size: int,
        sha1: str,
        md5: str,
        encoding: str,
        info: dict[str, Any],
        create_only: bool,
    ) -> Entry:
        cid, parts = upload.cid, upload.parts
        # Only the file that is stored needs to reach the disk (not an upload
        # the hook replaced with a smaller file).
        if data_path == upload.path:
            upload.sync()
        else:
            fd = os.open(data_path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
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
        target = self._data_path(cid, parts)
        with self._naming_locks(cid, parts):
            replaced = self._place(cid, parts, data_path, target, meta, create_only)
        _fsync_dir(os.path.dirname(target))
        if replaced != sha1:
            self.drop_thumbnails(cid, replaced)
        # The stat from before the rename: same inode, and the name may already
        # be gone again (a concurrent DELETE or MOVE).
        return _file_entry(parts[-1], st, meta)

    @contextlib.contextmanager
    def _naming_locks(self, cid: str, *names: list[str]) -> Iterator[None]:
        """The naming locks of several names, each once, in one order (no deadlock)."""
        paths = sorted({_naming_lock_path(self._meta_base(cid, parts)) for parts in names})
        with contextlib.ExitStack() as stack:
            for path in paths:
                ensure_dir(os.path.dirname(path))
                stack.enter_context(flocked(path))
            yield

    def _place(
        self, cid: str, parts: list[str], data_path: str, target: str, meta: dict[str, Any], create_only: bool
    ) -> str | None:
        """Write the record and rename the data in; return the SHA-1 of what it replaced."""
        current = self._current_meta(cid, parts)
        replaced = current["sha1"] if current else None
        if create_only:
            # Claim the name first: a loser must not overwrite the winner's record.
            try:
                os.link(data_path, target)
            except FileExistsError:
                raise AlreadyExists("the name was taken meanwhile") from None
            self._write_meta(cid, parts, ".m", meta)
        else:
            # Record first, then the data: a reader never sees new bytes with no record.
            # The record being replaced rides along as "prev", so a reader still holding
            # the old file until the rename finds its record too.
            prev = {k: v for k, v in current.items() if k != "prev"} if current else None
            self._write_meta(cid, parts, ".m", {**meta, "prev": prev} if prev else meta)
            os.replace(data_path, target)
        return replaced

    def _current_meta(self, cid: str, parts: list[str]) -> dict[str, Any] | None:
        """The valid content record of the file now stored at `parts`, if any."""
        st = self._lstat(self._data_path(cid, parts))
        if st is None or not stat_mod.S_ISREG(st.st_mode):
            return None
        return self._read_meta(cid, parts, st)

    def _write_meta(self, cid: str, parts: list[str], suffix: str, value: dict[str, Any]) -> None:
        path = self._meta_base(cid, parts) + suffix
        ensure_dir(os.path.dirname(path))
        st = self._replace_file(path, json.dumps(value, sort_keys=True).encode())
        if suffix == ".m":
            # The reader that follows (the new entry) need not read it back. Cached
            # records are shared by every reader and never changed once written.
            self._cache_meta(path, st, value)

    def create_empty(self, cid: str, rel: str) -> Entry:
        """An empty file at an unmapped name (LOCK-null resources, Finder and Office)."""
        return self.commit(self.begin_upload(cid, rel), create_only=True)

    def mkdir(self, cid: str, rel: str) -> None:
        _parts, path = self._resolve(cid, rel)
        try:
            os.mkdir(path)
        except FileExistsError:
            raise AlreadyExists("a file or folder has that name") from None
        except FileNotFoundError:
            raise ParentMissing("parent folder does not exist") from None

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
        except OutsideCollection:
            st = None
        stamps: list[tuple[int, int] | None] = []
        for name in names:
            sub = self._lstat(f"{path}/{name}") if st is not None else None
            stamps.append((sub.st_ino, sub.st_ctime_ns) if sub is not None and stat_mod.S_ISDIR(sub.st_mode) else None)
        return stamps

    def delete(self, cid: str, rel: str) -> None:
        """Remove a file, or a folder with everything in it, and their metadata."""
        parts, path = self._resolve(cid, rel)
        if not parts:
            raise InvalidPath("the collection root cannot be deleted")
        st = self._lstat(path)
        if st is None:
            raise NotFound(rel)
        try:
            if stat_mod.S_ISDIR(st.st_mode):
                shutil.rmtree(path)
            else:
                current = self._current_meta(cid, parts)
                os.unlink(path)
                self.drop_thumbnails(cid, current["sha1"] if current else None)
        except FileNotFoundError:
            raise NotFound(rel) from None  # a concurrent DELETE or MOVE won
        self._drop_meta(cid, parts)

    def _drop_meta(self, cid: str, parts: list[str]) -> None:
        base = self._meta_base(cid, parts)
        shutil.rmtree(base + ".d", ignore_errors=True)
        for suffix in (".m", ".p"):
            with _ignore_missing:
                os.unlink(base + suffix)

    def move(self, cid: str, src: str, dst: str, *, replace: bool = True) -> None:
        """Rename a file or folder (with its metadata).

        An existing file at dst is replaced; with replace=False (files only)
        the rename fails with AlreadyExists instead, atomically.
        """
        src_parts, src_path = self._resolve(cid, src)
        dst_parts, dst_path = self._resolve(cid, dst)
        if not src_parts or not dst_parts:
            raise InvalidPath("the collection root cannot be moved")
        if self._lstat(os.path.dirname(dst_path)) is None:
            raise ParentMissing("destination folder does not exist")
        with self._naming_locks(cid, src_parts, dst_parts):
            self._move_locked(cid, src, src_parts, src_path, dst_parts, dst_path, replace)
        _fsync_dir(os.path.dirname(dst_path))

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
        try:
            if replace:
                os.replace(src_path, dst_path)
            else:
                os.link(src_path, dst_path, follow_symlinks=False)  # fails if dst exists
                os.unlink(src_path)
        except FileNotFoundError:
            raise NotFound(src) from None
        except OSError as exc:
            if exc.errno in (errno.EISDIR, errno.ENOTDIR, errno.ENOTEMPTY, errno.EEXIST, errno.EPERM):
                raise AlreadyExists("destination exists") from None
            raise
        self._drop_meta(cid, dst_parts)
        src_base, dst_base = self._meta_base(cid, src_parts), self._meta_base(cid, dst_parts)
        os.makedirs(os.path.dirname(dst_base), exist_ok=True)
        for suffix in (".m", ".p", ".d"):
            with _ignore_missing:
                os.replace(src_base + suffix, dst_base + suffix)

    def copy_file(self, cid: str, src: str, dst: str) -> Entry:
        """Copy one file (bytes, metadata and dead properties) atomically over dst."""
        src_parts, src_path = self._resolve(cid, src)
        upload = self.begin_upload(cid, dst)
        try:
            with open(src_path, "rb") as fh:
                shutil.copyfileobj(fh, upload._fh, self.block_size)
            upload.close()
            src_st = os.stat(src_path)
            meta = self._read_meta(cid, src_parts, src_st)
            if meta is None:
                sha1, md5 = _hash_file(upload.path, self.block_size)
                meta = {"size": src_st.st_size, "sha1": sha1, "md5": md5, "encoding": "identity"}
            info = {k: v for k, v in meta.items() if k in ("format", "width", "height", "uploaded_size")}
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
            shutil.copystat(src_path, self._data_path(cid, upload.parts))
            self._touch_folder_meta(cid, upload.parts)
        finally:
            self.abort(upload)
        self.write_props(cid, dst, self.read_props(cid, src))
        return entry

    def copy_folder(self, cid: str, src: str, dst: str) -> None:
        """Create dst as a folder (if needed) with src's dead properties; members are copied one by one."""
        try:
            self.mkdir(cid, dst)
        except AlreadyExists:
            pass
        self.write_props(cid, dst, self.read_props(cid, src))

    # --- thumbnails ----------------------------------------------------------

    def _thumb_path(self, cid: str, sha1: str, size: int, ext: str) -> str:
        return os.path.join(self.thumbs, cid, f"{sha1}-{size}.{ext}")

    def read_thumbnail(self, cid: str, sha1: str, size: int, ext: str) -> bytes | None:
        try:
            with open(self._thumb_path(cid, sha1, size, ext), "rb") as fh:
                return fh.read()
        except FileNotFoundError:
            return None

    def write_thumbnail(self, cid: str, sha1: str, size: int, ext: str, data: bytes) -> None:
        """Keep a thumbnail of the content with this SHA-1; a changed image has a new SHA-1."""
        path = self._thumb_path(cid, sha1, size, ext)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self._replace_file(path, data)

    def drop_thumbnails(self, cid: str, sha1: str | None) -> None:
        """Forget the thumbnails of content that is no longer stored under a name."""
        if not sha1:
            return
        folder = os.path.join(self.thumbs, cid)
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            return
        for name in names:
            if name.startswith(sha1 + "-"):
                with _ignore_missing:
                    os.unlink(os.path.join(folder, name))

    # --- dead properties -----------------------------------------------------

    def read_props(self, cid: str, rel: str) -> dict[str, str]:
        try:
            with open(self._meta_base(cid, split_path(rel)) + ".p", "rb") as fh:
                return json.loads(fh.read())
        except (FileNotFoundError, NotADirectoryError):
            return {}
        except ValueError:
            log.warning("unreadable property file for %s ignored", rel)
            return {}

    def write_props(self, cid: str, rel: str, props: dict[str, str]) -> None:
        parts = split_path(rel)
        if props:
            self._write_meta(cid, parts, ".p", props)
            return
        with _ignore_missing:
            os.unlink(self._meta_base(cid, parts) + ".p")
