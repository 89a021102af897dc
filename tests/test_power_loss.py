"""A power cut right after the answers: every change the server acknowledged is on the disk, whole.

The server's data directory is on an ext4 file system in an image file,
mounted through a loop device (root, which CI has): with a journal, as
most are, and without one, as the disk the bench runs on. Clients upload new
files, replace others, and save as Finder does (upload under a new name,
then MOVE it over the old one). One client ends with a MKCOL, a DELETE
and a MOVE into the new folder, and a second key is revoked (`keys
revoke`); with the others in the middle of requests, every process of the
server is stopped (SIGSTOP) and, once the loop device has gone quiet, the
image is copied. What the copy holds is what a power cut at that moment
would leave: what the kernel had not yet sent to the device is not in it.
(Writes the device took but had not yet flushed are in it, so the cut is
gentler than a real one by that much.) The copy is checked with e2fsck
(with a journal, it may only replay it and correct free counts; without
one, it mends what fsync does not write, such as the allocation bitmaps),
mounted, and served by a new server, which must give back every upload
it had acknowledged, with the size, ETag and checksums of those bytes,
the folder it made, and nothing under a name an acknowledged MOVE or
DELETE took away, and refuse the revoked key; a name whose new version was in flight holds the old
version or the new one, whole.

The file system is mounted with `commit=60`, so its journal commits only
when something fsyncs, not on its 5 s timer in the middle of the test.
The control runs the same cut with fsync made a no-op (eatmydata): the
check must then find acknowledged uploads missing, which shows it can fail.
Taking out either fsync of a PUT, the file's or its folder's, fails the
test too, with a journal and without one; without one, so does taking
out the folder fsync of MOVE (either folder's, for a MOVE between two),
DELETE or a key's revocation, or MKCOL's fsync of its new folder (tried
when they were written).
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from bench.harness import proc
from bench.harness.servers import EATMYDATA
from tests.balanced import Described, describes, propfind, sha1
from tests.client import session_for, unavailable
from tests.server import ROOT, RunningServer
from uss_dav.keys import key_digest

IMAGE_MB = 256
CLIENTS = 3
#: How long the clients upload before the cut.
LOAD_SECONDS = 2.0
#: How many names of its own a client replaces in turn (by PUT, and by a MOVE over them).
REPLACED = 4
JPEG = (ROOT / "tests" / "data" / "corpus" / "photo_exif_icc_xmp.jpg").read_bytes()


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)


def make_ext4(image: Path, *, journal: bool) -> None:
    """An empty ext4 file system in the file `image` (with a journal or without one, as the bench's disk)."""
    image.write_bytes(b"")
    os.truncate(image, IMAGE_MB << 20)
    # Inode tables and journal written now: no lazy-init thread writes to the device later.
    options = ["-E", "lazy_itable_init=0,lazy_journal_init=0", *([] if journal else ["-O", "^has_journal"])]
    made = run("mkfs.ext4", "-q", "-F", *options, str(image))
    if made.returncode != 0:
        unavailable(f"mkfs.ext4 failed: {made.stderr.strip() or made.returncode}")


@contextmanager
def loop_mounted(image: Path, mount: Path, *options: str) -> Iterator[str]:
    """The file system in `image` mounted on `mount` through a loop device, for the block: the device's name."""
    mount.mkdir(exist_ok=True)
    done = run("mount", "-o", ",".join(("loop", *options)), str(image), str(mount))
    if done.returncode != 0:
        unavailable(f"cannot mount an ext4 image through a loop device (it needs root): {done.stderr.strip()}")
    try:
        yield os.path.basename(run("findmnt", "-n", "-o", "SOURCE", str(mount)).stdout.strip())
    finally:
        unmount(mount)


def unmount(mount: Path, patience: float = 10.0) -> None:
    """umount, retried while the file system is busy; a failure names what still holds it.

    It is busy now and then for a moment after every process of the server
    is gone, held by no process (seen a few times in some forty runs, 0.1 s
    the one time it was timed): the kernel lets go of their files a little later.
    """
    deadline = time.monotonic() + patience
    while (done := run("umount", str(mount))).returncode != 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    if done.returncode != 0:
        holders = holding(mount)
        run("umount", "--lazy", str(mount))
        raise AssertionError(f"umount {mount}: {done.stderr.strip()}; held by {holders or 'no process'}")


def holding(mount: Path) -> dict[int, str]:
    """The processes with a file (or their working folder) under `mount`: pid -> command line."""
    found = {}
    for pid in proc.all_pids():
        with contextlib.suppress(OSError):
            links = [os.readlink(f"/proc/{pid}/cwd"), *proc.open_files(pid)]
            if any(link.startswith(f"{mount}/") or link == str(mount) for link in links):
                found[pid] = f"{proc.cmdline(pid)} ({proc.stat(pid)})"
    return found


#: What e2fsck may say of a file system cut off mid-write that lost nothing: it replays the
#: journal, frees the files that were deleted while still open, and corrects the free counts
#: (ext4 keeps those up to date in memory only). Any other line is damage.
FSCK_FINE = re.compile(
    r"(.*: recovering journal|Pass \d: .*|Clearing orphaned inode .*|Free (blocks|inodes) count wrong.*|Fix\? yes"
    r"|.*\*\*\*\*\* FILE SYSTEM WAS MODIFIED \*\*\*\*\*|.*: \d+/\d+ files .* blocks|)"
)


def wait_until_quiet(device: str, quiet: float = 0.3, limit: float = 20.0) -> None:
    """Until `device` has nothing in flight and has taken no write for `quiet` seconds."""
    stat = Path(f"/sys/block/{device}/stat")
    deadline = time.monotonic() + limit
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        fields = stat.read_text().split()
        now = (int(fields[4]), int(fields[8]))  # writes completed, requests in flight
        if now != last or now[1]:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(0.02)
    raise AssertionError(f"{device} did not go quiet within {limit} s")


@dataclass
class Writer:
    """One client, in its own folder; what was acknowledged, exactly.

    In turn it uploads a new name, replaces one of a few names, uploads
    another new name and moves that over the name it replaced: the save of
    Finder or an office suite (a temporary name, then MOVE over the document).
    """

    idx: int
    url: str
    key: str
    rng: random.Random = field(init=False)
    #: name -> the bytes acknowledged last (201 or 204).
    acked: dict[str, bytes] = field(default_factory=dict)
    #: name -> the bytes of a request sent after the last acknowledgement and never answered.
    in_flight: dict[str, bytes] = field(default_factory=dict)
    #: Names taken away by an acknowledged MOVE or DELETE.
    gone: set[str] = field(default_factory=set)
    #: (from, to) of a MOVE sent and never answered.
    moving: tuple[str, str] | None = None
    #: Folders made by an acknowledged MKCOL.
    folders: list[str] = field(default_factory=list)
    #: Requests answered with success.
    answered: int = 0
    problems: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.idx)

    @property
    def folder(self) -> str:
        return f"p/c{self.idx}/"

    def body(self, n: int) -> bytes:
        if n % 7 == 3:
            return JPEG  # stored through the exact codec: the file renamed in is not the upload
        return self.rng.randbytes(self.rng.randrange(1, 48 << 10))

    def run(self, stop: threading.Event, finish: bool) -> None:
        """Until `stop` is set; then, if `finish`, to the end of a save (the one that ends on a MOVE),
        a MKCOL, a DELETE and a MOVE into the new folder.

        Only a client stopped before the cut finishes: one stopped after it may
        be between two requests, and the server would answer none of those.
        """
        session = session_for(self.key)
        n = 0
        while not stop.is_set() or (finish and n % 4):
            replaced = f"over-{n // 4 % REPLACED}.bin"
            if n % 4 == 3:
                done = self.move(session, f"new-{n - 1:04d}.bin", replaced)
            else:
                done = self.put(session, replaced if n % 4 == 1 else f"new-{n:04d}.bin", self.body(n))
            if not done:
                return
            self.answered += 1
            n += 1
        if not finish:
            return
        folder = f"album-{n:04d}/"
        r = session.request("MKCOL", self.url + "/" + self.folder + folder, timeout=3)
        if r.status_code != 201:
            self.problems.append(f"MKCOL {folder}: {r.status_code}: {r.text[:200]}")
        self.folders.append(folder)
        # And a DELETE, after which nothing of this client fsyncs its folder.
        deleted = next(name for name in self.acked if name.startswith("new-"))
        r = session.delete(self.url + "/" + self.folder + deleted, timeout=3)
        if r.status_code != 204:
            self.problems.append(f"DELETE {deleted}: {r.status_code}: {r.text[:200]}")
        del self.acked[deleted]
        self.gone.add(deleted)
        # And a MOVE into the new folder, after which nothing of this client fsyncs either folder.
        moved = next(name for name in self.acked if name.startswith("new-"))
        if self.move(session, moved, folder + moved):
            self.answered += 1

    def put(self, session: requests.Session, name: str, data: bytes) -> bool:
        self.in_flight[name] = data
        try:
            r = session.put(self.url + "/" + self.folder + name, data=data, timeout=3)
        except requests.RequestException:
            return False  # the server was stopped under it: never answered
        if r.status_code not in (201, 204) or r.headers.get("ETag", "").strip('"') != sha1(data):
            self.problems.append(f"PUT {name}: {r.status_code} ETag {r.headers.get('ETag')}: {r.text[:200]}")
            return False
        del self.in_flight[name]
        self.acked[name] = data
        return True

    def move(self, session: requests.Session, source: str, target: str) -> bool:
        self.moving, self.in_flight[target] = (source, target), self.acked[source]
        try:
            r = session.request(
                "MOVE", self.url + "/" + self.folder + source, timeout=3,
                headers={"Destination": self.url + "/" + self.folder + target, "Overwrite": "T"},
            )
        except requests.RequestException:
            return False
        if r.status_code not in (201, 204):
            self.problems.append(f"MOVE {source} {target}: {r.status_code}: {r.text[:200]}")
            return False
        self.moving = None
        self.acked[target] = self.acked.pop(source)
        del self.in_flight[target]
        self.gone.add(source)
        return True


