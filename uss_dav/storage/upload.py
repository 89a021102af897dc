"""An upload streaming into staging/, hashed as it arrives, and the checksum a client sent with it."""

from __future__ import annotations

import fcntl
import hashlib
import queue
import secrets
import shutil
import threading
from collections.abc import Iterable
from typing import IO

from uss_dav.files import start_writeback
from uss_dav.storage.errors import ChecksumMismatch, TooLarge


def check_checksum(header: str, sha1: str, md5: str) -> None:
    """Verify an ownCloud-style `OC-Checksum: SHA1:<hex>` (or MD5:, ADLER32: ignored)."""
    for token in header.split():
        algorithm, _, value = token.partition(":")
        expected = {"sha1": sha1, "md5": md5}.get(algorithm.lower())
        if expected is not None and value.lower() != expected:
            raise ChecksumMismatch(f"body does not match OC-Checksum {algorithm.upper()}")


def hash_file(path: str, block_size: int) -> tuple[str, str]:
    """(SHA-1, MD5) of a file already on disk: what a client's checksum of it will be."""
    sha1, md5 = hashlib.sha1(), hashlib.md5()
    with open(path, "rb") as fh:
        while chunk := fh.read(block_size):
            sha1.update(chunk)
            md5.update(chunk)
    return sha1.hexdigest(), md5.hexdigest()


class _Digests:
    """SHA-1 and MD5 of a body as it streams in.

    A small body is hashed inline. Once a body passes THREADED bytes (its
    first block, for a large upload), MD5 moves to a thread of its own:
    it is the slower of the two here (about 750 MB/s, against SHA-1's
    1.9 GB/s with the CPU's SHA extensions), and inline the two together
    took 10 of the 17 ms a 4 MiB upload spends in storage. The socket
    reads, file writes and both hashes release the GIL, so MD5 runs on the
    other core while the request thread receives, writes and does SHA-1.
    The queue between them is bounded, so memory stays flat.
    """

    THREADED = 256 * 1024
    QUEUED = 4  # blocks waiting for MD5 at most (4 MiB each upload at 1 MiB blocks)

    def __init__(self) -> None:
        self._sha1, self._md5 = hashlib.sha1(), hashlib.md5()
        self._seen = 0
        self._queue: queue.Queue[bytes | None] | None = None
        self._thread: threading.Thread | None = None

    def update(self, data: bytes) -> None:
        self._seen += len(data)
        self._sha1.update(data)
        if self._queue is None and self._seen <= self.THREADED:
            self._md5.update(data)
            return
        if self._queue is None:
            self._queue = queue.Queue(maxsize=self.QUEUED)
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
    Every WRITE_BEHIND bytes written are handed to the disk at once (see
    uss_dav.files.start_writeback), so the fsync at commit has little left to do.
    """

    WRITE_BEHIND = 1024 * 1024

    def __init__(self, staging: str, cid: str, parts: list[str], max_bytes: int = 0) -> None:
        self.cid, self.parts, self.max_bytes = cid, parts, max_bytes
        self.path = f"{staging}/{secrets.token_hex(16)}.part"
        self._fh: IO[bytes] = open(self.path, "xb", buffering=0)
        # Held until commit or abort: the start-up sweep leaves locked files alone.
        fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX)
        self.length = 0
        self._written_back = 0  # bytes already handed to the disk
        self._digests = _Digests()
        self._final: tuple[str, str] | None = None

    def write(self, data: bytes) -> int:
        if self.max_bytes and self.length + len(data) > self.max_bytes:
            raise TooLarge(f"upload larger than the {self.max_bytes}-byte limit")
        self._fh.write(data)
        self._digests.update(data)
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
        shutil.copyfileobj(source, self._fh, block_size)

    def close(self) -> None:
        """The body is complete; it stays staged until Store.commit (which fsyncs what it stores).

        A large body's last stretch starts on its way to the disk now, while
        the digests finish and the hook looks at it.
        """
        if self._written_back and not self._fh.closed:
            self._write_back()

    def fileno(self) -> int:
        """The staged file's descriptor (to set its record on and fsync it through the handle that wrote it)."""
        return self._fh.fileno()

    def digests(self) -> tuple[str, str]:
        if self._final is None:
            self._final = self._digests.finish()
        return self._final

    def release(self) -> None:
        self._digests.stop()
        if not self._fh.closed:
            self._fh.close()
