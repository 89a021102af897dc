"""Two machines, one store: uss_dav on a real CephFS (tests/cephfs.py), mounted twice through
ceph-fuse under two client identities, as two machines would mount it.

First, every kind of file the store keeps, written through one mount and read
through the other, both ways and concurrently: nothing may depend on a client
seeing a page another client wrote in place (../shared/CEPH.md, "A stale-read
hole"); everything is replaced by rename or counted under flock.

Then two uss_dav nodes, one per mount (run_server.py with its default
workers, one data directory), haproxy in front: litmus, rclone, racing
writers, keys, locks, the failure limit, listings and thumbnails, and a
kill -9 of one node during 100 uploads. docs/scale-out.md describes the
deployment; where Ceph or /dev/fuse is missing the module skips with the
reason (under CI it fails).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import io
import os
import random
import re
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from bench.harness import proc
from tests.balanced import (
    TIMEOUT,
    BalancedNodes,
    balanced,
    describes,
    locks_bind_both_nodes,
    mixed_load,
    propfind,
    racing_put,
    same_name_races,
)
from tests.cephfs import CephFS, require_cephfs
from tests.client import (
    RCLONE,
    Rclone,
    Upload,
    require_tool,
    send_upload,
    session_for,
    url_of,
)
from tests.litmus import assert_litmus_clean, run_litmus
from tests.server import ROOT, RunningServer, write_config
from uss_dav.keys import KeyStore
from uss_dav.locks import MODE, FileLocks
from uss_dav.nodes import join, live_peers
from uss_dav.storage import Store


@pytest.fixture(scope="module")
def ceph(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CephFS]:
    require_cephfs()
    cluster = CephFS(tmp_path_factory.mktemp("cephfs"))
    t0 = time.monotonic()
    cluster.up()
    print(f"CephFS up in {time.monotonic() - t0:.1f} s")
    try:
        yield cluster
    finally:
        t0 = time.monotonic()
        cluster.down()
        print(f"CephFS down in {time.monotonic() - t0:.1f} s")


@dataclass
class Mounts:
    """One scratch folder of the file system, as each machine sees it."""

    a: Path
    b: Path


@pytest.fixture
def both(ceph: CephFS, request: pytest.FixtureRequest) -> Mounts:
    name = re.sub(r"\W", "_", request.node.name)[:60]
    (ceph.mounts["hostA"] / "kinds" / name).mkdir(parents=True)
    return Mounts(ceph.mounts["hostA"] / "kinds" / name, ceph.mounts["hostB"] / "kinds" / name)


def run_both(*jobs) -> None:  # noqa: ANN002
    """Run the jobs in threads at once; re-raise the first failure."""
    errors: list[BaseException] = []

    def guarded(job) -> None:  # noqa: ANN001
        try:
            job()
        except BaseException as exc:  # noqa: BLE001 -- re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(job,)) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert not any(t.is_alive() for t in threads), "a job hung"
    if errors:
        raise errors[0]


# --- every kind of file, across the two mounts -----------------------------------------


def test_collection_data_and_records_replaced_on_one_mount_are_read_whole_on_the_other(both: Mounts) -> None:
    """collections/ with their records: each new version, written through either mount, is what the
    other mount reads next: its bytes and a record that describes exactly them."""
    stores = [Store(both.a / "data"), Store(both.b / "data")]
    stores[0].ensure_collection("c")
    rng = random.Random(1)
    for i in range(40):
        writer, reader = stores[i % 2], stores[1 - i % 2]
        body = rng.randbytes(rng.randrange(1, 300_000))
        upload = writer.begin_upload("c", "f.bin")
        upload.write(body)
        writer.commit(upload)
        entry = reader.stat("c", "f.bin")
        assert entry is not None and entry.sha1 == hashlib.sha1(body).hexdigest(), f"version {i}: stale record"
        assert reader.open_read("c", "f.bin").read() == body, f"version {i}: stale or torn bytes"
        listed = {e.name: e for e in reader.list_entries("c", "")}
        assert listed["f.bin"].size == len(body) and listed["f.bin"].etag == entry.etag


def test_dead_properties_replaced_on_one_mount_are_read_on_the_other(both: Mounts) -> None:
    """meta/*.p, and the folder listing stamp that tells a node its cached listing is old."""
    stores = [Store(both.a / "data"), Store(both.b / "data")]
    stores[0].ensure_collection("c")
    upload = stores[0].begin_upload("c", "f.txt")
    upload.write(b"x")
    stores[0].commit(upload)
    for i in range(40):
        writer, reader = stores[i % 2], stores[1 - i % 2]
        before = reader.listing_stamp("c", "")
        props = {"{urn:test}n": str(i) * (i + 1)}
        writer.write_props("c", "f.txt", props)
        assert reader.read_props("c", "f.txt") == props, f"round {i}: stale properties"
        assert reader.listing_stamp("c", "") != before, f"round {i}: the listing stamp did not move"


def test_keys_created_rotated_and_revoked_on_one_mount_apply_on_the_other_at_once(both: Mounts) -> None:
    keys = [KeyStore(both.a / "keys", both.a / "staging"), KeyStore(both.b / "keys", both.b / "staging")]
    record, key = keys[0].create("k")
    for i in range(20):
        here, there = keys[i % 2], keys[1 - i % 2]
        assert there.verify(key) is not None
        record, new = here.rotate(record.id)
        assert there.verify(key) is None, f"round {i}: the rotated key still opens the other mount"
        assert there.verify(new) is not None, f"round {i}: the new key is unknown on the other mount"
        key = new
    keys[1].revoke(record.id)
    assert keys[0].verify(key) is None


def test_locks_granted_on_one_mount_bind_the_other_and_only_one_of_two_racing_locks_wins(both: Mounts) -> None:
    (both.a / "staging").mkdir()
    tables = [FileLocks(both.a / "locks", both.a / "staging"), FileLocks(both.b / "locks", both.b / "staging")]
    for table in tables:
        table.open()
    lock = {"type": "write", "scope": "exclusive", "depth": "0", "owner": b"o", "timeout": 600, "principal": "k"}
    for i in range(20):
        here, there = tables[i % 2], tables[1 - i % 2]
        assert there.get_lock_list("/c/x", include_root=True, include_children=False, token_only=True) == []
        token = here.create("/c/x", dict(lock))["token"]
        assert there.get_lock_list("/c/x", include_root=True, include_children=False, token_only=True) == [token]
        assert there.delete(token) is True
        assert here.get(token) is None, f"round {i}: a released lock is still seen"
    wins: list[str] = []
    refused: list[str] = []

    def take(table: FileLocks, root: str) -> None:
        for n in range(15):
            try:
                wins.append(table.create(f"{root}/{n}", dict(lock))["token"])
            except Exception:  # noqa: BLE001 -- counted: the other mount won this name
                refused.append(f"{root}/{n}")

    run_both(lambda: take(tables[0], "/c/r"), lambda: take(tables[1], "/c/r"))
    assert len(wins) == 15 and len(refused) == 15, f"{len(wins)} granted, {len(refused)} refused of 15 names"
    for table in tables:
        table.close()


COUNT_FAILURES = """
import sys
from pathlib import Path
from uss_dav.failures import FailureCounter
counter = FailureCounter(Path(sys.argv[1]), limit=5000, window=600)
for _ in range(int(sys.argv[2])):
    counter.fail("192.0.2.1")
"""


def test_failure_counts_from_both_mounts_add_up(both: Mounts) -> None:
    """failures/: a process on each machine counts one address at once; not one failure is lost,
    and neither waits forever (counts rewritten in place under flock hung both ceph-fuse clients)."""
    procs = [subprocess.Popen([sys.executable, "-c", COUNT_FAILURES, str(mount / "failures"), "600"], cwd=ROOT)
             for mount in (both.a, both.b)]
    try:
        for proc in procs:
            assert proc.wait(timeout=180) == 0
    finally:
        for proc in procs:
            proc.kill()
    (counts,) = [p for p in (both.a / "failures").iterdir() if not p.name.endswith((".lock", ".tmp"))]
    assert len(counts.read_bytes()) // 8 == 1200, f"{len(counts.read_bytes()) // 8} of 1200 failures counted"
    assert struct.unpack("<d", counts.read_bytes()[:8])[0] > 0


def test_thumbnails_written_on_one_mount_are_read_whole_and_dropped_on_the_other(both: Mounts) -> None:
    stores = [Store(both.a / "data"), Store(both.b / "data")]
    stores[0].ensure_collection("c")
    for i in range(20):
        writer, reader = stores[i % 2], stores[1 - i % 2]
        data = os.urandom(1000 + i * 97)
        writer.write_thumbnail("c", "ab" * 20, 64, "webp", data)
        assert reader.read_thumbnail("c", "ab" * 20, 64, "webp") == data, f"round {i}: stale thumbnail"
        reader.drop_thumbnails("c", "ab" * 20)
        assert writer.read_thumbnail("c", "ab" * 20, 64, "webp") is None


def test_staging_sweep_on_one_mount_spares_an_upload_in_progress_on_the_other(both: Mounts) -> None:
    serving, starting = Store(both.a / "data"), Store(both.b / "data")
    serving.ensure_collection("c")
    orphan = both.a / "data" / "staging" / ("0" * 32 + ".part")
    orphan.write_bytes(b"left by a crash")
    upload = serving.begin_upload("c", "held.bin")
    upload.write(b"in progress on machine A")
    try:
        assert starting.sweep_staging() == 1
        assert not orphan.exists() and os.path.exists(upload.path)
        serving.commit(upload)
        assert starting.open_read("c", "held.bin").read() == b"in progress on machine A"
    finally:
        serving.abort(upload)


def test_node_records_held_on_one_mount_are_live_on_the_other(both: Mounts) -> None:
    membership = join(both.a, MODE)
    try:
        assert [(p.pid, p.lock_mode) for p in live_peers(both.b / "nodes")] == [(os.getpid(), MODE)]
    finally:
        membership.leave()
    assert live_peers(both.b / "nodes") == []


def _png(color: tuple[int, int, int], size: int = 96) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (size, size), color).save(out, "PNG")
    return out.getvalue()


# --- two uss_dav nodes, one per mount, haproxy in front ---------------------------------

#: Wrong keys per address within the window before 429 (behind haproxy every client is 127.0.0.1).
AUTH_LIMIT, AUTH_WINDOW = 6, 5.0
RACE_ROUNDS = int(os.environ.get("USS_CEPHFS_RACE_ROUNDS", "25"))
LOAD_SECONDS = float(os.environ.get("USS_CEPHFS_LOAD_SECONDS", "20"))
#: Seconds between each node's sweeps of staging/: the cluster may release a killed node's locks
#: after the restarted node's start-up sweep, and the next sweep must then remove what they covered.
SWEEP_INTERVAL = 1.0


@pytest.fixture(scope="module")
def nodes(ceph: CephFS, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BalancedNodes]:
    """run_server.py on each mount (default workers), one data directory, haproxy round robin in front."""
    work = tmp_path_factory.mktemp("two-nodes")
    config = write_config(work / "config.yaml", auth_failure_limit=AUTH_LIMIT, auth_failure_window=AUTH_WINDOW,
                          staging_sweep_interval=SWEEP_INTERVAL)
    node1, node2 = (RunningServer(ceph.mounts[host] / "data", config=config) for host in ("hostA", "hostB"))
    with balanced(work, node1, node2) as pair:
        yield pair


def test_litmus_passes_through_the_balancer_on_cephfs(nodes: BalancedNodes, tmp_path: Path) -> None:
    _id, key = nodes.node1.create_key()
    assert_litmus_clean(run_litmus(nodes.url + "/", key, str(tmp_path)))


class OwncloudRclone(Rclone):
    vendor = "owncloud"
    text = True


def test_rclone_copy_check_and_sync_through_the_balancer(nodes: BalancedNodes, tmp_path: Path) -> None:
    require_tool(RCLONE)
    _id, key = nodes.node1.create_key("--compression", "off")
    rclone = OwncloudRclone(tmp_path, nodes.balancer, key)  # type: ignore[arg-type]
    rng = random.Random(22)
    src = tmp_path / "src"
    files = {
        "a.bin": rng.randbytes(1),
        "big.bin": rng.randbytes(3_000_001),
        "sub/one.bin": rng.randbytes(70_000),
        **{f"many/f{i:02d}.bin": rng.randbytes(rng.randrange(100, 20_000)) for i in range(20)},
    }

    def write_tree() -> None:
        for rel, data in files.items():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            (src / rel).write_bytes(data)

    def assert_same() -> None:
        done = rclone.run("check", "-v", str(src), ":webdav:")
        assert "0 differences found" in done.stderr and f"{len(files)} matching files" in done.stderr, done.stderr
        with session_for(key) as s:
            for node in (nodes.node1, nodes.node2):
                for rel, data in files.items():
                    r = s.get(url_of(node, rel), timeout=TIMEOUT)
                    assert r.status_code == 200 and r.content == data, f"{node.url} /{rel}: {r.status_code}"

    write_tree()
    rclone.run("copy", str(src), ":webdav:")
    assert_same()
    # Sync a changed tree: one file changed, one removed, one added.
    (src / "a.bin").unlink()
    del files["a.bin"]
    files["sub/one.bin"] = rng.randbytes(80_000)
    files["new/added.bin"] = rng.randbytes(5_000)
    write_tree()
    rclone.run("sync", str(src), ":webdav:")
    assert_same()
    with session_for(key) as s:
        assert s.get(url_of(nodes.node2, "a.bin"), timeout=TIMEOUT).status_code == 404


def test_same_name_puts_racing_through_both_nodes_leave_one_whole_described_version(nodes: BalancedNodes) -> None:
    _id, key = nodes.node1.create_key()
    problems, winners = same_name_races((nodes.node1, nodes.node2), key, RACE_ROUNDS)
    print(f"race winners over {RACE_ROUNDS} rounds: {dict(winners)}")
    assert not problems, f"{len(problems)} problems in {RACE_ROUNDS} rounds:\n" + "\n".join(problems[:20])
    assert len(winners) == 2, f"one node always won: {dict(winners)}: the PUTs did not race"


def _move_or_copy(url: str, auth: str, method: str, dst: str, barrier: threading.Barrier, out: list[object],
                  i: int) -> None:
    try:
        barrier.wait(TIMEOUT)
        r = requests.request(method, url, headers={"Authorization": auth, "Destination": dst, "Overwrite": "T"},
                             timeout=TIMEOUT)
        out[i] = r.status_code
    except Exception as exc:  # noqa: BLE001 -- reported by the test
        out[i] = f"{type(exc).__name__}: {exc}"
        barrier.abort()


@pytest.mark.parametrize("method", ["MOVE", "COPY"])
def test_move_and_copy_racing_a_put_through_the_other_node(nodes: BalancedNodes, method: str) -> None:
    """Each round: a.bin and b.bin exist; node 1 MOVEs (or COPYs) a.bin over b.bin while node 2
    takes a PUT of b.bin, completed at the same moment. b.bin ends as one whole body, described
    exactly on both nodes; after a MOVE a.bin is gone, after a COPY it is intact; nothing else."""
    _id, key = nodes.node1.create_key()
    auth = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
    problems: list[str] = []
    outcomes: Counter[str] = Counter()
    with session_for(key) as s:
        for rnd in range(12):
            folder = f"/r{rnd:02d}/"
            assert s.request("MKCOL", nodes.node1.url + folder, timeout=TIMEOUT).status_code == 201
            a, b0, put = (os.urandom(n) for n in random.Random(rnd).sample(range(300_000, 600_000), 3))
            assert s.put(nodes.node1.url + folder + "a.bin", data=a, timeout=TIMEOUT).status_code == 201
            assert s.put(nodes.node1.url + folder + "b.bin", data=b0, timeout=TIMEOUT).status_code == 201
            statuses: list[object] = [None, None]
            barrier = threading.Barrier(2)
            threads = [
                threading.Thread(target=_move_or_copy, daemon=True, args=(
                    nodes.node1.url + folder + "a.bin", auth, method, nodes.node1.url + folder + "b.bin",
                    barrier, statuses, 0)),
                threading.Thread(target=racing_put, daemon=True, args=(
                    nodes.node2.port, auth, folder + "b.bin", put, barrier, statuses, 1)),
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join(2 * TIMEOUT)
            if statuses[0] not in (201, 204) or statuses[1] not in (201, 204):
                problems.append(f"round {rnd}: {method} {statuses[0]}, PUT {statuses[1]}")
                continue
            for node in (nodes.node1, nodes.node2):
                listed = propfind(s, node.url + folder)
                names = sorted(href.rsplit("/", 1)[-1] for href in listed)
                expected_names = ["a.bin", "b.bin"] if method == "COPY" else ["b.bin"]
                if names != expected_names:
                    problems.append(f"round {rnd} via {node.url}: lists {names}, expected {expected_names}")
                r = s.get(node.url + folder + "b.bin", timeout=TIMEOUT)
                if r.content not in (a, put):
                    problems.append(f"round {rnd} via {node.url}: b.bin is {len(r.content)} bytes, neither whole body")
                    continue
                outcomes["moved/copied" if r.content == a else "put"] += 1
                problem = describes(listed.get(f"{folder}b.bin"), r.content)
                if problem:
                    problems.append(f"round {rnd} via {node.url}: b.bin {problem}")
                if method == "COPY" and s.get(node.url + folder + "a.bin", timeout=TIMEOUT).content != a:
                    problems.append(f"round {rnd} via {node.url}: COPY changed its source")
    print(f"{method} racing PUT, who won (seen on both nodes): {dict(outcomes)}")
    assert not problems, "\n".join(problems[:20])


def test_keys_created_rotated_and_revoked_on_one_node_take_effect_on_the_other_at_once(nodes: BalancedNodes) -> None:
    n1, n2 = nodes.node1.url, nodes.node2.url
    key_id, key = nodes.node1.create_key()  # the CLI, on machine A's mount
    with session_for(key) as s:
        assert s.put(n2 + "/kept.txt", data=b"made on node 2", timeout=TIMEOUT).status_code == 201
        r = s.post(n1 + "/api/v1/keys/rotate", timeout=TIMEOUT)
        assert r.status_code == 200, r.text
        new = r.json()["key"]
        assert s.get(n2 + "/kept.txt", timeout=TIMEOUT).status_code == 401
    with session_for(new) as s:
        assert s.get(n2 + "/kept.txt", timeout=TIMEOUT).content == b"made on node 2"
        r = requests.delete(f"{n2}/api/v1/keys/{key_id}", timeout=TIMEOUT)  # loopback: key management allowed
        assert r.status_code in (200, 204), r.text
        assert s.get(n1 + "/kept.txt", timeout=TIMEOUT).status_code == 401
        assert s.request("PROPFIND", n1 + "/", headers={"Depth": "0"}, timeout=TIMEOUT).status_code == 401


def test_a_lock_through_one_node_binds_the_other_and_unlock_works_anywhere(nodes: BalancedNodes) -> None:
    locks_bind_both_nodes(nodes)


def test_the_auth_failure_limit_counts_wrong_keys_on_both_nodes_together(nodes: BalancedNodes) -> None:
    _id, key = nodes.node1.create_key()
    time.sleep(AUTH_WINDOW + 0.5)  # earlier tests' refused keys leave the window
    wrong = session_for("uss_" + "x" * 43)
    statuses = [wrong.get((nodes.node1, nodes.node2)[i % 2].url + "/", timeout=TIMEOUT).status_code
                for i in range(AUTH_LIMIT)]
    assert statuses == [401] * AUTH_LIMIT
    for node in (nodes.node1, nodes.node2):  # the next one, on either node, is over the limit
        r = wrong.get(node.url + "/", timeout=TIMEOUT)
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1, (node.url, r.status_code)
    with session_for(key) as s:  # a valid key is still admitted everywhere
        assert all(s.get(n.url + "/api/v1/ping", timeout=TIMEOUT).status_code == 200 for n in (nodes.node1, nodes.node2))
        assert all(s.request("PROPFIND", n.url + "/", headers={"Depth": "0"}, timeout=TIMEOUT).status_code == 207
                   for n in (nodes.node1, nodes.node2))


def test_listings_and_thumbnails_are_never_stale_or_torn_across_nodes(nodes: BalancedNodes) -> None:
    """One image replaced 16 times, through alternating nodes. After each acknowledged PUT the
    other node lists it with exactly its size and SHA-1 and serves a thumbnail of the new
    colour; meanwhile a reader on node 2 keeps fetching both, and every answer is whole."""
    from PIL import Image

    _id, key = nodes.node1.create_key("--compression", "off")
    colours = [(i * 16 % 256, 255 - i * 16 % 256, (i * 97) % 256) for i in range(16)]
    written: list[tuple[int, int, int]] = []
    seen_problems: list[str] = []
    stop = threading.Event()

    def thumb_colour(data: bytes) -> tuple[int, int, int]:
        return Image.open(io.BytesIO(data)).convert("RGB").getpixel((8, 8))  # type: ignore[return-value]

    def near(c1: tuple[int, int, int], c2: tuple[int, int, int]) -> bool:
        return max(abs(x - y) for x, y in zip(c1, c2, strict=True)) <= 12

    def reader() -> None:
        with session_for(key) as s:
            while not stop.is_set():
                r = s.get(nodes.node2.url + "/api/v1/images/pic.png/thumbnail?size=32", timeout=TIMEOUT)
                if r.status_code == 404 and not written:
                    continue
                try:
                    colour = thumb_colour(r.content)
                except Exception as exc:  # noqa: BLE001 -- a torn thumbnail
                    seen_problems.append(f"thumbnail {r.status_code}: undecodable ({exc})")
                    continue
                if not any(near(colour, c) for c in colours[: len(written) + 1]):
                    seen_problems.append(f"thumbnail of a colour never written: {colour}")

    background = threading.Thread(target=reader, daemon=True)
    background.start()
    try:
        with session_for(key) as s:
            for i, colour in enumerate(colours):
                writer, other = (nodes.node1, nodes.node2) if i % 2 == 0 else (nodes.node2, nodes.node1)
                body = _png(colour)
                r = s.put(writer.url + "/pic.png", data=body, timeout=TIMEOUT)
                assert r.status_code in (201, 204), r.text
                written.append(colour)
                problem = describes(propfind(s, other.url + "/").get("/pic.png"), body)
                assert problem is None, f"version {i}, listed by the other node: {problem}"
                r = s.get(other.url + "/api/v1/images/pic.png/thumbnail?size=32", timeout=TIMEOUT)
                assert r.status_code == 200 and near(thumb_colour(r.content), colour), f"version {i}: stale thumbnail"
    finally:
        stop.set()
        background.join(TIMEOUT)
    assert not seen_problems, seen_problems[:10]


def test_mixed_load_of_8_clients_through_the_balancer_matches_the_model(nodes: BalancedNodes) -> None:
    _id, key = nodes.node1.create_key()
    with session_for(key) as s:
        assert s.request("MKCOL", nodes.url + "/load/", timeout=TIMEOUT).status_code == 201
    clients = mixed_load(nodes.url, key, "/load/", 8, LOAD_SECONDS)
    ops = sum((c.ops for c in clients), Counter())
    errors = [e for c in clients for e in c.errors]
    wrong = [w for c in clients for w in c.wrong]
    print(f"mixed load on CephFS: {sum(ops.values())} requests in {LOAD_SECONDS:g} s: {dict(ops)}")
    assert not errors, f"{len(errors)} errors, first: " + "\n".join(errors[:10]) + "\n" + nodes.logs()
    assert not wrong, f"{len(wrong)} answers contradict the model, first: " + "\n".join(wrong[:10])
    assert min(ops[m] for m in ("PUT", "GET", "PROPFIND", "DELETE", "MOVE")) > 0, ops


def staging_left(staging: Path, nodes: BalancedNodes) -> dict[str, str]:
    """Each file left in staging/, with what holds it: the processes that have it open, and whether
    each mount can lock it ("leaked": no process has it open, yet the cluster says it is locked)."""
    other = nodes.node2.data_dir / "staging"
    found = {}
    for name in sorted(os.listdir(staging)):
        holders = []
        for fd_link in Path("/proc").glob("[0-9]*/fd/*"):
            with contextlib.suppress(OSError):
                if os.readlink(fd_link).endswith(name):
                    holders.append(fd_link.parts[2])
        states = []
        for where in (staging / name, other / name):
            try:
                fd = os.open(where, os.O_RDWR)
            except OSError as exc:
                states.append(exc.strerror or "error")
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                states.append("lockable")
            except BlockingIOError:
                states.append("locked")
            finally:
                os.close(fd)
        leaked = not holders and states == ["locked", "locked"]
        found[name] = "leaked" if leaked else f"open in pids {holders or 'none'}; mounts: {', '.join(states)}"
    return found


def lingering(pgid: int) -> str:
    """The processes of a killed process group that have not ended yet, with where each waits."""
    lines = []
    for pid in sorted(proc.group_members(pgid)):
        with contextlib.suppress(OSError):
            where = Path(f"/proc/{pid}")
            stack = (where / "stack").read_text() if os.access(where / "stack", os.R_OK) else ""
            state = s.state if (s := proc.stat(pid)) else "?"
            lines.append(f"pid {pid} state {state} wchan {(where / 'wchan').read_text()}\n{stack}")
    return "\n".join(lines) or "none"


def test_kill_9_of_one_node_during_100_uploads_loses_and_tears_nothing(nodes: BalancedNodes) -> None:
    """Node 1 (its whole process group) is killed while 100 PUTs stream into it; node 2 serves
    on throughout. After node 1 restarts: every file is its old or its new version (never torn),
    every acknowledged upload is there, no name that was never uploaded, staging/ empty."""
    key_id, key = nodes.node1.create_key("--compression", "off")
    auth = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
    rng = random.Random(20261204)
    v1 = {f"f{i:02d}.bin": os.urandom(rng.randint(50_000, 300_000)) for i in range(50)}
    v2 = {f"f{i:02d}.bin": os.urandom(rng.randint(200_000, 2_000_000)) for i in range(50)}
    v2.update({f"n{i:02d}.bin": os.urandom(rng.randint(200_000, 2_000_000)) for i in range(50)})
    jobs = [Upload(name, body, slow=(i % 4 == 0)) for i, (name, body) in enumerate(v2.items())]
    rng.shuffle(jobs)
    with session_for(key) as s:
        for name, body in v1.items():
            assert s.put(f"{nodes.node1.url}/{name}", data=body, timeout=TIMEOUT).status_code == 201
    killed, stop_probe = threading.Event(), threading.Event()
    probe_log: list[tuple[float, str]] = []  # (time, problem or "") of node 2's answers

    def probe() -> None:
        with session_for(key) as s:
            n = 0
            while not stop_probe.is_set():
                n += 1
                body = f"probe {n}".encode()
                try:
                    ok = (s.put(f"{nodes.node2.url}/probe.txt", data=body, timeout=TIMEOUT).status_code in (201, 204)
                          and s.get(f"{nodes.node2.url}/probe.txt", timeout=TIMEOUT).content == body)
                    probe_log.append((time.monotonic(), "" if ok else f"probe {n}: wrong answer"))
                except requests.RequestException as exc:
                    probe_log.append((time.monotonic(), f"probe {n}: {exc}"))
                time.sleep(0.05)

    def worker(part: list[Upload]) -> None:
        for job in part:
            if killed.is_set():
                return  # the node is gone; the rest were never sent
            send_upload(nodes.node1.port, auth, job, timeout=TIMEOUT)

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    threads = [threading.Thread(target=worker, args=(jobs[i::8],), daemon=True) for i in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 120
    while sum(1 for j in jobs if j.status) < 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    in_flight = [j.name for j in jobs if j.in_flight]
    killed_at = time.monotonic()
    killed.set()
    old_group = nodes.node1.proc.pid if nodes.node1.proc else 0  # started in its own session: pgid = pid
    nodes.node1.kill()  # SIGKILL to the process group: the parent and every worker
    for t in threads:
        t.join(TIMEOUT + 5)
    time.sleep(3)  # node 2 keeps serving after the kill
    stop_probe.set()
    prober.join(TIMEOUT)
    acked = {j.name for j in jobs if j.status is not None and 200 <= j.status < 300}
    refused = {j.name: j.status for j in jobs if j.status is not None and not 200 <= j.status < 300}
    print(f"acknowledged before the kill: {len(acked)}; in flight at the kill: {len(in_flight)}")
    assert not refused, f"PUTs refused before the kill: {refused}"
    assert in_flight and len(acked) < len(jobs), "the kill did not land during the uploads: the test proved nothing"
    assert [p for _, p in probe_log if p] == [], "node 2 failed while node 1 died"
    assert sum(1 for t, _ in probe_log if t > killed_at) >= 5, "node 2 was not asked after the kill"

    print(f"left of node 1's killed processes at its restart: {lingering(old_group)}")
    nodes.node1.start()
    staging = nodes.node1.data_dir / "staging"
    problems: list[str] = []
    try:
        with session_for(key) as s:
            for node in (nodes.node1, nodes.node2):
                listing = propfind(s, node.url + "/")
                names = {href.lstrip("/") for href in listing} - {"probe.txt"}
                if names - set(v2):
                    problems.append(f"{node.url} lists names never uploaded: {sorted(names - set(v2))}")
                for name in sorted(v2):
                    r = s.get(f"{node.url}/{name}", timeout=TIMEOUT)
                    old = v1.get(name)
                    if r.status_code == 404:
                        if old is not None or name in acked:
                            problems.append(f"{node.url} {name}: lost")
                        continue
                    if r.content not in (v2[name], old):
                        problems.append(f"{node.url} {name}: torn ({len(r.content)} bytes)")
                        continue
                    if name in acked and r.content != v2[name]:
                        problems.append(f"{node.url} {name}: acknowledged upload lost")
                    problem = describes(listing.get(f"/{name}"), r.content)
                    if problem:
                        problems.append(f"{node.url} {name}: {problem}")
    except requests.RequestException as exc:  # a hang: say where each process waits
        pytest.fail(f"after the restart: {exc}\n--- left of node 1's killed processes ---\n"
                    f"{lingering(old_group)}\n--- node 1 ---\n{nodes.node1.dump_stacks()}\n"
                    f"--- node 2 ---\n{nodes.node2.dump_stacks()}")
    on_disk = set(os.listdir(nodes.node1.data_dir / "collections" / key_id)) - {"probe.txt"}
    if on_disk - set(v2):
        problems.append(f"stray files in the collection: {sorted(on_disk - set(v2))}")
    assert not problems, "\n".join(problems[:20]) + "\n" + nodes.logs()
    deadline = time.monotonic() + 10 * SWEEP_INTERVAL
    while os.listdir(staging) and time.monotonic() < deadline:
        time.sleep(0.1)
    # ceph-fuse sometimes keeps the flock of a process killed while it held it: with no process left
    # that has the file open, the cluster still says it is locked, and the sweep rightly leaves a
    # locked file alone. Anything else left is a sweep that failed.
    left = staging_left(staging, nodes)
    unswept = {name: why for name, why in left.items() if why != "leaked"}
    assert not unswept, f"staging/ not swept after the restart: {unswept}\n{nodes.logs()}"
    if left:
        print(f"left in staging/, locked by the cluster for no process (a lock ceph-fuse kept): {sorted(left)}")
