"""Import a store in the seed application's layout into uss_dav.

The seed kept `PATH/files/<key>/<image>` and listed its keys, one a line, in
`PATH/files/key_list.txt`. Each listed key becomes a uss_dav key with the same
value (stored hashed, like every key), so its clients keep working; each image
lands in that key's collection through Store.commit, the write path WebDAV and
REST use, compressed per configuration (or stored as is with `as_is`).

Quotas and the upload size limit do not apply: an import is the operator's
act. The source is only read. Running the import again changes nothing:

- a key that already verifies is reused with its collection;
- a name already present in the collection is never overwritten. It counts
  as imported before when it holds the source's content: the same SHA-1
  (modes off and exact), or, for a file the compressor rewrote, the same
  uploaded size and modification time (imported files keep the source's
  mtime: rsync's quick check). Otherwise it is skipped as taken by other
  content.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from hooks import ImageRejected
from hooks.formats import SNIFF_BYTES, sniff
from uss_dav.config import Config
from uss_dav.keys import MAX_KEY_LENGTH, KeyExists, KeyRecord
from uss_dav.rest.names import name_problem
from uss_dav.services import Services, open_services
from uss_dav.storage import AlreadyExists, Entry, StorageError

log = logging.getLogger(__name__)

KEY_LIST = "key_list.txt"
LABEL = "imported"


class SourceError(Exception):
    """The source is not in the seed application's layout."""


@dataclass
class Summary:
    keys_created: int = 0
    keys_reused: int = 0
    #: Files imported by this run, their bytes in the source and as stored.
    files: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    #: Files an earlier run imported.
    unchanged: int = 0
    #: (source file, reason); keys are shown by their place in key_list.txt, never by value
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def report(self) -> str:
        lines = [
            f"keys: {self.keys_created} created, {self.keys_reused} already present",
            f"imported {self.files} file(s): {self.bytes_before} bytes -> {self.bytes_after} bytes stored",
            f"already imported: {self.unchanged}",
            f"skipped: {len(self.skipped)}",
        ]
        lines += [f"  {path}: {reason}" for path, reason in self.skipped]
        return "\n".join(lines)


def read_key_list(files_dir: Path) -> list[str]:
    """The listed keys, in order, without blank lines or repeats."""
    try:
        text = (files_dir / KEY_LIST).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"cannot read {files_dir / KEY_LIST}: {exc}") from None
    keys = [line.strip() for line in text.splitlines()]
    return list(dict.fromkeys(k for k in keys if k))


def key_problem(key: str) -> str | None:
    if len(key) > MAX_KEY_LENGTH:
        return f"key longer than {MAX_KEY_LENGTH} characters"
    if key in (".", "..") or "/" in key or "\x00" in key:
        return "key cannot name a folder"
    return None


