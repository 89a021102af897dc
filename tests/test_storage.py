"""Storage and key store in-process: the invariants the front ends rely on."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from uss_dav.keys import KeyExists, KeyStore
from uss_dav.storage import AlreadyExists, Store


def write(store: Store, rel: str, data: bytes, **options: object):
    upload = store.begin_upload("c", rel)
    upload.write(data)
    return store.commit(upload, **options)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path)
    s.ensure_collection("c")
    return s


def test_create_only_loser_leaves_the_winners_record(store: Store) -> None:
    write(store, "/a", b"first", create_only=True)
    with pytest.raises(AlreadyExists):
        write(store, "/a", b"second!", create_only=True)
    entry = store.stat("c", "/a")
    assert entry is not None and entry.etag == hashlib.sha1(b"first").hexdigest() and entry.size == 5
    assert store.open_read("c", "/a").read() == b"first"
    assert list(store.staging.iterdir()) == []


def test_a_record_for_another_inode_is_not_believed(store: Store, tmp_path: Path) -> None:
    write(store, "/a", b"described")
    path = tmp_path / "collections" / "c" / "a"
    path.unlink()
    path.write_bytes(b"copied in by hand")  # new inode, same name, old record left behind
    entry = store.stat("c", "/a")
    assert entry is not None and entry.size == len(b"copied in by hand")
    assert entry.sha1 is None and entry.etag != hashlib.sha1(b"described").hexdigest()


def test_an_existing_key_cannot_be_created_again(tmp_path: Path) -> None:
    keys = KeyStore(tmp_path)
    record, key = keys.create("one")
    with pytest.raises(KeyExists):
        keys.create("again", key=key)
    assert keys.verify(key) == record


def test_a_deleted_files_record_is_never_taken_for_a_new_file(store: Store, tmp_path: Path) -> None:
    """Inode numbers are reused: a cached record must be tied to its metadata file, not to an inode."""
    for _ in range(20):  # ext4 hands a freed inode number out again soon; try until it does
        write(store, "/a", b"first")
        assert store.stat("c", "/a").sha1 == hashlib.sha1(b"first").hexdigest()
        store.delete("c", "/a")
        path = tmp_path / "collections" / "c" / "a"
        path.write_bytes(b"other")  # same size, placed by hand: no record
        entry = store.stat("c", "/a")
        assert entry is not None and entry.sha1 is None, "a deleted file's record was believed"
        path.unlink()


def test_large_upload_digests_match_with_md5_in_its_own_thread(store: Store) -> None:
    """Past the inline part MD5 is computed on another thread: the record must still be exact."""
    data = bytes(range(256)) * (9 * 4096 + 7)  # about 9 MiB, not a multiple of the pieces
    upload = store.begin_upload("c", "/big.bin")
    for start in range(0, len(data), 65536):
        upload.write(data[start : start + 65536])
    entry = store.commit(upload, checksum="MD5:" + hashlib.md5(data).hexdigest())
    assert (entry.sha1, entry.md5) == (hashlib.sha1(data).hexdigest(), hashlib.md5(data).hexdigest())
    assert entry.size == len(data) and store.open_read("c", "/big.bin").read() == data
