"""Scale-out, end to end: two uss_dav nodes on ONE local data directory behind haproxy,
sharing WebDAV locks through the data directory (the multi-node model; the same
on CephFS is tests/test_cephfs.py), and `--workers 2` on one port.

haproxy is Debian's, started here (tests/balanced.py); where it is not
installed the tests skip with the reason, under CI=true they fail.

Through the balancer (round robin, so consecutive requests of one client land
on different nodes): litmus in full, rclone copy + check, and a mixed load of
8 clients (USS_SCALEOUT_SECONDS, default 30) whose every answer is checked
against an exact model. Directly against each node: a key rotated on node 1
is refused by node 2 on its next request, a LOCK taken on node 1 binds node 2,
same-name PUTs racing from both nodes leave one complete, correctly described
version. The staging sweep of a starting node spares the uploads of the
others. `--workers 2`: both workers serve the port and share locks, a killed
one is replaced, SIGTERM stops them all. Runs in about 80 s.
docs/scale-out.md explains the deployment these tests model.
"""

from __future__ import annotations

import base64
import os
import random
import re
import signal
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

from bench.harness import proc
from tests.balanced import (
    LOCK_BODY,
    TIMEOUT,
    BalancedNodes,
    balanced,
    describes,
    locks_bind_both_nodes,
    mixed_load,
    propfind,
    same_name_races,
)
from tests.client import require_tool, session_for
from tests.litmus import assert_litmus_clean, run_litmus
from tests.server import RunningServer, write_config

#: Seconds the mixed load runs through the balancer.
LOAD_SECONDS = float(os.environ.get("USS_SCALEOUT_SECONDS", "30"))
LOAD_CLIENTS = 8


@dataclass
class Cluster(BalancedNodes):
    data_dir: Path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("scaleout")


@pytest.fixture(scope="module")
def cluster(workdir: Path) -> Iterator[Cluster]:
    """Two run_server.py processes on one data directory, haproxy in front."""
    root = workdir / "cluster"
    root.mkdir()
    config = write_config(root / "config.yaml", auth_failure_limit=0)
    data = root / "data"
    with balanced(root, RunningServer(data, config=config), RunningServer(data, config=config)) as pair:
        yield Cluster(pair.node1, pair.node2, pair.balancer, data)


# --- through the balancer ----------------------------------------------------------


def test_litmus_passes_in_full_through_the_balancer(cluster: Cluster, tmp_path: Path) -> None:
    """Every suite, no failure, no warning, with consecutive requests on alternating nodes."""
    _id, key = cluster.node1.create_key()
    output = run_litmus(cluster.url + "/", key, str(tmp_path))
    assert_litmus_clean(output)


