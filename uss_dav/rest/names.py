"""Which image names the REST API (and the importer) accept."""

from __future__ import annotations

import unicodedata

from uss_dav.storage import MAX_NAME_BYTES


def name_problem(name: str | None) -> str | None:
    """Why `name` cannot name an image, or None: one flat name, printable, not too long."""
    if not name:
        return "name is empty"
    if "/" in name or "\\" in name:
        return "name contains '/' or '\\': images live at the top of the collection"
    if ".." in name or name == ".":
        return "name contains '..' or is '.'"
    for char in name:
        category = unicodedata.category(char)
        if category == "Cc":
            return f"name contains control character U+{ord(char):04X}"
        if category == "Cs":
            return "name is not valid UTF-8"
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        return f"name is longer than {MAX_NAME_BYTES} bytes (UTF-8)"
    return None
