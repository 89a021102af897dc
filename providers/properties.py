"""Dead properties kept on disk beside the data, through uss_dav.storage.

WsgiDAV's property managers keep one dict (or shelve) per process; this one
stores each resource's properties in its own metadata file, so they survive
restarts, are shared by every process on the data directory and move, copy
and disappear together with the file (storage does that, which is why the
copy/move/remove hooks below have nothing left to do).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from providers.collection import call_mapped
from uss_dav.storage import Store


def _split(ref_url: str) -> tuple[str, str]:
    """(collection id, path) of a ref URL made by providers.collection."""
    cid, _, rest = unquote(ref_url).lstrip("/").partition("/")
    return cid, "/" + rest


class SidecarPropertyManager:
    """Duck-typed WsgiDAV property manager (see wsgidav.prop_man.property_manager)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def get_properties(self, norm_url: str, environ: Any = None) -> list[str]:
        return list(self.store.read_props(*_split(norm_url)))

    def get_property(self, norm_url: str, name: str, environ: Any = None) -> str | None:
        return self.store.read_props(*_split(norm_url)).get(name)

    def write_property(
        self, norm_url: str, name: str, property_value: bytes | str, dry_run: bool = False, environ: Any = None
    ) -> None:
        if dry_run:
            return
        if isinstance(property_value, bytes):
            property_value = property_value.decode("utf-8")
        cid, path = _split(norm_url)
        props = self.store.read_props(cid, path)
        props[name] = property_value
        call_mapped(self.store.write_props, cid, path, props)  # a full or read-only disk: that property's 507 or 503

    def remove_property(self, norm_url: str, name: str, dry_run: bool = False, environ: Any = None) -> None:
        if dry_run:
            return
        cid, path = _split(norm_url)
        props = self.store.read_props(cid, path)
        if props.pop(name, None) is not None:
            call_mapped(self.store.write_props, cid, path, props)

    def remove_properties(self, norm_url: str, environ: Any = None) -> None:
        self.store.write_props(*_split(norm_url), {})

    def copy_properties(self, src_url: str, dest_url: str, environ: Any = None) -> None:
        """Storage.copy_file / copy_folder already copied them."""

    def move_properties(self, src_url: str, dest_url: str, with_children: bool, environ: Any = None) -> None:
        """Storage.move already moved them."""
