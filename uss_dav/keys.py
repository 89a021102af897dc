"""The key store: create, verify, rotate, revoke and list API keys.

A key is shown once and never stored: each key is a small JSON file named by
the SHA-256 of the key, so verifying is one file look-up with no scan and no
process-local cache, and a rotation or revocation made by any process on the
same data directory takes effect on the next request everywhere.
"""

from __future__ import annotations

import calendar
import dataclasses
import hashlib
import json
import logging
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from uss_dav.files import atomic_write_bytes, fsync_dir

log = logging.getLogger(__name__)

KEY_PREFIX = "uss_"
#: rw: everything; ro: GET, HEAD, PROPFIND; upload: PUT of new files only.
SCOPES = ("rw", "ro", "upload")
#: Longest credential we hash; anything longer is refused before hashing.
MAX_KEY_LENGTH = 512
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def utc_timestamp(seconds: float | None = None) -> str:
    return time.strftime(TIME_FORMAT, time.gmtime(seconds))


_UNITS = {"d": 86400, "h": 3600, "m": 60}


def parse_expiry(text: str, now: float | None = None) -> str:
    """An expiry as an ISO UTC time stamp, from a lifetime (30d, 12h, 90m) or a time stamp itself."""
    number, unit = text[:-1], text[-1:].lower()
    if unit in _UNITS and number.isdigit() and int(number) > 0:
        return utc_timestamp((time.time() if now is None else now) + int(number) * _UNITS[unit])
    try:
        time.strptime(text, TIME_FORMAT)
    except ValueError:
        raise ValueError("expires must be a lifetime such as 30d, 12h or 90m, or YYYY-MM-DDTHH:MM:SSZ") from None
    return text


class UnknownKey(LookupError):
    """No key has that id."""


class KeyExists(ValueError):
    """That key is already on file (perhaps expired): creating it again would orphan its collection."""


@dataclass(frozen=True)
class KeyRecord:
    """What the server knows about a key: never the key itself."""

    id: str
    collection: str
    label: str
    created: str
    compression: str | None = None
    scope: str = "rw"
    #: ISO 8601 UTC time after which the key is refused, or None.
    expires: str | None = None
    #: This key's quota (bytes, files); None: the configured default.
    quota_bytes: int | None = None
    quota_files: int | None = None

    def expired(self, now: float | None = None) -> bool:
        if not self.expires:
            return False
        deadline = calendar.timegm(time.strptime(self.expires, TIME_FORMAT))
        return (time.time() if now is None else now) >= deadline


def new_key() -> str:
    """A fresh key: the fixed prefix lets secret scanners spot a leak; 256 random bits."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


class KeyStore:
    """All key files live in one directory; nothing else reads them."""

    def __init__(self, keys_dir: Path, staging_dir: Path) -> None:
        self.dir = Path(keys_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._dir = str(self.dir)
        # Key files are written here first, so a crash's leftover is swept with the uploads'.
        self._staging = Path(staging_dir)
        self._staging.mkdir(parents=True, exist_ok=True)
        # digest -> (inode, mtime_ns, record): checked against a stat of the
        # key file on every use, so a rotation or revocation by any process
        # is seen at once; only the read and parse are saved.
        self._cache: dict[str, tuple[int, int, KeyRecord]] = {}

    def _path(self, digest: str) -> str:
        return f"{self._dir}/{digest}.json"

    def _write(self, digest: str, record: KeyRecord) -> None:
        data = json.dumps(dataclasses.asdict(record), sort_keys=True).encode()
        atomic_write_bytes(self._path(digest), data, self._staging)

    def _remove(self, path: str) -> None:
        """Unlink a key file, durably: a revoked or rotated-out key must stay refused after a power cut."""
        os.unlink(path)
        fsync_dir(self._dir)

    def _read(self, path: str) -> KeyRecord | None:
        try:
            with open(path, "rb") as fh:
                return KeyRecord(**json.loads(fh.read()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError):
            log.warning("unreadable key file %s ignored", os.path.basename(path))
            return None

    def _entries(self) -> list[tuple[str, KeyRecord]]:
        found = []
        for path in sorted(str(p) for p in self.dir.glob("*.json")):
            record = self._read(path)
            if record is not None:
                found.append((path, record))
        return found

    def create(
        self,
        label: str = "",
        compression: str | None = None,
        *,
        key: str | None = None,
        collection: str | None = None,
        scope: str = "rw",
        expires: str | None = None,
        quota_bytes: int | None = None,
        quota_files: int | None = None,
    ) -> tuple[KeyRecord, str]:
        """Make a key and its (new) collection id; return the record and the key.

        `key` lets an import keep an existing credential working.
        """
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}")
        key = key or new_key()
        if os.path.exists(self._path(key_digest(key))):
            raise KeyExists("that key is already on file")
        key_id = secrets.token_hex(6)
        record = KeyRecord(
            id=key_id,
            collection=collection or key_id,
            label=label,
            created=utc_timestamp(),
            compression=compression,
            scope=scope,
            expires=expires,
            quota_bytes=quota_bytes,
            quota_files=quota_files,
        )
        self._write(key_digest(key), record)
        return record, key

    def verify(self, key: str) -> KeyRecord | None:
        """Return the record of a valid, unexpired key, or None."""
        if not key or len(key) > MAX_KEY_LENGTH:
            return None
        digest = key_digest(key)
        path = self._path(digest)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            self._cache.pop(digest, None)
            return None
        cached = self._cache.get(digest)
        if cached is not None and cached[:2] == (st.st_ino, st.st_mtime_ns):
            record: KeyRecord | None = cached[2]
        else:
            record = self._read(path)
            if record is not None:
                if len(self._cache) > 100_000:
                    self._cache.clear()
                self._cache[digest] = (st.st_ino, st.st_mtime_ns, record)
        if record is None or record.expired():
            return None
        return record

    def get(self, key_id: str) -> KeyRecord:
        for _path, record in self._entries():
            if record.id == key_id:
                return record
        raise UnknownKey(key_id)

    def list(self) -> list[KeyRecord]:
        return sorted((r for _p, r in self._entries()), key=lambda r: r.created)

    def rotate(self, key_id: str) -> tuple[KeyRecord, str]:
        """Issue a new key for the same collection; the old key stops working now."""
        for path, record in self._entries():
            if record.id == key_id:
                key = new_key()
                self._write(key_digest(key), record)
                self._remove(path)
                return record, key
        raise UnknownKey(key_id)

    def revoke(self, key_id: str) -> KeyRecord:
        for path, record in self._entries():
            if record.id == key_id:
                self._remove(path)
                return record
        raise UnknownKey(key_id)
