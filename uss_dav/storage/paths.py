"""Path rules: which names the store keeps, and how a collection path splits into them."""

from __future__ import annotations

import unicodedata

from uss_dav.storage.errors import InvalidPath

#: Longest name (UTF-8 bytes) of a file or folder: leaves room for the
#: two-character metadata suffix under the usual 255-byte file-system limit.
MAX_NAME_BYTES = 250


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