@dataclass
class Cut:
    """The clients' record of what was acknowledged, and a server on the copy of the disk."""

    writers: list[Writer]
    checker: RunningServer
    key: str
    #: A key revoked just before the cut (`keys revoke`): it must stay refused.
    revoked: str


@contextmanager
def cut_power(tmp_path: Path, *, journal: bool = True, extra_env: dict[str, str] | None = None) -> Iterator[Cut]:
    """Upload under load, cut the power, bring the copy up under a new server (see the module's docstring)."""
    image, copy = tmp_path / "disk.img", tmp_path / "cut.img"
    make_ext4(image, journal=journal)
    with loop_mounted(image, tmp_path / "disk", *(["commit=60"] if journal else [])) as device:
        server = RunningServer(tmp_path / "disk" / "data", extra_env=extra_env)
        try:
            _, key = server.create_key("--label", "power")
            revoked_id, revoked = server.create_key("--label", "leaked")
            server.start()
            session = session_for(key)
            for folder in ("p/", *(f"p/c{i}/" for i in range(CLIENTS))):
                assert session.request("MKCOL", f"{server.url}/{folder}", timeout=30).status_code == 201
            os.sync()  # the starting point is on the disk whatever the server does
            writers = [Writer(i, server.url, key) for i in range(CLIENTS)]
            stops = [threading.Event() for _ in writers]
            threads = [
                threading.Thread(target=w.run, args=(stop, w is writers[0])) for w, stop in zip(writers, stops, strict=True)
            ]
            for t in threads:
                t.start()
            time.sleep(LOAD_SECONDS)
            # The first client finishes (a save, a MKCOL, a DELETE, a MOVE into the new folder): nothing
            # of its own fsyncs its folders after those.
            stops[0].set()
            threads[0].join(timeout=30)
            server.cli("keys", "revoke", revoked_id)  # nothing fsyncs keys/ after it
            assert server.proc is not None
            os.killpg(server.proc.pid, signal.SIGSTOP)  # the others mid-request: some are never answered
            for stop, t in zip(stops, threads, strict=True):
                stop.set()
                t.join(timeout=30)
            wait_until_quiet(device)
            copied = run("cp", "--sparse=always", str(image), str(copy))
            assert copied.returncode == 0, copied.stderr
        finally:
            server.kill()  # SIGKILL: a stopped process takes no other signal
    fsck = run("e2fsck", "-fy", str(copy))
    # Without a journal, e2fsck has links and counts to mend after any cut; what the server
    # acknowledged must still be there once it has.
    damage = [line for line in fsck.stdout.splitlines() if journal and not FSCK_FINE.fullmatch(line)]
    assert fsck.returncode <= 1 and not damage, f"e2fsck ({fsck.returncode}) on the cut disk:\n{fsck.stdout[-3000:]}"
    with loop_mounted(copy, tmp_path / "cut"):
        checker = RunningServer(tmp_path / "cut" / "data")
        try:
            checker.start()
            yield Cut(writers, checker, key, revoked)
        finally:
            checker.stop()


