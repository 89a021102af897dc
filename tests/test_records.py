"""A file's record (size, checksums, encoding) lives in an extended attribute of the file itself.

One rename moves data and record together, so a PUT creates one file, not
two. Records written by earlier versions (`meta/<name>.m`) must keep reading,
and a file system without user xattrs must keep working with `.m` files.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

import uss_dav.storage.store as store_module
from hooks.results import LEPTON_JPEG
from tests.stores import write
from uss_dav.storage import Store
from uss_dav.storage.records import RECORD_ATTR, pack_record, read_record, unpack_record

IMAGE_RECORD = {
    "ino": 1234567890123,
    "stored_size": 700,
    "size": 1000,
    "uploaded_size": 1000,
    "sha1": hashlib.sha1(b"x").hexdigest(),
    "md5": hashlib.md5(b"x").hexdigest(),
    "encoding": "lepton-jpeg",
    "format": "jpeg",
    "width": 4000,
    "height": 3000,
    "mode": "exact",
}




def test_an_image_record_packs_into_64_bytes_and_reads_back_whole() -> None:
    raw = pack_record(IMAGE_RECORD)
    assert len(raw) == 64  # what ext4 keeps inside a 256-byte inode beside the attribute's name
    back = unpack_record(raw)
    for key in ("size", "uploaded_size", "sha1", "md5", "encoding", "format", "width", "height", "mode"):
        assert back[key] == IMAGE_RECORD[key], key
    assert back["stored32"] == IMAGE_RECORD["stored_size"]


def test_a_record_of_a_plain_file_keeps_its_empty_fields_empty() -> None:
    plain = {**IMAGE_RECORD, "encoding": "identity", "format": None, "width": None, "height": None, "mode": None}
    back = unpack_record(pack_record(plain))
    assert (back["encoding"], back["format"], back["width"], back["height"], back["mode"]) == (
        "identity", None, None, None, None)


def test_a_value_the_compact_layout_cannot_hold_is_recorded_as_json() -> None:
    for odd in ({"encoding": "some-future-codec"}, {"size": 1 << 50}, {"uploaded_size": None}, {"width": 0}):
        record = {**IMAGE_RECORD, **odd}
        raw = pack_record(record)
        assert raw.startswith(b"{")
        back = unpack_record(raw)
        assert {k: back[k] for k in odd} == odd
        assert back["stored32"] == IMAGE_RECORD["stored_size"] and "ino" not in back


@pytest.mark.parametrize("raw", [b"", b"\x02" + bytes(63), b"\x01" + bytes(10), b"\x01\xff" + bytes(62), b"[1]"])
def test_bytes_of_no_known_layout_are_refused(raw: bytes) -> None:
    with pytest.raises(ValueError):
        unpack_record(raw)


def test_a_put_sets_the_record_on_the_file_and_writes_no_meta_file(store: Store, tmp_path: Path) -> None:
    write(store, "/a.bin", b"hello")
    path = tmp_path / "collections" / "c" / "a.bin"
    record = read_record(str(path))
    assert record is not None and record["sha1"] == hashlib.sha1(b"hello").hexdigest() and record["size"] == 5
    assert record["stored32"] == path.stat().st_size == 5
    assert list((tmp_path / "meta").rglob("*.m")) == []
    assert list(store.staging.iterdir()) == []


def test_a_copy_gets_a_record_of_its_own(store: Store, tmp_path: Path) -> None:
    write(store, "/a.bin", b"hello")
    store.copy_file("c", "/a.bin", "/b.bin")
    entry = store.stat("c", "/b.bin")
    assert entry is not None and entry.sha1 == hashlib.sha1(b"hello").hexdigest()
    assert read_record(str(tmp_path / "collections" / "c" / "b.bin"))["sha1"] == entry.sha1


def test_a_moved_file_takes_its_record_along(store: Store) -> None:
    write(store, "/a.bin", b"hello")
    store.move("c", "/a.bin", "/b.bin")
    entry = store.stat("c", "/b.bin")
    assert entry is not None and entry.sha1 == hashlib.sha1(b"hello").hexdigest()


def test_a_record_written_by_an_earlier_version_still_reads_and_goes_with_an_overwrite(
    store: Store, tmp_path: Path
) -> None:
    """Versions before this one kept the record in meta/<cid>/<name>.m, as JSON naming inode and stored size."""
    path = tmp_path / "collections" / "c" / "old.bin"
    path.write_bytes(b"old bytes")
    st = path.stat()
    legacy = tmp_path / "meta" / "c" / "old.bin.m"
    sha1 = hashlib.sha1(b"old bytes").hexdigest()
    legacy.write_text(json.dumps({"ino": st.st_ino, "stored_size": st.st_size, "size": st.st_size,
                                  "sha1": sha1, "md5": hashlib.md5(b"old bytes").hexdigest(),
                                  "encoding": "identity"}))
    entry = store.stat("c", "/old.bin")
    assert entry is not None and entry.etag == sha1
    assert [e.sha1 for e in store.list_entries("c", "/")] == [sha1]
    write(store, "/old.bin", b"new bytes")
    entry = store.stat("c", "/old.bin")
    assert entry is not None and entry.etag == hashlib.sha1(b"new bytes").hexdigest()
    assert not legacy.exists()


def test_without_user_xattrs_records_are_kept_in_meta_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """tmpfs before Linux 6.6 and some network file systems refuse user.* attributes."""

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise OSError(95, "Operation not supported")

    monkeypatch.setattr(store_module.os, "setxattr", refuse)
    store = Store(tmp_path)
    store.ensure_collection("c")
    assert not store.records_in_xattrs
    write(store, "/a.bin", b"one")
    write(store, "/a.bin", b"two")
    store.copy_file("c", "/a.bin", "/b.bin")
    store.move("c", "/b.bin", "/c.bin")
    for name in ("/a.bin", "/c.bin"):
        entry = store.stat("c", name)
        assert entry is not None and entry.etag == hashlib.sha1(b"two").hexdigest(), name
    assert sorted(p.name for p in (tmp_path / "meta" / "c").glob("*.m")) == ["a.bin.m", "c.bin.m"]
    assert os.listxattr(tmp_path / "collections" / "c" / "a.bin") == []
    store.delete("c", "/a.bin")
    assert not (tmp_path / "meta" / "c" / "a.bin.m").exists()


def test_a_record_read_across_an_overwrite_is_not_believed(store: Store, tmp_path: Path) -> None:
    """A lookup by name stats one version and may read the record of the next: the stored size tells them apart."""
    write(store, "/a.bin", b"hello")
    path = tmp_path / "collections" / "c" / "a.bin"
    old = path.stat()
    write(store, "/a.bin", b"a longer version")
    assert store._read_meta("c", ["a.bin"], old, str(path)) is None
    assert store._read_meta("c", ["a.bin"], path.stat(), str(path))["sha1"] == hashlib.sha1(b"a longer version").hexdigest()


def test_a_data_directory_copied_with_its_xattrs_keeps_every_record(tmp_path: Path) -> None:
    """rsync -aX or cp -a to another disk: every inode is new, and encoded files must still read back."""
    source = Store(tmp_path / "a")
    source.ensure_collection("c")
    write(source, "/plain.bin", b"as uploaded")
    # A file stored encoded, as the exact mode leaves it: its record is what says how to read it.
    stored = tmp_path / "a" / "collections" / "c" / "photo.jpg"
    stored.write_bytes(b"not a real lepton stream")
    os.setxattr(stored, RECORD_ATTR, pack_record({
        **IMAGE_RECORD, "stored_size": stored.stat().st_size, "encoding": LEPTON_JPEG}))
    copy = tmp_path / "b"
    subprocess.run(["cp", "-a", str(tmp_path / "a"), str(copy)], check=True)
    moved = Store(copy)
    plain = moved.stat("c", "/plain.bin")
    assert plain is not None and plain.etag == hashlib.sha1(b"as uploaded").hexdigest()
    assert plain.ino != source.stat("c", "/plain.bin").ino
    photo = moved.stat("c", "/photo.jpg")
    assert photo is not None and photo.encoding == LEPTON_JPEG and photo.size == IMAGE_RECORD["size"]
