"""The text of ownCloud's `oc:checksum` for a file: what rclone and ownCloud clients compare with their own."""

from __future__ import annotations

from uss_dav.storage import Entry, Store


def oc_checksum(store: Store, cid: str, rel: str, entry: Entry) -> str:
    """`SHA1:<hex> MD5:<hex>` of the bytes GET returns; MD5 is computed on the first request (Store.md5).

    MD5 stays listed: rclone compares MD5 when both sides have it. A file
    replaced between the listing's look-up and this call lists SHA-1 alone.
    """
    md5 = store.md5(cid, rel, entry)
    return f"SHA1:{entry.sha1} MD5:{md5}" if md5 else f"SHA1:{entry.sha1}"
