"""An upload streaming into staging/, hashed as it arrives, and the checksum a client sent with it."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from typing import IO

from uss_dav.files import create_staged, start_writeback, write_all
from uss_dav.storage.errors import ChecksumMismatch, TooLarge


def check_checksum(header: str, sha1: str, md5: Callable[[], str]) -> None:
    """Verify an ownCloud-style `OC-Checksum: SHA1:<hex>` (or MD5:, computed only then; ADLER32: ignored)."""
    for token in header.split():
        algorithm, _, value = token.partition(":")
        name = algorithm.lower()
        if name not in ("sha1", "md5"):
            continue
        expected = sha1 if name == "sha1" else md5()
        if value.lower() != expected:
            raise ChecksumMismatch(f"body does not match OC-Checksum {algorithm.upper()}")


#: Bytes hashed per read when a file is hashed after the fact: one reused buffer, so memory stays flat.
DIGEST_BUFFER = 256 * 1024


def stream_digest(stream: IO[bytes], algorithm: str) -> str:
    """The hex digest of everything left in a readable stream (a file, or bytes GET rebuilds)."""
    digest = hashlib.new(algorithm)
    buffer = bytearray(DIGEST_BUFFER)
    view = memoryview(buffer)
    while n := stream.readinto(view):  # type: ignore[attr-defined]
        digest.update(view[:n])
    return digest.hexdigest()


def file_digest(path: str, algorithm: str) -> str:
    """The hex digest of a file already on disk (what a client's checksum of those bytes will be)."""
    with open(path, "rb", buffering=0) as fh:
        return stream_digest(fh, algorithm)


class Upload:
    """A body being streamed into staging/; SHA-1 hashed as it arrives.

    File-like (write, writelines, close) so WsgiDAV's PUT can feed it directly.
    Every WRITE_BEHIND bytes written are handed to the disk at once (see
    uss_dav.files.start_writeback), so the fsync at commit has little left to do.
    """

    WRITE_BEHIND = 1024 * 1024

    def __init__(self, staging: str, cid: str, parts: list[str], max_bytes: int = 0) -> None:
        self.cid, self.parts, self.max_bytes = cid, parts, max_bytes
        # Locked until commit or abort: every sweep of staging/ leaves locked files alone.
        self.path, fd = create_staged(staging, ".part")
        self._fh: IO[bytes] = open(fd, "wb", buffering=0)
        self.length = 0
        self._written_back = 0  # bytes already handed to the disk
        self._sha1 = hashlib.sha1()
        self._md5: str | None = None
        #: Renamed into the collection by Store.commit: nothing is left to remove.
        self.placed = False

    def write(self, data: bytes) -> int:
        if self.max_bytes and self.length + len(data) > self.max_bytes:
            raise TooLarge(f"upload larger than the {self.max_bytes}-byte limit")
        write_all(self._fh.fileno(), data)  # all of it: a short write once stored a short file under a 201
        self._sha1.update(data)
        self.length += len(data)
        if self.length - self._written_back >= self.WRITE_BEHIND:
            self._write_back()
        return len(data)

    def _write_back(self) -> None:
        start_writeback(self._fh.fileno(), self._written_back, self.length - self._written_back)
        self._written_back = self.length

    def writelines(self, chunks: Iterable[bytes]) -> None:
        for chunk in chunks:
            self.write(chunk)

    def copy_from(self, source: IO[bytes], block_size: int) -> None:
        """Stage the whole of `source` (a COPY), unhashed: the copy keeps its source's record."""
        while chunk := source.read(block_size):
            write_all(self._fh.fileno(), chunk)

    def close(self) -> None:
        """The body is complete; it stays staged until Store.commit (which fsyncs what it stores).

        A large body's last stretch starts on its way to the disk now, while
        the hook looks at it.
        """
        if self._written_back and not self._fh.closed:
            self._write_back()

    def fileno(self) -> int:
        """The staged file's descriptor (to set its record on and fsync it through the handle that wrote it)."""
        return self._fh.fileno()

    def sha1(self) -> str:
        """SHA-1 of the body: the ETag. Hashed as the body arrives (1.5 GB/s here)."""
        return self._sha1.hexdigest()

    def md5(self) -> str:
        """MD5 of the body, read back from the staged file when asked (see Store.md5 for why not always)."""
        if self._md5 is None:
            self._md5 = file_digest(self.path, "md5")
        return self._md5

    def release(self) -> None:
        if not self._fh.closed:
            self._fh.close()
