"""ImageCompressor: the one entry point the storage layer calls before its atomic rename.

The cheap, safe part runs in the caller's thread: magic-byte detection and the
declared-size (decompression bomb) check, which reads headers only. Anything
that decodes or optimizes runs in a bounded process pool under a time limit;
on timeout or a crashed worker the upload is stored as it came.

Rebuilds for GET: an encoding whose reader holds the GIL (Lepton) runs in a
second, small pool of processes, so one GET does not stall every other
request of the serving process; the rest run in the caller's thread, their
C code releasing the GIL. A second pool, not the compression one, so a GET
never waits behind a queue of uploads.
"""

from __future__ import annotations

import concurrent.futures
import logging
import secrets
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from hooks.encodings import HOLDS_GIL, decode
from hooks.formats import Header, check_pixels, read_head, read_header, sniff
from hooks.optimizers import MODES, Settings, optimizer_for
from hooks.pool import start_pool
from hooks.results import CRASH, IDENTITY, TIMEOUT, ImageRejected, Outcome
from hooks.worker import BOMB, CORRUPT, STORED, Job, JobResult, init_worker, run_job

logger = logging.getLogger(__name__)

ACCEPTED = "PNG, JPEG, GIF, WebP, TIFF or BMP"


class ImageCompressor:
    """Decides, per upload, which bytes to store: a smaller equivalent file or the upload itself.

    Thread-safe: the server calls process() from many request threads at once.
    The worker pool starts on first use (hooks.pool), with "forkserver" (or
    "spawn"), never plain fork, since the server is multithreaded; as with
    any such pool, the program's entry script must keep its top level under
    `if __name__ == "__main__":`.
    """

    def __init__(
        self,
        *,
        max_pixels: int = 40_000_000,
        timeout: float = 30.0,
        workers: int = 2,
        png_level: int = 2,
        lossy_quality: int = 85,
        images_only: bool = False,
    ) -> None:
        if max_pixels < 1 or workers < 1 or timeout <= 0:
            raise ValueError("max_pixels, workers and timeout must be positive")
        if not 0 <= png_level <= 6 or not 1 <= lossy_quality <= 100:
            raise ValueError("png_level must be 0-6 and lossy_quality 1-100")
        self.max_pixels = max_pixels
        self.timeout = timeout
        self.workers = workers
        self.images_only = images_only
        self.settings = Settings(png_level=png_level, lossy_quality=lossy_quality, timeout=timeout)
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None
        self._rebuild_pool: ProcessPoolExecutor | None = None
        self._closed = False

    def process(self, path: str, mode: str, *, images_only: bool | None = None) -> Outcome:
        """Check the upload at `path` (never modified) and say what to store.

        mode is "lossless", "exact", "off" or "lossy". Raises ImageRejected
        (413) for a declared size over max_pixels, and (415) with images_only
        for anything that is not a decodable image. The time limit counts from
        submission, so it also bounds the wait for a free worker; on timeout
        the upload is stored as it came (with images_only it is then accepted
        undecoded, its header having passed).
        """
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
        strict = self.images_only if images_only is None else images_only
        fmt = sniff(read_head(path))
        if fmt is None:  # most non-images stop here, after three system calls
            return self._as_uploaded(path, None, "not an image, stored as uploaded", f"not a {ACCEPTED} image", strict)
        with open(path, "rb") as fh:
            header = read_header(fh, fmt)
        if header is None:
            reason = f"unreadable {fmt} header"
            return self._as_uploaded(path, fmt, f"corrupt image stored as uploaded ({reason})", reason, strict)
        check_pixels(header, self.max_pixels)
        if optimizer_for(mode, fmt) is None and not strict:
            reason = f"{fmt} stored as uploaded ({mode})"  # nothing to gain, so no need to decode
            return self._log(path, Outcome(None, IDENTITY, fmt, header.width, header.height, reason))
        return self._log(path, self._optimize(path, header, mode, strict))

    def restore(self, stored_path: str, encoding: str) -> bytes:
        """The bytes GET returns for a file stored with `encoding`: for a reversible one, the upload bit for bit."""
        return self.restore_data(Path(stored_path).read_bytes(), encoding)

    def restore_data(self, data: bytes, encoding: str) -> bytes:
        """restore() for stored bytes already read (from a file the caller holds open).

        Raises ValueError for an unknown encoding or damaged stored bytes,
        TimeoutError when a rebuild process gives no answer within the time
        limit: the caller answers with an error, never with other bytes.
        """
        if encoding not in HOLDS_GIL:
            return decode(data, encoding)
        pool = self._get_rebuild_pool()
        try:
            return pool.submit(decode, data, encoding).result(timeout=self.timeout)
        except BrokenProcessPool:
            self._drop_pool(pool)
            return decode(data, encoding)  # right bytes, if slowly, rather than an error

    def close(self) -> None:
        """Shut the worker pools down; pending jobs are cancelled, running ones finish."""
        with self._lock:
            self._closed = True
            pools = [self._pool, self._rebuild_pool]
            self._pool = self._rebuild_pool = None
        for pool in pools:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> ImageCompressor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- internals ------------------------------------------------------

    def _optimize(self, path: str, header: Header, mode: str, strict: bool) -> Outcome:
        """Run the worker job and turn its result into an Outcome (or a refusal)."""
        fmt, width, height = header.format, header.width, header.height
        out_path = f"{path}.{secrets.token_hex(6)}.opt"
        result = self._run(Job(path, out_path, fmt, mode, self.settings))
        if isinstance(result, tuple):
            reason, fallback = result
            return self._fell_back(path, Outcome(None, IDENTITY, fmt, width, height, reason, fallback))
        if result.status == BOMB:
            raise ImageRejected(413, f"image decodes to more than the {self.max_pixels}-pixel limit")
        if result.status == STORED and not result.decodes and strict:
            Path(out_path).unlink(missing_ok=True)
            raise ImageRejected(415, f"corrupt {fmt} image: {result.reason}")
        if result.status == CORRUPT:
            if strict:
                raise ImageRejected(415, f"corrupt {fmt} image: {result.reason}")
            reason = f"corrupt image stored as uploaded ({result.reason})"
            return self._fell_back(path, Outcome(None, IDENTITY, fmt, width, height, reason, result.fallback))
        if result.status == STORED:
            return Outcome(out_path, result.encoding, fmt, width, height, result.reason)
        return self._fell_back(path, Outcome(None, IDENTITY, fmt, width, height, result.reason, result.fallback))

    @staticmethod
    def _fell_back(path: str, outcome: Outcome) -> Outcome:
        """Log, at warning level, a codec whose work was thrown away (workers log nothing themselves)."""
        if outcome.fallback is not None:
            logger.warning("%s: codec fell back (%s): %s", path, outcome.fallback, outcome.reason)
        return outcome

    def _run(self, job: Job) -> JobResult | tuple[str, str]:
        """The worker's result, or (a short reason, the fallback) why there is none."""
        pool = self._get_pool()
        try:
            future = pool.submit(run_job, job)
        except BrokenProcessPool:
            self._drop_pool(pool)
            return "worker pool broken, stored as uploaded", CRASH
        try:
            return future.result(timeout=self.timeout)
        except concurrent.futures.TimeoutError:
            # A queued job is cancelled; a running one cannot be, so its output
            # file is deleted whenever it finishes.
            future.cancel()
            future.add_done_callback(lambda done: _discard_output(done, job.out_path))
            return "timeout", TIMEOUT
        except BrokenProcessPool:
            self._drop_pool(pool)
            Path(job.out_path).unlink(missing_ok=True)
            return "worker crashed, stored as uploaded", CRASH
        except BaseException:
            Path(job.out_path).unlink(missing_ok=True)  # whatever the job wrote before it raised
            raise

    def _get_pool(self) -> ProcessPoolExecutor:
        """The live pool, started on first use."""
        with self._lock:
            if self._closed:
                raise RuntimeError("ImageCompressor is closed")
            if self._pool is None:
                self._pool = start_pool(
                    self.workers, initializer=init_worker, initargs=(self.max_pixels,), timeout=self.timeout
                )
            return self._pool

    def _get_rebuild_pool(self) -> ProcessPoolExecutor:
        """The live rebuild pool (no Pillow limits needed: it only runs hooks.encodings), started on first use."""
        with self._lock:
            if self._closed:
                raise RuntimeError("ImageCompressor is closed")
            if self._rebuild_pool is None:
                self._rebuild_pool = start_pool(self.workers, timeout=self.timeout)
            return self._rebuild_pool

    def _drop_pool(self, pool: ProcessPoolExecutor) -> None:
        """Forget a broken pool; the next job starts a fresh one."""
        logger.error("image worker pool broke (a worker died); starting a new one")
        with self._lock:
            if self._pool is pool:
                self._pool = None
            if self._rebuild_pool is pool:
                self._rebuild_pool = None
        pool.shutdown(wait=False, cancel_futures=True)

    def _as_uploaded(self, path: str, fmt: str | None, reason: str, refusal: str, strict: bool) -> Outcome:
        """Not an image we can read: refused (415) when strict (images_only), else stored as it came."""
        if strict:
            raise ImageRejected(415, refusal)
        return self._log(path, Outcome(None, IDENTITY, fmt, None, None, reason))

    @staticmethod
    def _log(path: str, outcome: Outcome) -> Outcome:
        logger.debug("%s: %s", path, outcome.reason)
        return outcome


def _discard_output(future: Future[JobResult], out_path: str) -> None:
    """Delete the file a timed-out job wrote after we stopped waiting for it."""
    if not future.cancelled():
        Path(out_path).unlink(missing_ok=True)
