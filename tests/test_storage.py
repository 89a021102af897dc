"""Storage and key store in-process: the invariants the front ends rely on."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.flock_holder import flock_held_elsewhere
from tests.server import ROOT
from tests.stores import write
from uss_dav import files
from uss_dav.files import RACY_NS
from uss_dav.keys import KeyExists, KeyStore
from uss_dav.storage import AlreadyExists, ChecksumMismatch, OutsideCollection, Store
from uss_dav.storage.records import naming_lock_path


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
    keys = KeyStore(tmp_path / "keys", tmp_path / "staging")
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


def test_a_new_file_or_folder_does_not_inherit_the_properties_of_a_delete_cut_short(store: Store) -> None:
    """A DELETE killed between the data's unlink and its properties' leaves a property file behind."""
    write(store, "/a.jpg", b"old")
    store.mkdir("c", "/album")
    for name in ("/a.jpg", "/album"):
        store.write_props("c", name, {"{urn:x}note": "the old one's"})
    (store.collections / "c" / "a.jpg").unlink()  # the DELETEs, cut short
    (store.collections / "c" / "album").rmdir()
    write(store, "/a.jpg", b"new")
    store.mkdir("c", "/album")
    assert store.read_props("c", "/a.jpg") == {} and store.read_props("c", "/album") == {}
    # Replacing a file keeps its properties: only a new name starts without any.
    store.write_props("c", "/a.jpg", {"{urn:x}note": "kept"})
    write(store, "/a.jpg", b"newer")
    assert store.read_props("c", "/a.jpg") == {"{urn:x}note": "kept"}


def test_a_kept_entry_follows_every_change_another_process_makes(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Entries are kept by path with their stat (Store._entry); another Store stands in for another process."""
    other = Store(tmp_path)
    for name in ("a", "b", "c"):
        write(store, f"/{name}", name.encode() * 100)
    time.sleep(RACY_NS / 1e9 + 0.05)  # settled: kept from now on
    assert [e.sha1 for e in store.list_entries("c", "/")] == [hashlib.sha1(n.encode() * 100).hexdigest() for n in "abc"]
    reads: list[object] = []
    real_getxattr = os.getxattr
    monkeypatch.setattr(os, "getxattr", lambda *a, **k: reads.append(a[0]) or real_getxattr(*a, **k))
    store.list_entries("c", "/")
    assert reads == [], "an unchanged folder was relisted from its records"

    write(other, "/a", b"A" * 100)  # replaced: same size, new inode
    assert other.md5("c", "/b", other.stat("c", "/b")) == hashlib.md5(b"b" * 100).hexdigest()  # record updated in place
    other.delete("c", "/c")
    (tmp_path / "collections" / "c" / "c").write_bytes(b"x" * 100)  # same size, by hand, no record
    reads.clear()
    a, b, c = store.list_entries("c", "/")
    assert a.sha1 == hashlib.sha1(b"A" * 100).hexdigest()
    assert b.md5 == hashlib.md5(b"b" * 100).hexdigest()
    assert c.sha1 is None and c.size == 100
    assert len(reads) == 3, reads  # each changed file's record is read again, and only those


