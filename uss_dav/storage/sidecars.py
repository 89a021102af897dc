"""Files kept beside a collection's data: thumbnails and dead properties.

Both are derived or small, so they are replaced without fsync (a crash loses
at most a thumbnail to re-render or a property a client re-sends). Store
mixes this in; it supplies `thumbs`, `_meta_base` and `_replace_file`.
"""

from __future__ import annotations

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
                with ignore_missing:
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
        with ignore_missing:
            os.unlink(self._meta_base(cid, parts) + ".p")
