"""Storing bytes straight through a Store, as a PUT's body would be (the `store` fixture is in conftest)."""

from __future__ import annotations

from typing import Any

from uss_dav.storage import Store
from uss_dav.storage.records import Entry


def write(store: Store, rel: str, data: bytes, **options: Any) -> Entry:
    """Store `data` at `rel` in collection "c" (Store.commit's `options`); the new entry."""
    upload = store.begin_upload("c", rel)
    upload.write(data)
    return store.commit(upload, **options)
