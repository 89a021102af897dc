"""What a stored file is to clients: its Entry (size, ETag, checksums of the bytes GET returns), built from its record.

A record (`<name>.m` under meta/) names the inode and size of the data file
it describes, so a stale one is recognised and ignored, never believed.
"""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from collections.abc import Callable
from typing import IO, Any, NamedTuple, Protocol

from uss_dav.storage.errors import StorageError


class WriteHook(Protocol):
    """What storage needs of the image compressor (hooks.ImageCompressor)."""

    def process(self, path: str, mode: str, *, images_only: bool | None = None) -> Any: ...

    def restore_data(self, data: bytes, encoding: str) -> bytes: ...


#: Hears of every WriteHook.process outcome, with the path it was given (/metrics counts savings and fall-backs).
HookListener = Callable[[str, Any], None]


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
    #: None until a client first asks for it (Store.md5).
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
    #: The compression mode the stored bytes were made with (None: a record from before records held it).
    mode: str | None = None


#: Naming lock files per metadata folder: names hash onto them, so writers of
#: different names in one folder seldom wait for each other.
NAMING_LOCK_SLOTS = 16


def naming_lock_path(meta_base: str) -> str:
    """The lock file that serialises record-and-rename of one name (shared by the names that hash alike).

    Without it two writers of one name interleave as record A, record B,
    rename B, rename A: A's bytes end up under B's record, which names
    another inode, so the file would lose its checksums until rewritten.
    """
    folder, name = os.path.split(meta_base)
    return f"{folder}/.lock-{zlib.crc32(name.encode('utf-8', 'surrogateescape')) % NAMING_LOCK_SLOTS:x}"



#: The extended attribute of a data file that holds its record (see pack_record).
RECORD_ATTR = "user.uss_dav"

#: The record's compact layout: version, encoding, format and mode (indexes
#: into the tables below), the low 32 bits of the stored size, width, height,
#: SHA-1, MD5, size and uploaded size (48 bits each). 64 bytes: with the
#: attribute's name that is what ext4 keeps inside a 256-byte inode, so a
#: record costs no block of its own.
_COMPACT = struct.Struct("<BBBBIII20s16s6s6s")
_COMPACT_VERSION = 1
#: Append only: a record on disk names its values by their place here.
_ENCODINGS: tuple[str | None, ...] = (None, "identity", "jxl-jpeg", "lepton-jpeg", "png-redeflate")
_FORMATS: tuple[str | None, ...] = (None, "jpeg", "png", "gif", "webp", "tiff", "bmp")
_MODES: tuple[str | None, ...] = (None, "off", "exact", "lossless", "lossy")
_LOW32 = 0xFFFFFFFF
#: An MD5 not computed yet (see Store.md5); a real one of 16 zero bytes is not expected in this universe.
_NO_MD5 = bytes(16)
#: What a record holds, besides stored32 (the store's working copy also carries ino and stored_size).
RECORD_KEYS = ("size", "uploaded_size", "sha1", "md5", "encoding", "format", "width", "height", "mode")


def pack_record(meta: dict[str, Any]) -> bytes:
    """The bytes of a file's record, to be set as RECORD_ATTR on the data file before it is renamed in.

    Compact (64 bytes) where every value fits the layout; otherwise JSON, so
    a value the tables do not know yet is still recorded whole.
    `meta["stored_size"]` is the size of the data file on disk: see describes.
    """
    stored32 = meta["stored_size"] & _LOW32
    try:
        return _COMPACT.pack(
            _COMPACT_VERSION,
            _ENCODINGS.index(meta.get("encoding", "identity")),
            _FORMATS.index(meta.get("format")),
            _MODES.index(meta.get("mode")),
            stored32,
            _dimension(meta.get("width")),
            _dimension(meta.get("height")),
            bytes.fromhex(meta["sha1"]),
            bytes.fromhex(meta["md5"]) if meta.get("md5") else _NO_MD5,
            meta["size"].to_bytes(6, "little"),
            meta["uploaded_size"].to_bytes(6, "little"),
        )
    except (ValueError, OverflowError, struct.error, AttributeError, TypeError):
        record = {k: meta[k] for k in RECORD_KEYS if k in meta}
        return json.dumps({**record, "stored32": stored32}, sort_keys=True, separators=(",", ":")).encode()


def _dimension(value: int | None) -> int:
    if value == 0:
        raise ValueError("a zero dimension does not round-trip (0 reads back as None)")
    return value or 0