@pytest.fixture
def as_root() -> None:
    if os.geteuid() != 0:
        unavailable("a loop-mounted file system needs root")


def lost_or_wrong(cut: Cut) -> list[str]:
    """What the server on the copy gives back differently from what it acknowledged before the cut."""
    session = session_for(cut.key)
    out = []
    if (status := session_for(cut.revoked).get(cut.checker.url + "/", timeout=30).status_code) != 401:
        out.append(f"a key revoked before the cut is answered {status} after it")
    # Refused is not enough: its file may come back unreadable (its inode freed), or whole.
    if (cut.checker.data_dir / "keys" / f"{key_digest(cut.revoked)}.json").exists():
        out.append("a key revoked before the cut has its file back after it")
    listings: dict[str, dict[str, Described]] = {}  # by folder, listed once a file in it is there

    def listed(path: str) -> Described | None:
        folder = path.rpartition("/")[0] + "/"
        if folder not in listings:
            listings[folder] = propfind(session, f"{cut.checker.url}/{folder}")
        return listings[folder].get(f"/{path}")

    for w in cut.writers:
        for name, data in w.acked.items():
            r = session.get(f"{cut.checker.url}/{w.folder}{name}", timeout=30)
            pending = w.in_flight.get(name)
            if r.status_code == 404 and w.moving and w.moving[0] == name:
                target = session.get(f"{cut.checker.url}/{w.folder}{w.moving[1]}", timeout=30)
                if target.content != data:
                    out.append(f"{w.folder}{name}: gone after the cut, and not at {w.moving[1]}, where it was moving")
            elif r.status_code != 200:
                out.append(f"{w.folder}{name}: {r.status_code} after the cut, acknowledged before it")
            elif r.content != data and r.content != pending:
                out.append(f"{w.folder}{name}: {len(r.content)} bytes, not the {len(data)} acknowledged")
            elif problem := describes(listed(w.folder + name), r.content):
                out.append(f"{w.folder}{name}: PROPFIND does not describe what GET returns: {problem}")
        for name in w.gone:
            if (status := session.get(f"{cut.checker.url}/{w.folder}{name}", timeout=30).status_code) != 404:
                out.append(f"{w.folder}{name}: {status} after the cut, moved or deleted before it")
        for folder in w.folders:
            r = session.request("PROPFIND", f"{cut.checker.url}/{w.folder}{folder}", headers={"Depth": "0"}, timeout=30)
            if r.status_code != 207 or ET.fromstring(r.content).find(".//{DAV:}collection") is None:
                out.append(f"{w.folder}{folder}: not a folder after the cut ({r.status_code}), made by a MKCOL before it")
    return out


