"""A one-host CephFS for tests and benches: mon, mgr, OSD (memstore) and MDS on 127.0.0.1,
one file system mounted twice through ceph-fuse under two client identities, as two
machines would mount it.

Everything lives in one scratch folder (configuration, keys, daemon data, logs,
sockets, mount points). Every process started is recorded by pid in
`cluster.json` there, so another process can stop the cluster:

    python -m bench.harness.cephfs up /tmp/ceph      # prints the two mount points; the cluster stays up
    python -m bench.harness.cephfs down /tmp/ceph    # unmounts, stops the daemons in order

Settings and traps come from ../shared/CEPH.md (measured on this kind of
machine): loopback-only addresses, a one-OSD pool, `mds early reply = false`
(without it a client waits up to 5 s to see another client's rename), and a
tear-down that unmounts and waits for ceph-fuse before stopping the daemons
(stopping everything at once leaves ceph-fuse hung). One setting was added
after measuring here: a short MDS tick (MDS_TICK).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from bench.harness import proc
from bench.harness.servers import free_port

#: The two client identities, one per "machine".
CLIENTS = ("hostA", "hostB")
BINARIES = ("ceph-mon", "ceph-mgr", "ceph-osd", "ceph-mds", "ceph-fuse", "ceph", "ceph-authtool", "monmaptool",
            "fusermount")
#: Debian packages that hold BINARIES (for the reason given when one is missing).
PACKAGES = "ceph-mon ceph-mgr ceph-osd ceph-mds ceph-fuse ceph-common fuse"
#: Seconds a whole bring-up may take (12-14 s measured on an idle machine; this one is shared).
UP_TIMEOUT = 240.0
COMMAND_TIMEOUT = 120.0
#: Seconds between MDS ticks (Ceph's default: 5). In Ceph 16 a client that stats or opens
#: a name another client just renamed or truncated sometimes waits for the MDS journal
#: flush that the tick does: measured here, 3-10 % of such reads stalled 4.5-5 s with the
#: default, at most 0.2 s with 0.2 (docs/scale-out.md). Tests would spend minutes waiting.
MDS_TICK = 0.2
#: Daemons in start order; stopped in the reverse order, after the mounts.
DAEMONS = ("mon", "mgr", "osd", "mds")


def missing() -> str | None:
    """Why no cluster can be brought up here, or None."""
    absent = [b for b in BINARIES if shutil.which(b) is None]
    if absent:
        return f"{', '.join(absent)} not installed (apt-get install {PACKAGES})"
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing (ceph-fuse needs FUSE: run with --device /dev/fuse)"
    if os.geteuid() != 0:
        return "ceph-fuse mounts need root here"
    return None


def _config(root: Path, fsid: str, mon_v2: int, mon_v1: int, mds_tick: float) -> str:
    return f"""\
[global]
fsid = {fsid}
mon host = [v2:127.0.0.1:{mon_v2},v1:127.0.0.1:{mon_v1}]
public addr = 127.0.0.1
cluster addr = 127.0.0.1
public network = 127.0.0.0/8
ms bind ipv4 = true
ms bind ipv6 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
auth allow insecure global id reclaim = false
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon warn on pool no redundancy = false
osd crush chooseleaf type = 0
osd pool default pg autoscale mode = off
run dir = {root}/run
crash dir = {root}/crash
log file = {root}/log/$name.log
admin socket = {root}/run/$name.$pid.asok
keyring = {root}/keys/$name.keyring
mon data = {root}/data/mon-$id
mgr data = {root}/data/mgr-$id
osd data = {root}/data/osd-$id
mds data = {root}/data/mds-$id

[mon]
keyring = $mon_data/keyring

[osd]
osd objectstore = memstore
memstore device bytes = 2147483648

[mds]
mds early reply = false
mds tick interval = {mds_tick}