def test_an_entry_kept_before_its_times_settled_is_given_again_only_with_the_same_record(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Within one clock tick a new version can show the same stat: its record is what tells it apart.

    The stat identity is made blind to times here, so "another version in
    the same tick" is certain rather than a matter of timing.
    """
    from uss_dav.storage import store as store_module
    from uss_dav.storage.records import RECORD_ATTR, pack_record, unpack_record

    monkeypatch.setattr(store_module, "stat_identity", lambda st: (st.st_ino, 0, 0, st.st_size))
    monkeypatch.setattr(store_module, "settled", lambda times, now: False)
    write(store, "/a", b"a" * 100)
    path = str(tmp_path / "collections" / "c" / "a")
    assert [e.sha1 for e in store.list_entries("c", "/")] == [hashlib.sha1(b"a" * 100).hexdigest()]

    record = unpack_record(os.getxattr(path, RECORD_ATTR))
    os.setxattr(path, RECORD_ATTR, pack_record({**record, "stored_size": 100, "sha1": "0" * 40}))
    assert [e.sha1 for e in store.list_entries("c", "/")] == ["0" * 40], "a same-stat version's entry was believed"
    entry = store.stat("c", "/a")
    assert entry is not None and entry.sha1 == "0" * 40

    reads: list[object] = []
    real_getxattr = os.getxattr
    monkeypatch.setattr(os, "getxattr", lambda *a, **k: reads.append(a[0]) or real_getxattr(*a, **k))
    store.list_entries("c", "/")
    assert reads == [path], "an unsettled entry was given without checking its record"
    monkeypatch.setattr(store_module, "settled", lambda times, now: True)
    reads.clear()
    store.list_entries("c", "/")  # checked once more, now that its times have settled
    store.list_entries("c", "/")
    assert reads == [path], reads


def test_md5_is_computed_when_first_asked_and_kept(store: Store) -> None:
    """A PUT hashes SHA-1 only; an OC-Checksum MD5 is still verified, and Store.md5 fills the record once."""
    data = bytes(range(256)) * (9 * 4096 + 7)  # about 9 MiB, not a multiple of the pieces
    upload = store.begin_upload("c", "/big.bin")
    for start in range(0, len(data), 65536):
        upload.write(data[start : start + 65536])
    entry = store.commit(upload, checksum="MD5:" + hashlib.md5(data).hexdigest())
    assert (entry.sha1, entry.md5) == (hashlib.sha1(data).hexdigest(), None)
    assert entry.size == len(data) and store.open_read("c", "/big.bin").read() == data
    assert store.md5("c", "/big.bin", entry) == hashlib.md5(data).hexdigest()
    kept = store.stat("c", "/big.bin")
    assert kept is not None and kept.md5 == hashlib.md5(data).hexdigest() and kept.sha1 == entry.sha1
    with pytest.raises(ChecksumMismatch):
        write(store, "/big.bin", b"other", checksum="MD5:" + hashlib.md5(data).hexdigest())
    assert store.open_read("c", "/big.bin").read() == data


def test_md5_asked_while_a_writer_holds_the_name_is_given_without_waiting_and_kept_later(store: Store) -> None:
    """Filling the MD5 into the record needs the name's naming lock. A reader (PROPFIND with
    oc:checksums) must not queue behind the holder: on CephFS a process killed while holding it
    left it held for minutes, and a listing hung on it. It gets the MD5 now; a later reader keeps it."""
    entry = write(store, "/f", b"held")
    lock = naming_lock_path(store._meta_base("c", ["f"]))
    with flock_held_elsewhere(lock):
        t0 = time.monotonic()
        assert store.md5("c", "/f", entry) == hashlib.md5(b"held").hexdigest()
        assert time.monotonic() - t0 < 1, "the reader waited for the naming lock"
        kept = store.stat("c", "/f")
        assert kept is not None and kept.md5 is None, "the record was changed without its naming lock"
    assert store.md5("c", "/f", entry) == hashlib.md5(b"held").hexdigest()
    kept = store.stat("c", "/f")
    assert kept is not None and kept.md5 == hashlib.md5(b"held").hexdigest()


def test_md5_of_a_file_replaced_meanwhile_is_not_given_for_the_old_entry(store: Store) -> None:
    old = write(store, "/f", b"one")
    write(store, "/f", b"two")
    assert store.md5("c", "/f", old) is None
    new = store.stat("c", "/f")
    assert new is not None and store.md5("c", "/f", new) == hashlib.md5(b"two").hexdigest()


WRITER_STUCK_BEFORE_RENAME = """
import os, sys, time
from uss_dav.keys import KeyStore
from uss_dav.storage import Store
store = Store(sys.argv[1])
store.ensure_collection("c")
def stuck(src, dst):
    print(src, flush=True)
    time.sleep(120)
os.replace = stuck  # the file is written; the process dies before renaming it into place
if sys.argv[2] == "record":
    store.write_props("c", "/", {"{urn:x}k": "v"})
else:
    KeyStore(store.keys_dir, store.staging).create("stuck")
"""


def test_a_sweep_between_a_writers_create_and_its_flock_cannot_take_the_writers_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A staged file exists unlocked for a moment after its create. A sweep (another process, any
    node, now every staging_sweep_interval) that lands there removes it while holding the lock;
    the writer must notice and stage again, not write into a file that is gone."""
    store = Store(tmp_path / "data")
    store.ensure_collection("c")
    real_flock, swept = files.fcntl.flock, []

    def sweep_first(fd: int, operation: int) -> None:
        if not swept and operation == files.fcntl.LOCK_EX:
            swept.append(store.sweep_staging())  # the window: created, not yet locked
        real_flock(fd, operation)

    monkeypatch.setattr(files.fcntl, "flock", sweep_first)
    upload = store.begin_upload("c", "/a.bin")
    monkeypatch.setattr(files.fcntl, "flock", real_flock)
    assert swept == [1], "the sweep did not land in the window"
    upload.write(b"kept")
    assert Path(upload.path).exists(), "the upload writes into a file the sweep removed"
    assert store.sweep_staging() == 0 and Path(upload.path).exists(), "a sweep removed a locked upload"
    store.commit(upload)
    assert store.open_read("c", "/a.bin").read() == b"kept"


@pytest.mark.parametrize("what", ["record", "key"])
def test_a_file_left_by_a_crash_is_swept_and_a_live_one_kept(tmp_path: Path, what: str) -> None:
    """A process killed between writing a record or key file and renaming it leaves the temporary file in staging/ only."""
    data = tmp_path / "data"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER_STUCK_BEFORE_RENAME, str(data), what],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )
    try:
        tmp = Path(writer.stdout.readline().strip())  # type: ignore[union-attr]
        assert tmp.parent == data / "staging" and tmp.exists(), tmp
        store = Store(data)
        assert store.sweep_staging() == 0 and tmp.exists(), "the sweep removed a file still being written"
        writer.kill()
        writer.wait(10)
        assert store.sweep_staging() == 1 and not tmp.exists(), "the crashed writer's file was not swept"
        assert list((data / "meta").rglob("*.tmp")) == [] and list((data / "keys").glob("*.tmp")) == []
    finally:
        writer.kill()
        writer.wait(10)