@pytest.mark.parametrize("journal", [True, False], ids=["journal", "no-journal"])
def test_every_acknowledged_upload_survives_a_power_cut(tmp_path: Path, as_root: None, journal: bool) -> None:
    with cut_power(tmp_path, journal=journal) as cut:
        answered = sum(w.answered for w in cut.writers)
        assert answered >= 20 * CLIENTS, f"only {answered} requests answered in {LOAD_SECONDS} s: too few to mean much"
        assert not [p for w in cut.writers for p in w.problems]
        lost = lost_or_wrong(cut)
        assert not lost, f"{len(lost)} acknowledged changes lost or altered:\n" + "\n".join(lost[:20])
        # Nothing torn: every file listed is one of the versions sent under its name, whole.
        session = session_for(cut.key)
        for w in cut.writers:
            for href in propfind(session, f"{cut.checker.url}/{w.folder}"):
                name = href.rsplit("/", 1)[1]
                got = session.get(cut.checker.url + href, timeout=30).content
                assert got in (w.acked.get(name), w.in_flight.get(name)), f"{href}: {len(got)} bytes, never sent"


def test_the_check_finds_lost_uploads_when_fsync_is_a_no_op(tmp_path: Path, as_root: None) -> None:
    if not EATMYDATA.exists():
        unavailable(f"{EATMYDATA} is missing (apt-get install eatmydata)")
    with cut_power(tmp_path, extra_env={"LD_PRELOAD": str(EATMYDATA)}) as cut:
        assert sum(w.answered for w in cut.writers) >= 20 * CLIENTS
        assert lost_or_wrong(cut), "every upload survived a power cut with fsync a no-op: the check cannot fail"