def _rclone(tmp: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    exe = require_tool("/usr/bin/rclone")
    home = tmp / "rclone-home"
    home.mkdir(exist_ok=True)
    env = {**os.environ, "RCLONE_CONFIG": "/dev/null", "HOME": str(home), "XDG_CACHE_HOME": str(home / "cache")}
    cmd = [exe, *args, "--low-level-retries", "1", "--retries", "1", "--contimeout", "10s", "--timeout", "60s"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, check=False)
    if check:
        assert done.returncode == 0, f"rclone {' '.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}"
    return done


def test_rclone_copy_and_check_through_the_balancer(cluster: Cluster, tmp_path: Path) -> None:
    _id, key = cluster.node1.create_key("--compression", "off")
    rng = random.Random(7)
    src = tmp_path / "src"
    files = {
        "a.bin": rng.randbytes(1),
        "text.txt": b"scale-out through haproxy\n" * 40,
        "big.bin": rng.randbytes(3_000_001),
        "sub/one.bin": rng.randbytes(70_000),
        "sub/deeper/two.bin": rng.randbytes(250_000),
        **{f"many/f{i:02d}.bin": rng.randbytes(rng.randrange(100, 20_000)) for i in range(20)},
    }
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    remote = f":webdav,url='{cluster.url}/',vendor=owncloud,bearer_token={key}:"

    _rclone(tmp_path, "copy", str(src), remote)
    done = _rclone(tmp_path, "check", "-v", str(src), remote)
    assert re.search(r"Using (md5|sha1) for hash comparisons", done.stderr), done.stderr[-2000:]
    assert "0 differences found" in done.stderr, done.stderr[-2000:]
    assert f"{len(files)} matching files" in done.stderr, done.stderr[-2000:]
    # Each node, asked directly, serves the same bytes.
    with session_for(key) as s:
        for node in (cluster.node1, cluster.node2):
            for rel, data in files.items():
                r = s.get(f"{node.url}/{quote(rel)}", timeout=TIMEOUT)
                assert r.status_code == 200 and r.content == data, f"{node.url} /{rel}: {r.status_code}"


def test_mixed_load_of_8_clients_through_the_balancer_matches_the_model(cluster: Cluster) -> None:
    """PUT/GET/PROPFIND/DELETE/MOVE from 8 clients for LOAD_SECONDS: no 5xx, no connection error,
    every answer as the model predicts, and at the end both nodes list exactly what was acknowledged."""
    _id, key = cluster.node1.create_key()
    folder = "/load/"
    with session_for(key) as s:
        assert s.request("MKCOL", cluster.url + folder, timeout=TIMEOUT).status_code == 201
    clients = mixed_load(cluster.url, key, folder, LOAD_CLIENTS, LOAD_SECONDS)
    ops = sum((c.ops for c in clients), Counter())
    nodes = sum((c.nodes for c in clients), Counter())
    errors = [e for c in clients for e in c.errors]
    wrong = [w for c in clients for w in c.wrong]
    total = sum(ops.values())
    print(f"mixed load: {total} requests in {LOAD_SECONDS:g} s ({total / LOAD_SECONDS:.0f}/s): {dict(ops)}; "
          f"answered by {dict(nodes)}")
    assert not errors, f"{len(errors)} errors, first: " + "\n".join(errors[:10]) + "\n" + cluster.logs()
    assert not wrong, f"{len(wrong)} answers contradict the model, first: " + "\n".join(wrong[:10])
    assert min(ops[m] for m in ("PUT", "GET", "PROPFIND", "DELETE", "MOVE")) > 0, ops
    assert set(nodes) == {"node1", "node2"} and min(nodes.values()) > total / 4, f"not balanced: {nodes}"

    expected = {name: body for c in clients for name, body in c.model.items()}
    with session_for(key) as s:
        for node in (cluster.node1, cluster.node2):
            listed = {href.rsplit("/", 1)[-1]: d for href, d in propfind(s, node.url + folder).items()}
            assert sorted(listed) == sorted(expected), f"{node.url} lists other names than acknowledged"
            bad = {n: p for n in expected if (p := describes(listed[n], expected[n]))}
            assert not bad, f"{node.url}: {bad}"
        for name, body in expected.items():
            r = s.get(cluster.node2.url + folder + name, timeout=TIMEOUT)
            assert r.status_code == 200 and r.content == body, f"GET {name} from node 2: {r.status_code}"


# --- directly against each node ----------------------------------------------------


def test_key_rotated_on_node1_is_refused_by_node2_on_its_next_request(cluster: Cluster) -> None:
    _id, old = cluster.node1.create_key()
    n1, n2 = cluster.node1.url, cluster.node2.url
    with session_for(old) as s:
        assert s.put(n1 + "/kept.txt", data=b"survives the rotation", timeout=TIMEOUT).status_code == 201
        # Node 2 has verified (and cached) the old key before the rotation.
        for _ in range(3):
            assert s.get(n2 + "/kept.txt", timeout=TIMEOUT).status_code == 200
        r = s.post(n1 + "/api/v1/keys/rotate", timeout=TIMEOUT)
        assert r.status_code == 200, r.text
        new = r.json()["key"]
        assert new != old
        # The very next request on node 2 with the old key is refused ...
        assert s.get(n2 + "/kept.txt", timeout=TIMEOUT).status_code == 401
        assert s.request("PROPFIND", n2 + "/", headers={"Depth": "0"}, timeout=TIMEOUT).status_code == 401
        assert s.get(n1 + "/kept.txt", timeout=TIMEOUT).status_code == 401
    # ... and the new key opens the same collection there at once.
    with session_for(new) as s:
        r = s.get(n2 + "/kept.txt", timeout=TIMEOUT)
        assert r.status_code == 200 and r.content == b"survives the rotation"
        assert s.put(n2 + "/after.txt", data=b"new key writes", timeout=TIMEOUT).status_code == 201
        assert s.get(n1 + "/after.txt", timeout=TIMEOUT).content == b"new key writes"


def test_lock_taken_on_node1_binds_node2(cluster: Cluster) -> None:
    locks_bind_both_nodes(cluster)


def test_same_name_puts_racing_from_both_nodes_leave_one_complete_version(cluster: Cluster) -> None:
    """Each round, node 1 and node 2 each receive a PUT of /race.bin, completed at the same
    moment (bodies of about 1 MB, distinct sizes and content), while each node also answers
    a stream of listings, as a node under load does. Afterwards both nodes serve the same
    bytes, equal to one of the two bodies, and the GET ETag and PROPFIND's size, ETag
    (SHA-1) and oc:checksums describe exactly those bytes, on both nodes."""
    rounds = int(os.environ.get("USS_SCALEOUT_RACE_ROUNDS", "150"))
    _id, key = cluster.node1.create_key()
    problems, winners = same_name_races((cluster.node1, cluster.node2), key, rounds)
    print(f"race winners over {rounds} rounds: {dict(winners)}")
    assert not problems, f"{len(problems)} problems in {rounds} rounds:\n" + "\n".join(problems[:20])
    leftovers = [p.name for p in (cluster.data_dir / "staging").iterdir()]
    assert not leftovers, f"staging/ not empty after the races: {leftovers[:10]}"


# --- staging sweep with several nodes ----------------------------------------------


def test_sweep_by_a_starting_node_spares_uploads_of_the_other_nodes(tmp_path: Path, monkeypatch) -> None:
    """Every node sweeps the shared staging/ when it starts, while the other nodes keep
    taking uploads. An upload another node holds (flock) must survive, and so must one
    that another node begins while the sweep runs (here: between its two directory scans)."""
    from uss_dav.storage import Store

    starting, serving = Store(tmp_path / "data"), Store(tmp_path / "data")  # two nodes, one data directory
    serving.ensure_collection("c")
    orphan = tmp_path / "data" / "staging" / ("0" * 32 + ".part")
    orphan.write_bytes(b"left by a crash")
    held = serving.begin_upload("c", "held.bin")
    held.write(b"in progress on the other node")
    begun: list = []
    scans: list = []
    real_scandir = os.scandir

    def scandir(path):
        if Path(path) == starting.staging:
            scans.append(path)
            if len(scans) == 2:  # the sweep is between its two scans: the other node takes an upload
                upload = serving.begin_upload("c", "begun.bin")
                upload.write(b"begun on the other node during the sweep")
                begun.append(upload)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    starting.sweep_staging()
    monkeypatch.setattr(os, "scandir", real_scandir)
    assert len(scans) >= 2 and begun, "the sweep no longer scans staging/ twice: adapt the test"
    try:
        assert not orphan.exists(), "an upload left by a crash was not swept"
        assert os.path.exists(held.path), "the sweep deleted an upload held by another node"
        assert os.path.exists(begun[0].path), (
            "the sweep deleted an upload another node began while it ran (between its two scans of staging/)")
        for upload, name in ((held, "held.bin"), (begun[0], "begun.bin")):
            serving.commit(upload)
            assert serving.stat("c", name) is not None
    finally:
        for upload in (held, *begun):
            serving.abort(upload)


# --- --workers 2 on one port -------------------------------------------------------


def children_of(ppid: int) -> set[int]:
    return set(proc.children(ppid))


def cpu_seconds(pid: int) -> float:
    s = proc.stat(pid)
    return s.cpu_seconds if s else 0.0


def _wait_for(predicate, timeout: float, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


def _holding(folder: Path, pids: set[int]) -> int | None:
    """The process among `pids` with a file in `folder` open, if any."""
    for pid in pids:
        if any(link.startswith(f"{folder}/") for link in proc.open_files(pid)):
            return pid
    return None


def _exactly(pids: set[int], n: int) -> set[int] | None:
    return pids if len(pids) == n else None


def _served_by(srv: RunningServer, key: str, workers: set[int], connections: int = 24) -> Counter[int]:
    """Open `connections` keep-alive connections, a few PROPFINDs on each; who holds them."""
    sessions = [session_for(key) for _ in range(connections)]
    try:
        for s in sessions:
            for _ in range(5):
                r = s.request("PROPFIND", srv.url + "/", headers={"Depth": "1"}, timeout=TIMEOUT)
                assert r.status_code == 207, r.text
        time.sleep(0.2)
        return proc.connection_owners(workers, srv.port)
    finally:
        for s in sessions:
            s.close()


def test_two_workers_share_the_port_and_locks_restart_when_killed_and_stop_on_sigterm(tmp_path: Path) -> None:
    srv = RunningServer(
        tmp_path / "data", config=write_config(tmp_path / "config.yaml", auth_failure_limit=0),
        extra_env={"USS_WORKERS": "2"},
    )
    try:
        srv.start()
        assert srv.proc is not None
        parent = srv.proc.pid
        workers = _wait_for(lambda: _exactly(children_of(parent), 2), 10)
        assert workers and len(workers) == 2, f"expected 2 worker processes, found {children_of(parent)}"
        _id, key = srv.create_key()

        # Both workers accept connections on the one port, and both work.
        with session_for(key) as s:
            for i in range(40):
                assert s.put(f"{srv.url}/f{i:02d}.bin", data=os.urandom(4096), timeout=TIMEOUT).status_code == 201
        cpu0 = {pid: cpu_seconds(pid) for pid in workers}
        owners = _served_by(srv, key, workers)
        cpu1 = {pid: cpu_seconds(pid) for pid in workers}
        assert set(owners) == workers, f"connections per worker {dict(owners)}, workers {sorted(workers)}"
        assert all(cpu1[p] > cpu0[p] for p in workers), f"CPU seconds before {cpu0}, after {cpu1}"

        # A file locked through one worker is locked for the other (uss_dav.locks, on the data
        # directory), and unlocked for both when either releases it.
        def puts_refused(n: int = 10) -> int:
            refused = 0
            for _ in range(n):
                with session_for(key) as fresh:  # new connection: either worker
                    refused += fresh.put(srv.url + "/f00.bin", data=b"x", timeout=TIMEOUT).status_code == 423
            return refused

        with session_for(key) as s:
            r = s.request("LOCK", srv.url + "/f00.bin", data=LOCK_BODY, timeout=TIMEOUT)
            assert r.status_code == 200
            token = r.headers["Lock-Token"]
        assert puts_refused() == 10
        with session_for(key) as fresh:
            assert fresh.request("LOCK", srv.url + "/", data=LOCK_BODY, headers={"Depth": "infinity"},
                                 timeout=TIMEOUT).status_code == 423  # conflicts with the lock below
            assert fresh.request("UNLOCK", srv.url + "/f00.bin", headers={"Lock-Token": token},
                                 timeout=TIMEOUT).status_code == 204
        assert puts_refused() == 0

        # SIGKILL the worker receiving an upload: the parent starts another, and sweeps the
        # upload the dead one left in staging/ (no restart needed); requests keep working.
        staging = tmp_path / "data" / "staging"
        token = base64.b64encode(f"{key}:".encode()).decode()
        partial = socket.create_connection(("127.0.0.1", srv.port), timeout=TIMEOUT)
        partial.sendall(f"PUT /partial.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {token}\r\n"
                        "Content-Length: 1048576\r\n\r\n".encode() + b"x" * 65536)
        victim = _wait_for(lambda: _holding(staging, workers), 10)
        assert victim, f"no worker holds the partial upload open; staging/ holds {os.listdir(staging)}"
        os.kill(victim, signal.SIGKILL)
        survivor = (workers - {victim}).pop()
        replaced = _wait_for(lambda: _exactly(children_of(parent) - {victim}, 2), 15)
        assert replaced, f"no replacement worker: children now {children_of(parent)}\n{srv.log()[-2000:]}"
        assert survivor in replaced
        newcomer = (replaced - {survivor}).pop()
        assert "starting another" in srv.log()
        swept = _wait_for(lambda: not [n for n in os.listdir(staging) if n.endswith(".part")], 10)
        partial.close()
        assert swept, f"the dead worker's upload is still in staging/: {os.listdir(staging)}\n{srv.log()[-2000:]}"
        time.sleep(0.5)  # let the newcomer bind
        with session_for(key) as s:
            for i in range(40):
                with session_for(key) as fresh:
                    assert fresh.get(f"{srv.url}/f{i:02d}.bin", timeout=TIMEOUT).status_code == 200
                assert s.request("PROPFIND", srv.url + "/", headers={"Depth": "1"},
                                 timeout=TIMEOUT).status_code == 207
        owners = _served_by(srv, key, replaced)
        assert newcomer in owners and survivor in owners, f"connections per worker {dict(owners)}"

        # SIGTERM to the parent stops every process of the server within a few seconds,
        # even with an idle keep-alive connection open.
        idle = session_for(key)
        assert idle.request("PROPFIND", srv.url + "/", headers={"Depth": "0"}, timeout=TIMEOUT).status_code == 207
        assert len(proc.group_members(parent)) >= 3
        t0 = time.monotonic()
        os.kill(parent, signal.SIGTERM)
        try:
            srv.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pytest.fail(f"parent still running 10 s after SIGTERM\n{srv.log()[-2000:]}")
        gone = _wait_for(lambda: not proc.group_members(parent), 10)
        took = time.monotonic() - t0
        idle.close()
        assert gone, f"processes left after SIGTERM: {proc.group_members(parent)}"
        print(f"SIGTERM: all server processes gone after {took:.2f} s")
        assert took < 5, f"stopping took {took:.1f} s"
        assert srv.proc.returncode == 0
    finally:
        srv.stop()