def unpack_record(raw: bytes) -> dict[str, Any]:
    """The record pack_record wrote; ValueError if the bytes are none of its layouts."""
    if raw[:1] == b"{":
        record = json.loads(raw)
        if not isinstance(record, dict):
            raise ValueError("record is not a JSON object")
        return record
    if len(raw) != _COMPACT.size or raw[0] != _COMPACT_VERSION:
        raise ValueError(f"unknown record layout ({len(raw)} bytes, version {raw[:1].hex()})")
    _v, enc, fmt, mode, stored32, width, height, sha1, md5, size, uploaded = _COMPACT.unpack(raw)
    try:
        encoding, format_, mode_ = _ENCODINGS[enc], _FORMATS[fmt], _MODES[mode]
    except IndexError:
        raise ValueError("record names an encoding, format or mode this version does not know") from None
    return {
        "stored32": stored32,
        "size": int.from_bytes(size, "little"),
        "uploaded_size": int.from_bytes(uploaded, "little"),
        "sha1": sha1.hex(),
        "md5": md5.hex() if md5 != _NO_MD5 else None,
        "encoding": encoding,
        "format": format_,
        "width": width or None,
        "height": height or None,
        "mode": mode_,
    }


def describes(record: dict[str, Any], st: os.stat_result) -> bool:
    """Whether a record read from RECORD_ATTR is believed for the data file with stat `st`.

    The record sits on the file, so it moves with it, and a copy that keeps
    extended attributes (a backup restored with `rsync -X` or `cp -a`, a
    move to another disk) keeps describing it, though every inode is new:
    for a file stored encoded the record is what makes its bytes readable
    at all. What is checked is the stored size: a lookup by name that raced
    an overwrite, or a record copied onto other bytes, nearly always shows
    there. (Files stored as uploaded are also checked against their size.)
    """
    if record.get("stored32") != st.st_size & _LOW32:
        return False
    return record.get("encoding") != "identity" or record.get("size") == st.st_size


def read_record(path: str) -> dict[str, Any] | None:
    """The record set on the data file at `path`, or None (for tools and tests; the store caches its reads)."""
    try:
        return unpack_record(os.getxattr(path, RECORD_ATTR, follow_symlinks=False))
    except OSError:
        return None


def file_identity(st: os.stat_result) -> tuple[int, int, int]:
    """What changes whenever a file written by rename is replaced."""
    return st.st_ino, st.st_mtime_ns, st.st_size


def file_entry(name: str, st: os.stat_result, meta: dict[str, Any] | None) -> Entry:
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
        md5=meta.get("md5"),
        encoding=meta.get("encoding", "identity"),
        stored_size=st.st_size,
        uploaded_size=meta.get("uploaded_size"),
        format=meta.get("format"),
        width=meta.get("width"),
        height=meta.get("height"),
        ino=st.st_ino,
        ctime_ns=st.st_ctime_ns,
        mode=meta.get("mode"),
    )


class Rebuilt(io.RawIOBase):
    """The uploaded bytes of a file stored encoded, rebuilt on the first read or seek, in memory.

    Lazy so that only a response that sends bytes pays for the rebuild:
    HEAD, 304 and a response dropped before its body never call the codec
    (WsgiDAV and Werkzeug both take the stream before deciding). The
    rebuilt bytes are held once (BytesIO shares them), so `data` sends them
    whole, without a per-block loop.
    """

    def __init__(self, fh: IO[bytes], encoding: str, hook: WriteHook | None) -> None:
        super().__init__()
        self._fh, self._encoding, self._hook = fh, encoding, hook
        self._buffer: io.BytesIO | None = None

    @property
    def data(self) -> bytes:
        """All the rebuilt bytes (the object the codec returned, not a copy)."""
        return self._rebuilt().getvalue()

    def _rebuilt(self) -> io.BytesIO:
        if self._buffer is None:
            if self._hook is None:
                raise StorageError(f"no hook to restore {self._encoding}")
            with self._fh:
                stored = self._fh.read()
            self._buffer = io.BytesIO(self._hook.restore_data(stored, self._encoding))
        return self._buffer

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        return self._rebuilt().read(size)

    def readall(self) -> bytes:
        return self._rebuilt().read()

    def readinto(self, buffer: Any) -> int:
        return self._rebuilt().readinto(buffer)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._rebuilt().seek(offset, whence)

    def tell(self) -> int:
        return 0 if self._buffer is None else self._buffer.tell()

    def close(self) -> None:
        self._fh.close()
        self._buffer = None
        super().close()


class Opened:
    """An open file and the entry that describes its bytes (see Store.open)."""

    def __init__(self, path: str, entry: Entry, fh: IO[bytes], hook: WriteHook | None) -> None:
        self.path, self.entry, self._fh, self._hook = path, entry, fh, hook

    def stream(self) -> IO[bytes]:
        """The bytes GET returns: the file itself, or the uploaded bytes rebuilt on first read (Rebuilt)."""
        if self.entry.encoding == "identity":
            return self._fh
        return Rebuilt(self._fh, self.entry.encoding, self._hook)

    def fileno(self) -> int:
        return self._fh.fileno()

    def close(self) -> None:
        self._fh.close()