class Importer:
    """One import run into one data directory."""

    def __init__(self, services: Services, source: Path, *, as_is: bool = False) -> None:
        self.services, self.store = services, services.store
        self.source = source
        self.files_dir = source / "files"
        self.as_is = as_is
        self.summary = Summary()
        #: key -> how the summary names it ("key 3": the third key listed in key_list.txt).
        self.shown_keys: dict[str, str] = {}

    def run(self, progress: bool | None = None) -> Summary:
        """Import every listed key and its images; `progress` None shows a bar on a terminal only."""
        if not self.files_dir.is_dir():
            raise SourceError(f"{self.files_dir} is not a folder")
        plan: list[tuple[KeyRecord, Path]] = []
        keys = read_key_list(self.files_dir)
        self.shown_keys = {key: f"key {n}" for n, key in enumerate(keys, 1)}
        for key in keys:
            record = self._key(key)
            if record is not None:
                plan += [(record, path) for path in self._images_of(key)]
        self._note_unlisted(set(keys))
        disable = None if progress is None else not progress
        for record, path in tqdm(plan, desc="importing", unit="file", disable=disable, file=sys.stderr):
            self._import(record, path)
        return self.summary

    def _key(self, key: str) -> KeyRecord | None:
        """The uss_dav record of an old key: the existing one, or a new one with the same value."""
        problem = key_problem(key)
        if problem:
            self.summary.skipped.append((self.shown_keys[key], problem))
            return None
        record = self.services.keys.verify(key)
        if record is None:
            try:
                record, _key = self.services.create_key(LABEL, key=key)
            except KeyExists:
                self.summary.skipped.append((self.shown_keys[key], "key is on file but expired: not imported"))
                return None
            self.summary.keys_created += 1
            return record
        self.summary.keys_reused += 1
        self.store.ensure_collection(record.collection)  # an old key whose collection went missing
        return record

    def _images_of(self, key: str) -> list[Path]:
        folder = self.files_dir / key
        if not folder.is_dir() or folder.is_symlink():
            return []
        return sorted(folder.iterdir())

    def _note_unlisted(self, listed: set[str]) -> None:
        unlisted = [p for p in self.files_dir.iterdir() if p.name != KEY_LIST and p.name not in listed]
        if unlisted:
            self.summary.skipped.append((f"files/: {len(unlisted)} other entr{'y' if len(unlisted) == 1 else 'ies'}",
                                         f"not keys listed in {KEY_LIST}"))

    def _shown(self, path: Path) -> str:
        """A source file as the summary shows it: its key by its place in the list, never by value."""
        return f"{self.shown_keys.get(path.parent.name, '?')}/{path.name}"

    def _import(self, record: KeyRecord, path: Path) -> None:
        try:
            reason = self._import_one(record, path)
        except (OSError, StorageError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
        except ImageRejected as exc:
            reason = f"refused ({exc.status}): {exc.reason}"
        if reason:
            self.summary.skipped.append((self._shown(path), reason))

    def _import_one(self, record: KeyRecord, path: Path) -> str | None:
        """Import one file; the reason it was skipped, or None."""
        st = path.lstat()
        if not stat.S_ISREG(st.st_mode):
            return "not a regular file"
        problem = name_problem(path.name)
        if problem:
            return problem
        cid = record.collection
        with open(path, "rb") as src:
            if sniff(src.read(SNIFF_BYTES)) is None:
                return "not an image"
            existing = self.store.stat(cid, path.name)
            if existing is not None:
                return self._compare(existing, src, st)
            src.seek(0)
            upload = self.store.begin_upload(cid, path.name)
            try:
                while chunk := src.read(self.store.block_size):
                    upload.write(chunk)
            except BaseException:
                self.store.abort(upload)
                raise
        mode = "off" if self.as_is else self.services.mode_for(record)
        try:
            entry = self.store.commit(
                upload, mode=mode, expected_length=st.st_size, create_only=True, mtime=st.st_mtime
            )
        except AlreadyExists:
            return "the name was taken meanwhile"
        self.summary.files += 1
        self.summary.bytes_before += st.st_size
        self.summary.bytes_after += entry.stored_size
        return None

    def _compare(self, existing: Entry, src: BinaryIO, st: os.stat_result) -> str | None:
        """None if `existing` is what an earlier run imported from this source file, else why not."""
        if existing.is_dir:
            return "a folder has that name"
        if existing.uploaded_size == st.st_size and int(existing.mtime) == int(st.st_mtime):
            self.summary.unchanged += 1
            return None
        if existing.sha1 == _sha1(src, self.store.block_size):
            self.summary.unchanged += 1
            return None
        return "the name is taken by other content"


def _sha1(src: BinaryIO, block_size: int) -> str:
    digest = hashlib.sha1()
    src.seek(0)
    while chunk := src.read(block_size):
        digest.update(chunk)
    return digest.hexdigest()


def run(config: Config, source: Path, *, as_is: bool = False) -> int:
    """The `import` command: import, print the summary; exit status 0, or 2 for a source in another layout."""
    services = open_services(config)
    try:
        summary = Importer(services, source, as_is=as_is).run()
    except SourceError as exc:
        print(f"import: {exc}", file=sys.stderr)
        return 2
    finally:
        services.close()
    print(summary.report())
    return 0
