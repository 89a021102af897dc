"""Re-encoding a file already stored (the `recompress` command), committed like a PUT.

The bytes GET returns are staged (rebuilt if the file is stored encoded,
and checked against the record's SHA-1), passed through the write hook
with the new mode, and renamed in under the name's naming lock only if the
file there is still the one read: a client that wrote, moved or deleted it
meanwhile wins, and the re-encoded copy is dropped. The new file keeps the
old one's modification time, and in byte-exact modes its size, ETag and
checksums, so clients see nothing change.

Store mixes this in; it supplies the paths, the record reader and writer,
the naming locks and the hook.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import stat as stat_mod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from uss_dav.files import create_staged, fsync_dir, ignore_missing, write_all
from uss_dav.storage.errors import NotFound, StorageError
from uss_dav.storage.paths import is_apple_file, split_path
from uss_dav.storage.records import (
    HookListener,
    Opened,
    WriteHook,
    file_entry,
    file_identity,
)
from uss_dav.storage.upload import file_digest

log = logging.getLogger(__name__)

# Recompressed.action values
DONE = "recompressed"
WOULD = "would recompress"
UNCHANGED = "unchanged"
RACED = "changed meanwhile"
SKIPPED = "skipped"


@dataclass(frozen=True)
class Recompressed:
    """What re-encoding one file did (or, in a dry run, would do)."""

    name: str
    action: str
    stored_before: int
    stored_after: int
    reason: str = ""

    @property
    def saved(self) -> int:
        return self.stored_before - self.stored_after if self.action in (DONE, WOULD) else 0


def needs_recompress(name: str, encoding: str, fmt: str | None, made_with: str | None, mode: str) -> bool:
    """Whether a file described so may store smaller (or as asked) in `mode`; cheap, from its record alone.

    A file is looked at when its record says another mode made it (or none:
    an older record), and, in `exact` mode, when it is an image still stored
    as uploaded (a codec may have been missing, or may take it now).
    Finder's bookkeeping files are never compressed.
    """
    if is_apple_file(name):
        return False
    if mode == "off":
        return encoding != "identity"
    if made_with != mode:
        return True
    return mode == "exact" and encoding == "identity" and fmt is not None


class Reencoding:
    """Store.recompress; see the module docstring."""

    hook: WriteHook | None
    on_processed: HookListener | None
    block_size: int
    _staging: str

    # Supplied by Store.
    def _walk(self, cid: str, parts: list[str]) -> tuple[str, os.stat_result | None]:
        raise NotImplementedError

    def _read_meta(
        self, cid: str, parts: list[str], st: os.stat_result, where: str | int, meta_path: str | None = None
    ) -> dict[str, Any] | None:
        raise NotImplementedError

    def _naming_locks(self, cid: str, *names: list[str]) -> contextlib.AbstractContextManager[None]:
        raise NotImplementedError

    def _lstat(self, path: str) -> os.stat_result | None:
        raise NotImplementedError

    def _seal(self, fd: int, meta: dict[str, Any]) -> None:
        raise NotImplementedError

    def _rename_over(
        self, cid: str, parts: list[str], data_path: str, target: str, meta: dict[str, Any], current: dict[str, Any] | None
    ) -> None:
        raise NotImplementedError

    def _update_record(self, cid: str, parts: list[str], st: os.stat_result, meta: dict[str, Any], **changes: Any) -> None:
        raise NotImplementedError

    def drop_thumbnails(self, cid: str, sha1: str | None) -> None:
        raise NotImplementedError

    def recompress(
        self,
        cid: str,
        rel: str,
        mode: str,
        *,
        dry_run: bool = False,
        before_commit: Callable[[], None] | None = None,
    ) -> Recompressed:
        """Re-encode the file at `rel` with `mode` if that stores it smaller (or, for "off", as uploaded).

        Holds one file in memory at most (a rebuilt one). `before_commit`
        runs just before the naming lock is taken: a test's seam for a
        client writing meanwhile.
        """
        if self.hook is None:
            raise StorageError("no write hook to re-encode with")
        parts = split_path(rel)
        path, st = self._walk(cid, parts)
        if st is None or not stat_mod.S_ISREG(st.st_mode):
            raise NotFound(rel)
        meta = self._read_meta(cid, parts, st, path)
        if meta is None:
            return Recompressed(rel, SKIPPED, st.st_size, st.st_size, "no record (a file put there by hand)")
        with self._staged(path, st, meta) as (staged, problem):
            if problem:
                return Recompressed(rel, SKIPPED, st.st_size, st.st_size, problem)
            return self._reencode(cid, parts, rel, st, meta, staged, mode, dry_run, before_commit)

    @contextlib.contextmanager
    def _staged(self, path: str, st: os.stat_result, meta: dict[str, Any]) -> Iterator[tuple[str, str | None]]:
        """(path, None) of a staging file holding the bytes GET returns for the file at `path`, checked
        against its record; or (path, the reason it could not be made).

        Held flock'ed, so no sweep of staging/ (any process, any node) removes it.
        """
        staged, fd = create_staged(self._staging, ".part", 0o600)
        try:
            reason = self._copy_out(path, st, meta, fd)
            yield staged, reason
        finally:
            os.close(fd)
            with ignore_missing:
                os.unlink(staged)

    def _copy_out(self, path: str, st: os.stat_result, meta: dict[str, Any], fd: int) -> str | None:
        try:
            fh = open(path, "rb", buffering=0)  # noqa: SIM115 (Opened closes it)
        except FileNotFoundError:
            return "deleted meanwhile"
        opened = Opened(path, file_entry("", st, meta), fh, self.hook)
        sha1 = hashlib.sha1()
        try:
            if os.fstat(fh.fileno()).st_ino != st.st_ino:
                return "replaced meanwhile"
            with opened.stream() as stream:
                for chunk in _pieces(stream, self.block_size):
                    sha1.update(chunk)
                    write_all(fd, chunk)
        except (ValueError, RuntimeError, OSError) as exc:
            log.error("%s: could not rebuild %s: %s", path, meta.get("encoding"), exc)
            return f"could not rebuild: {type(exc).__name__}: {exc}"
        finally:
            opened.close()
        if sha1.hexdigest() != meta.get("sha1"):
            log.error("%s: its bytes do not match its record's SHA-1; left alone", path)
            return "bytes do not match the record's SHA-1"
        return None

    def _reencode(
        self,
        cid: str,
        parts: list[str],
        rel: str,
        st: os.stat_result,
        meta: dict[str, Any],
        staged: str,
        mode: str,
        dry_run: bool,
        before_commit: Callable[[], None] | None,
    ) -> Recompressed:
        assert self.hook is not None
        try:
            outcome = self.hook.process(staged, mode, images_only=False)
        except Exception as exc:  # a refusal (413) or a hook failure leaves the file as it is
            return Recompressed(rel, SKIPPED, st.st_size, st.st_size, f"{type(exc).__name__}: {exc}")
        if self.on_processed is not None:
            self.on_processed(staged, outcome)
        new_path = outcome.stored_path or staged
        try:
            new_size = os.stat(new_path).st_size
            decode = mode == "off" and meta.get("encoding", "identity") != "identity"
            if new_size >= st.st_size and not decode:
                if not dry_run:
                    self._note_mode(cid, parts, st, meta, mode)
                return Recompressed(rel, UNCHANGED, st.st_size, st.st_size, outcome.reason)
            if dry_run:
                return Recompressed(rel, WOULD, st.st_size, new_size, outcome.reason)
            new_meta = self._new_meta(meta, staged, new_path, outcome.encoding if outcome.stored_path else "identity", mode)
            if before_commit is not None:
                before_commit()
            if not self._swap(cid, parts, st, meta, new_path, new_meta):
                return Recompressed(rel, RACED, st.st_size, st.st_size, "a client changed it meanwhile; left as the client wrote it")
            return Recompressed(rel, DONE, st.st_size, new_size, outcome.reason)
        finally:
            if new_path != staged:
                with ignore_missing:
                    os.unlink(new_path)

    def _new_meta(self, meta: dict[str, Any], staged: str, new_path: str, encoding: str, mode: str) -> dict[str, Any]:
        """The record of the re-encoded file (its inode and stored size are filled in by _swap).

        `staged` holds the bytes GET returns now; a file GET will rebuild gets
        their MD5 here if it had none yet (see Store.md5).
        """
        new = {k: v for k, v in meta.items() if k != "prev"}
        new.update(encoding=encoding, mode=mode)
        if encoding == "identity":
            # Stored as GET returns it: size and checksums are those of the new bytes
            # (the same bytes unless the mode rewrites them, as lossless does).
            # Their MD5 waits for the first client that asks, as an upload's does (Store.md5).
            new.update(sha1=file_digest(new_path, "sha1"), md5=None, size=os.stat(new_path).st_size)
        elif not new.get("md5"):
            new["md5"] = file_digest(staged, "md5")
        return new

    def _swap(
        self, cid: str, parts: list[str], st: os.stat_result, meta: dict[str, Any], new_path: str, new_meta: dict[str, Any]
    ) -> bool:
        """Rename the re-encoded file in if the file there is still the one read; False if a client won."""
        # Clients see the same Last-Modified (rclone compares modification times).
        os.utime(new_path, ns=(st.st_atime_ns, st.st_mtime_ns))
        new_st = os.stat(new_path)
        new_meta = {**new_meta, "ino": new_st.st_ino, "stored_size": new_st.st_size}
        fd = os.open(new_path, os.O_RDONLY)
        try:
            self._seal(fd, new_meta)
        finally:
            os.close(fd)
        target = self._walk(cid, parts)[0]
        with self._naming_locks(cid, parts):
            if not self._unchanged(cid, parts, target, st, meta):
                return False
            self._rename_over(cid, parts, new_path, target, new_meta, meta)
        fsync_dir(os.path.dirname(target))
        if new_meta["sha1"] != meta.get("sha1"):
            self.drop_thumbnails(cid, meta.get("sha1"))
        return True

    def _note_mode(self, cid: str, parts: list[str], st: os.stat_result, meta: dict[str, Any], mode: str) -> None:
        """Record that `mode` left the file as it is, so the next run passes it by (see needs_recompress)."""
        if meta.get("mode") != mode:
            self._update_record(cid, parts, st, meta, mode=mode)

    def _unchanged(self, cid: str, parts: list[str], target: str, st: os.stat_result, meta: dict[str, Any]) -> bool:
        """Whether `target` is still the file with stat `st` and record `meta` (call under the naming lock)."""
        now = self._lstat(target)
        if now is None or file_identity(now) != file_identity(st) or now.st_ctime_ns != st.st_ctime_ns:
            return False
        return self._read_meta(cid, parts, now, target) == meta


def _pieces(stream: IO[bytes], block_size: int) -> Iterator[bytes]:
    while chunk := stream.read(block_size):
        yield chunk
