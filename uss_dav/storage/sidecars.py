"""Files kept beside a collection's data: thumbnails and dead properties.

Both are derived or small, so they are replaced without fsync (a crash loses
at most a thumbnail to re-render or a property a client re-sends). Store
mixes this in; it supplies `thumbs`, `_meta_base` and `_replace_file`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from uss_dav.files import ignore_missing
from uss_dav.storage.paths import split_path

log = logging.getLogger(__name__)


class Sidecars:
    """Thumbnails (keyed by the SHA-1 of the content they show) and dead-property files."""

    thumbs: Path

    def _meta_base(self, cid: str, parts: list[str]) -> str:
        raise NotImplementedError

    def _replace_file(self, path: str, data: bytes) -> os.stat_result:
        raise NotImplementedError

    def _write_meta(self, cid: str, parts: list[str], suffix: str, value: dict[str, Any]) -> None:
        raise NotImplementedError

    # --- thumbnails ----------------------------------------------------------
    #
    # One folder per content: thumbs/<cid>/<sha1>/<size>.<ext>. Dropping the
    # thumbnails of a replaced or deleted image then reads that folder only.
    # They used to lie flat in thumbs/<cid>/ as <sha1>-<size>.<ext>, and every
    # DELETE and overwrite listed all of them (milliseconds per request with
    # thousands); sweep_flat_thumbnails removes those at start.

    def _thumb_folder(self, cid: str, sha1: str) -> str:
        return os.path.join(self.thumbs, cid, sha1)

    def read_thumbnail(self, cid: str, sha1: str, size: int, ext: str) -> bytes | None:
        try:
            with open(f"{self._thumb_folder(cid, sha1)}/{size}.{ext}", "rb") as fh:
                return fh.read()
        except FileNotFoundError:
            return None

    def write_thumbnail(self, cid: str, sha1: str, size: int, ext: str, data: bytes) -> None:
        """Keep a thumbnail of the content with this SHA-1; a changed image has a new SHA-1."""
        folder = self._thumb_folder(cid, sha1)
        for attempt in range(3):
            os.makedirs(folder, exist_ok=True)
            try:
                self._replace_file(f"{folder}/{size}.{ext}", data)
                return
            except FileNotFoundError:  # the folder was dropped meanwhile (drop_thumbnails): make it again
                if attempt == 2:
                    raise

    def drop_thumbnails(self, cid: str, sha1: str | None) -> None:
        """Forget the thumbnails of content that is no longer stored under a name."""
        if not sha1:
            return
        folder = self._thumb_folder(cid, sha1)
        try:
            names = os.listdir(folder)
        except (FileNotFoundError, NotADirectoryError):
            return
        for name in names:
            with ignore_missing:
                os.unlink(f"{folder}/{name}")
        with contextlib.suppress(OSError):  # a thumbnail written meanwhile keeps its folder
            os.rmdir(folder)

    def sweep_flat_thumbnails(self) -> int:
        """Remove thumbnails in the flat layout of earlier versions (files directly in thumbs/<cid>/); how many.

        They are never read again: the next request renders the thumbnail
        into the content's folder.
        """
        removed = 0
        for cid in os.listdir(self.thumbs):
            try:
                with os.scandir(os.path.join(self.thumbs, cid)) as it:
                    flat = [e.path for e in it if e.is_file(follow_symlinks=False)]
            except NotADirectoryError:
                continue
            for path in flat:
                with ignore_missing:
                    os.unlink(path)
                    removed += 1
        return removed

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
        with ignore_missing:
            os.unlink(self._meta_base(cid, parts) + ".p")
