"""Durability of an upload in-process: what is fsynced, in which order, and handed to the disk early."""

from __future__ import annotations

import hashlib
import itertools
import os
from pathlib import Path

import pytest

import uss_dav.storage.upload as upload_module
from tests.stores import write
from uss_dav.keys import KeyStore
from uss_dav.storage import Store


def test_put_fsyncs_the_data_before_its_rename_and_the_folder_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        real_replace(src, dst)
        events.append(("rename", str(dst)))

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    store = Store(tmp_path)
    store.ensure_collection("c")
    upload = store.begin_upload("c", "/a.bin")
    upload.write(b"x" * 10240)
    store.commit(upload)

    target = str(store.collections / "c" / "a.bin")
    renamed = events.index(("rename", target))
    assert any(e == ("fsync", upload.path) for e in events[:renamed]), events
    assert ("fsync", str(store.collections / "c")) in events[renamed:], events


def test_a_large_upload_is_handed_to_the_disk_whole_while_it_arrives(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    ranges: list[tuple[int, int]] = []
    monkeypatch.setattr(upload_module, "start_writeback", lambda fd, offset, length: ranges.append((offset, length)))
    data = os.urandom(3 * 1024 * 1024 + 12345)
    upload = store.begin_upload("c", "/big.bin")
    for start in range(0, len(data), 65536):
        upload.write(data[start : start + 65536])
    assert len(ranges) == 3, "write-behind did not start while the body was arriving"
    entry = store.commit(upload)
    assert ranges[0][0] == 0 and sum(length for _, length in ranges) == len(data)
    assert all(a + n == b for (a, n), (b, _) in itertools.pairwise(ranges)), ranges
    assert entry.sha1 == hashlib.sha1(data).hexdigest() and store.md5("c", "/big.bin", entry) == hashlib.md5(data).hexdigest()
    assert store.open_read("c", "/big.bin").read() == data


def test_a_small_upload_makes_no_write_behind_calls(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    ranges: list[tuple[int, int]] = []
    monkeypatch.setattr(upload_module, "start_writeback", lambda fd, offset, length: ranges.append((offset, length)))
    upload = store.begin_upload("c", "/small.bin")
    upload.write(b"y" * 10240)
    store.commit(upload)
    assert ranges == []


def fsynced_paths(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What os.fsync is called on from now on, in order, by path."""
    paths: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        paths.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return paths


def test_a_new_folder_is_fsynced_and_then_the_folder_that_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(tmp_path)
    fsynced = fsynced_paths(monkeypatch)
    store.ensure_collection("c")  # a key's collection: as durable as the key
    collection, meta = store.collections / "c", store.meta / "c"
    assert fsynced == [str(collection), str(collection.parent), str(meta), str(meta.parent)]
    fsynced.clear()
    store.ensure_collection("c")
    assert fsynced == []
    store.mkdir("c", "/album")  # MKCOL
    assert fsynced == [str(collection / "album"), str(collection)]


def test_a_delete_fsyncs_the_folder_that_held_the_file(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    write(store, "/gone.bin", b"z" * 100)
    fsynced = fsynced_paths(monkeypatch)
    store.delete("c", "/gone.bin")
    assert fsynced == [str(store.collections / "c")]


def test_a_move_fsyncs_the_new_name_s_folder_then_the_old_one_s(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    write(store, "/draft.bin", b"z" * 100)
    store.mkdir("c", "/album")
    fsynced = fsynced_paths(monkeypatch)
    store.move("c", "/draft.bin", "/photo.bin")  # a save: one folder, one fsync
    assert fsynced == [str(store.collections / "c")]
    fsynced.clear()
    store.move("c", "/photo.bin", "/album/photo.bin")
    assert fsynced == [str(store.collections / "c" / "album"), str(store.collections / "c")]


def test_a_purged_collection_is_gone_for_good(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    write(store, "/photo.bin", b"z" * 100)
    fsynced = fsynced_paths(monkeypatch)
    store.remove_collection("c")  # keys revoke --purge
    assert not (store.collections / "c").exists()
    assert fsynced == [str(store.collections), str(store.meta), str(store.thumbs)]


def test_a_revoked_or_rotated_out_key_is_gone_for_good(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keys = KeyStore(tmp_path / "keys", tmp_path / "staging")
    rotated, _ = keys.create("rotated")
    revoked, _ = keys.create("revoked")
    fsynced = fsynced_paths(monkeypatch)
    keys.rotate(rotated.id)  # the new key's file (fsynced, renamed in, folder fsynced), then the old one's unlink
    assert fsynced[-1] == str(tmp_path / "keys") and fsynced.count(str(tmp_path / "keys")) == 2, fsynced
    fsynced.clear()
    keys.revoke(revoked.id)
    assert fsynced == [str(tmp_path / "keys")]