[client]
keyring = {root}/keys/$name.keyring
admin socket = {root}/run/$name.$pid.asok
log file = {root}/log/$name.$pid.log
"""


class CephFS:
    """The cluster in `root`; `up()` brings it up, `down()` takes it down (also from another process)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.conf = self.root / "ceph.conf"
        self.state = self.root / "cluster.json"
        self.mounts = {name: self.root / "mnt" / name for name in CLIENTS}
        self.pids: dict[str, int] = {}

    # --- commands -----------------------------------------------------------

    def _run(self, *args: str, input: bytes | None = None, name: str = "client.admin") -> str:
        cmd = [*args]
        if args[0] == "ceph":
            cmd = ["ceph", "-c", str(self.conf), "-n", name, "--connect-timeout", "60", *args[1:]]
        done = subprocess.run(cmd, input=input, capture_output=True, timeout=COMMAND_TIMEOUT, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}: {done.stderr.decode(errors='replace')}")
        return done.stdout.decode()

    def _start(self, label: str, *args: str) -> None:
        """A daemon in the foreground, in its own session, its output in log/; its pid recorded at once."""
        with open(self.root / "log" / f"{label}.out", "ab") as out:
            popen = subprocess.Popen(
                [*args, "-c", str(self.conf)], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pids[label] = popen.pid
        self._save()

    def _save(self) -> None:
        record = {"pids": self.pids, "mounts": {k: str(v) for k, v in self.mounts.items()}}
        self.state.write_text(json.dumps(record, indent=1))

    def _wait(self, what: str, ready: Callable[[], object], timeout: float = UP_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [label for label, pid in self.pids.items() if not _alive(pid)]
            if dead:
                raise RuntimeError(f"{', '.join(dead)} exited while waiting for {what}; see {self.root}/log")
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                if ready():
                    return
            time.sleep(0.25)
        raise RuntimeError(f"{what} not ready within {timeout:.0f} s; see {self.root}/log")

    # --- bring-up -----------------------------------------------------------

    def up(self) -> CephFS:
        """From nothing to both mounts ready; on any failure everything started is stopped again."""
        try:
            self._up()
        except BaseException:
            self.down()
            raise
        return self

    def _up(self) -> None:
        if self.state.exists():
            raise RuntimeError(f"{self.state} records a running cluster: `python -m bench.harness.cephfs down {self.root}` first")
        if self.root.exists():  # leftovers of an earlier cluster (daemon data, keys, monmap)
            for child in self.root.iterdir():
                if child.name == "mnt" and any(os.path.ismount(m) for m in self.mounts.values()):
                    raise RuntimeError(f"{child} still holds a mount: `python -m bench.harness.cephfs down {self.root}`")
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        for sub in ("run", "crash", "log", "keys", "data", *(f"mnt/{n}" for n in CLIENTS)):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        fsid = str(uuid.uuid4())
        v2, v1 = free_port(), free_port()
        self.conf.write_text(_config(self.root, fsid, v2, v1, MDS_TICK))
        keys = self.root / "keys"
        mon_keyring, admin = keys / "mon.keyring", keys / "client.admin.keyring"
        self._run("ceph-authtool", "--create-keyring", str(mon_keyring), "--gen-key", "-n", "mon.",
                  "--cap", "mon", "allow *")
        self._run("ceph-authtool", "--create-keyring", str(admin), "--gen-key", "-n", "client.admin",
                  "--cap", "mon", "allow *", "--cap", "osd", "allow *", "--cap", "mds", "allow *",
                  "--cap", "mgr", "allow *")
        self._run("ceph-authtool", str(mon_keyring), "--import-keyring", str(admin))
        monmap = self.root / "monmap"
        self._run("monmaptool", "--create", "--fsid", fsid, "--addv", "a",
                  f"[v2:127.0.0.1:{v2},v1:127.0.0.1:{v1}]", str(monmap))
        self._run("ceph-mon", "-c", str(self.conf), "--mkfs", "-i", "a", "--monmap", str(monmap),
                  "--keyring", str(mon_keyring))
        self._start("mon", "ceph-mon", "-f", "-i", "a")
        self._wait("the monitor", lambda: self._run("ceph", "mon", "stat"))

        (self.root / "data" / "mgr-x").mkdir(exist_ok=True)
        self._run("ceph", "auth", "get-or-create", "mgr.x", "mon", "allow profile mgr", "osd", "allow *",
                  "mds", "allow *", "-o", str(keys / "mgr.x.keyring"))
        self._start("mgr", "ceph-mgr", "-f", "-i", "x")

        self._make_osd()
        self._run("ceph", "auth", "get-or-create", "mds.a", "mon", "allow profile mds", "osd", "allow rwx",
                  "mds", "allow", "mgr", "allow profile mds", "-o", str(keys / "mds.a.keyring"))
        (self.root / "data" / "mds-a").mkdir(exist_ok=True)
        self._start("mds", "ceph-mds", "-f", "-i", "a")
        for pool in ("cephfs_metadata", "cephfs_data"):
            self._run("ceph", "osd", "pool", "create", pool, "8")
        self._run("ceph", "fs", "new", "cephfs", "cephfs_metadata", "cephfs_data")
        self._wait("the MDS", self._mds_active)
        for name in CLIENTS:
            keyring = self._run("ceph", "fs", "authorize", "cephfs", f"client.{name}", "/", "rw")
            (keys / f"client.{name}.keyring").write_text(keyring)
            self._start(f"fuse-{name}", "ceph-fuse", "-f", "--id", name, str(self.mounts[name]))
        for name in CLIENTS:
            self._wait(f"the mount of {name}", lambda n=name: os.path.ismount(self.mounts[n]))

    def _make_osd(self) -> None:
        osd_uuid = str(uuid.uuid4())
        secret = self._run("ceph-authtool", "--gen-print-key").strip()
        osd_id = self._run("ceph", "osd", "new", osd_uuid, "-i", "-",
                           input=json.dumps({"cephx_secret": secret}).encode()).strip()
        (self.root / "keys" / f"osd.{osd_id}.keyring").write_text(f"[osd.{osd_id}]\n\tkey = {secret}\n")
        (self.root / "data" / f"osd-{osd_id}").mkdir(exist_ok=True)
        self._run("ceph-osd", "-c", str(self.conf), "-i", osd_id, "--mkfs", "--osd-uuid", osd_uuid)
        self._start("osd", "ceph-osd", "-f", "-i", osd_id)

    def _mds_active(self) -> bool:
        dump = json.loads(self._run("ceph", "fs", "dump", "--format", "json"))
        return any(info.get("state") == "up:active"
                   for fs in dump.get("filesystems", []) for info in fs["mdsmap"]["info"].values())

    # --- tear-down ----------------------------------------------------------

    def down(self) -> None:
        """Unmount (waiting for each ceph-fuse), then stop mds, osd, mgr, mon; SIGKILL whatever lingers."""
        pids = self.pids or self._recorded()
        for name in CLIENTS:
            mount, pid = self.mounts[name], pids.get(f"fuse-{name}")
            if os.path.ismount(mount):
                done = subprocess.run(["fusermount", "-u", str(mount)], capture_output=True, timeout=60, check=False)
                if done.returncode != 0:  # busy: detach it, the daemon exits once it is unused
                    subprocess.run(["fusermount", "-u", "-z", str(mount)], capture_output=True, timeout=60,
                                   check=False)
            if pid:
                _stop(pid, grace=10.0, signal_first=None)  # unmounting ends it; give it time, then SIGKILL
        for label in reversed(DAEMONS):
            if label in pids:
                _stop(pids[label], grace=15.0)
        self.pids = {}
        with contextlib.suppress(FileNotFoundError):
            self.state.unlink()

    def _recorded(self) -> dict[str, int]:
        try:
            return {k: int(v) for k, v in json.loads(self.state.read_text())["pids"].items()}
        except FileNotFoundError:
            return {}

    def daemon_pid(self, label: str) -> int:
        """The pid of a daemon started here ('mon', 'mgr', 'osd', 'mds', 'fuse-hostA', ...)."""
        return (self.pids or self._recorded())[label]

    def cpu_seconds(self) -> dict[str, float]:
        """CPU so far of the daemons ("ceph": mon, mgr, osd, mds) and of the clients ("ceph-fuse")."""
        used = {"ceph": 0.0, "ceph-fuse": 0.0}
        for label, pid in (self.pids or self._recorded()).items():
            s = proc.stat(pid)
            used["ceph-fuse" if label.startswith("fuse-") else "ceph"] += s.cpu_seconds if s else 0.0
        return used


def _alive(pid: int) -> bool:
    s = proc.stat(pid)
    return s is not None and not s.zombie


def _stop(pid: int, *, grace: float, signal_first: int | None = signal.SIGTERM) -> None:
    """Stop one recorded process: `signal_first` (if any), up to `grace` seconds, then SIGKILL."""
    if signal_first is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal_first)
    deadline = time.monotonic() + grace
    while _alive(pid) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.05)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.05)
    _reap(pid)


def _reap(pid: int) -> None:
    """Collect the exit status when the process is our child (started by up() in this process)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("up", "down"):
        print("usage: python -m bench.harness.cephfs up|down DIR", file=sys.stderr)
        return 2
    cluster = CephFS(Path(argv[1]))
    if argv[0] == "down":
        cluster.down()
        return 0
    reason = missing()
    if reason:
        print(f"cannot bring up CephFS: {reason}", file=sys.stderr)
        return 1
    t0 = time.monotonic()
    cluster.up()
    print(f"up in {time.monotonic() - t0:.1f} s")
    for name, mount in cluster.mounts.items():
        print(f"{name} {mount}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