def test_only_regular_files_open_and_a_fifo_does_not_block(store: Store, tmp_path: Path) -> None:
    folder = tmp_path / "collections" / "c"
    (folder / "sub").mkdir()
    os.mkfifo(folder / "pipe")  # no writer: a blocking open would never return
    os.symlink(folder / "sub", folder / "link")
    write(store, "/sub/a", b"data")
    assert store.open("c", "/pipe") is None
    assert store.open("c", "/sub") is None
    assert store.open("c", "/") is None
    assert store.open("c", "/link/a") is None
    assert store.open("c", "/sub/a/b") is None
    assert store.open("c", "/missing/a") is None
    opened = store.open("c", "/sub/a")
    assert opened is not None and opened.stream().read() == b"data" and opened.entry.size == 4
    opened.close()


def test_md5_of_a_file_deleted_while_its_record_is_updated_is_still_given(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A DELETE takes no naming lock: it can come between the check and the record's update."""
    entry = write(store, "/f", b"bytes")
    checked = store._unchanged

    def delete_then_check(*args: object) -> bool:
        same = checked(*args)
        store.delete("c", "/f")
        return same

    monkeypatch.setattr(store, "_unchanged", delete_then_check)
    assert store.md5("c", "/f", entry) == hashlib.md5(b"bytes").hexdigest()
    assert store.stat("c", "/f") is None


def test_dropping_a_contents_thumbnails_reads_only_its_own_folder_and_keeps_the_others(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = "aa" * 20, "bb" * 20
    for sha1 in (a, b):
        store.write_thumbnail("c", sha1, 64, "webp", sha1.encode())
        store.write_thumbnail("c", sha1, 256, "jpeg", sha1.encode() * 2)
    listed: list[str] = []
    real_listdir = os.listdir
    monkeypatch.setattr(os, "listdir", lambda path: listed.append(os.fspath(path)) or real_listdir(path))
    store.drop_thumbnails("c", a)
    assert listed == [str(store.thumbs / "c" / a)]
    assert store.read_thumbnail("c", a, 64, "webp") is None and not (store.thumbs / "c" / a).exists()
    assert store.read_thumbnail("c", b, 256, "jpeg") == b.encode() * 2
    store.drop_thumbnails("c", a)  # nothing left: no error
    store.drop_thumbnails("other", b)


def test_a_thumbnail_written_while_its_folder_is_dropped_is_kept(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    sha1 = "cc" * 20
    store.write_thumbnail("c", sha1, 64, "webp", b"old")
    replace = store._replace_file
    dropped: list[bool] = []

    def drop_first(path: str, data: bytes) -> os.stat_result:
        if not dropped:
            dropped.append(True)
            store.drop_thumbnails("c", sha1)  # between the makedirs and the rename
        return replace(path, data)

    monkeypatch.setattr(store, "_replace_file", drop_first)
    store.write_thumbnail("c", sha1, 128, "webp", b"new")
    assert dropped and store.read_thumbnail("c", sha1, 128, "webp") == b"new"


def test_thumbnails_in_the_old_flat_layout_are_swept_and_the_new_ones_stay(store: Store) -> None:
    store.write_thumbnail("c", "dd" * 20, 64, "webp", b"kept")
    flat = store.thumbs / "c" / ("ee" * 20 + "-64.webp")
    flat.write_bytes(b"flat")
    (store.thumbs / "c2").mkdir()
    (store.thumbs / "c2" / ("ff" * 20 + "-16.jpeg")).write_bytes(b"flat")
    assert store.sweep_flat_thumbnails() == 2
    assert not flat.exists() and list((store.thumbs / "c2").iterdir()) == []
    assert store.read_thumbnail("c", "dd" * 20, 64, "webp") == b"kept"
    assert store.sweep_flat_thumbnails() == 0


def test_a_folder_made_a_symlink_after_the_walk_is_not_listed(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The walk refuses a symlink; one swapped in between the walk and the listing is refused at the open."""
    folder = tmp_path / "collections" / "c"
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "secret").write_bytes(b"x")
    (folder / "sub").mkdir()
    os.symlink(tmp_path / "elsewhere", folder / "link")
    with pytest.raises(OutsideCollection):
        store.list_entries("c", "/link/")
    real_walk = store._walk
    monkeypatch.setattr(store, "_walk", lambda cid, parts: (real_walk(cid, ["sub"])[0].replace("/sub", "/link"), None))
    with pytest.raises(OutsideCollection):
        store.list_entries("c", "/sub/")
