"""Scale-out, end to end: two uss_dav nodes on ONE data directory behind haproxy
with WebDAV locks in Redis (the multi-node model), and `--workers 2` on one port.

Every daemon is real: Debian's redis-server and haproxy are started here on
free ports with their own temporary directories and stopped afterwards. Where
they are not installed the tests skip with the reason; under CI=true they fail.

Through the balancer (round robin, so consecutive requests of one client land
on different nodes): litmus in full, rclone copy + check, and a mixed load of
8 clients (USS_SCALEOUT_SECONDS, default 30) whose every answer is checked
against an exact model. Directly against each node: a key rotated on node 1
is refused by node 2 on its next request, a LOCK taken on node 1 binds node 2,
same-name PUTs racing from both nodes leave one complete, correctly described
version. The staging sweep of a starting node spares the uploads of the
others. With Redis stopped, writes fail closed and reads go on; when it comes
back the nodes recover without a restart. `--workers 2` (locks on the data
directory, no Redis): both workers serve the port and share locks, a killed
one is replaced, SIGTERM stops them all. Runs in about
80 s. docs/scale-out.md explains the deployment these tests model.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import os
import random
import re
import shutil
import signal
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import pytest
import requests

from bench.harness import proc
from bench.harness.servers import RedisServer, stop_process
from tests.litmus import assert_litmus_clean, run_litmus
from tests.server import RunningServer, free_port, write_config

DAV = "{DAV:}"
OC = "{http://owncloud.org/ns}"
#: Seconds the mixed load runs through the balancer.
LOAD_SECONDS = float(os.environ.get("USS_SCALEOUT_SECONDS", "30"))
LOAD_CLIENTS = 8
#: Response header haproxy adds: which node answered.
NODE_HEADER = "X-Uss-Node"
TIMEOUT = 60

LOCK_BODY = (
    b'<?xml version="1.0" encoding="utf-8"?><D:lockinfo xmlns:D="DAV:">'
    b"<D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype>"
    b"<D:owner><D:href>scale-out test</D:href></D:owner></D:lockinfo>"
)
PROPFIND_BODY = (
    b'<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:" xmlns:O="http://owncloud.org/ns">'
    b"<D:prop><D:resourcetype/><D:getcontentlength/><D:getetag/><O:checksums/></D:prop></D:propfind>"
)


# --- external daemons --------------------------------------------------------------


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_tool(name: str) -> str:
    """The tool's path; skip (under CI: fail) when it is not installed."""
    path = shutil.which(name) or next(
        (p for p in (f"/usr/bin/{name}", f"/usr/sbin/{name}") if os.access(p, os.X_OK)), None
    )
    if path is None:
        if in_ci():
            pytest.fail(f"{name} is not installed (CI must install the Debian package {name})")
        pytest.skip(f"{name} is not installed (apt-get install {name})")
    return path


def haproxy_config(port: int, backends: list[int]) -> str:
    """Round robin over the nodes; health checked on the REST ping; answers name the node."""
    servers = "\n".join(f"    server node{i + 1} 127.0.0.1:{p} check inter 1s" for i, p in enumerate(backends))
    return f"""\
global
    maxconn 1000

defaults
    mode http
    timeout connect 5s
    timeout client 120s
    timeout server 120s
    timeout http-request 30s

frontend webdav
    bind 127.0.0.1:{port}
    default_backend uss_dav

backend uss_dav
    balance roundrobin
    option httpchk
    http-check send meth GET uri /api/v1/ping
    http-check expect status 200
    http-response set-header {NODE_HEADER} %[srv_name]
{servers}
"""


def redis_in(workdir: Path) -> RedisServer:
    """bench.harness's redis-server (no persistence) in `workdir`; skip (under CI: fail) when not installed."""
    require_tool("redis-server")
    return RedisServer(workdir)


class Haproxy:
    """haproxy in the foreground (-db) with a config written here."""

    def __init__(self, workdir: Path, backends: list[int]) -> None:
        self.exe = require_tool("haproxy")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cfg = workdir / "haproxy.cfg"
        self.cfg.write_text(haproxy_config(self.port, backends))
        self.log_path = workdir / "haproxy.log"
        self.backends = backends
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Haproxy:
        check = subprocess.run([self.exe, "-c", "-f", str(self.cfg)], capture_output=True, text=True, timeout=30, check=False)
        assert check.returncode == 0, f"haproxy -c: {check.stdout}{check.stderr}"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [self.exe, "-f", str(self.cfg), "-db"], stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        # Ready when pings through it have reached every node.
        seen: set[str] = set()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(seen) < len(self.backends):
            if self.proc.poll() is not None:
                raise RuntimeError(f"haproxy exited: {self.log_path.read_text()[-2000:]}")
            with contextlib.suppress(requests.ConnectionError):
                r = requests.get(self.url + "/api/v1/ping", timeout=5)
                if r.status_code == 200:
                    seen.add(r.headers.get(NODE_HEADER, ""))
                    continue
            time.sleep(0.05)
        if len(seen) < len(self.backends):
            raise RuntimeError(f"haproxy reached only {sorted(seen)}: {self.log_path.read_text()[-2000:]}")
        return self

    def stop(self) -> None:
        stop_process(self.proc)


@dataclass
class Cluster:
    node1: RunningServer
    node2: RunningServer
    balancer: Haproxy
    redis: RedisServer
    data_dir: Path

    @property
    def url(self) -> str:
        return self.balancer.url

    def logs(self) -> str:
        return "\n".join(f"--- {n.url} (tail) ---\n{n.log()[-2500:]}" for n in (self.node1, self.node2))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("scaleout")


@pytest.fixture(scope="module")
def redis_server(workdir: Path) -> Iterator[RedisServer]:
    srv = redis_in(workdir)
    try:
        yield srv.start()
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def cluster(workdir: Path, redis_server: RedisServer) -> Iterator[Cluster]:
    """Two run_server.py processes on one data directory, locks in Redis, haproxy in front."""
    require_tool("haproxy")
    root = workdir / "cluster"
    root.mkdir()
    config = write_config(root / "config.yaml", locks=redis_server.url, auth_failure_limit=0)
    data = root / "data"
    nodes = [RunningServer(data, config=config), RunningServer(data, config=config)]
    balancer: Haproxy | None = None
    try:
        for node in nodes:
            node.start()
        balancer = Haproxy(root, [n.port for n in nodes]).start()
        yield Cluster(nodes[0], nodes[1], balancer, redis_server, data)
    finally:
        if balancer is not None:
            balancer.stop()
        for node in nodes:
            node.stop()


def session_for(key: str) -> requests.Session:
    s = requests.Session()
    s.auth = (key, "")
    return s


def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


# --- WebDAV helpers ----------------------------------------------------------------


@dataclass
class Described:
    """What a PROPFIND says of one file."""

    length: int | None
    etag: str | None
    checksums: str | None  # "SHA1:... MD5:..." or None when not answered with 200


def parse_multistatus(body: bytes) -> dict[str, Described]:
    """href path (unquoted, no trailing slash for files) -> its description; folders are left out."""
    out = {}
    for resp in ET.fromstring(body).iter(f"{DAV}response"):
        href = unquote(urlsplit(resp.findtext(f"{DAV}href") or "").path)
        props: dict[str, str | None] = {}
        is_dir = False
        for propstat in resp.iter(f"{DAV}propstat"):
            if " 200 " not in f" {propstat.findtext(f'{DAV}status') or ''} ":
                continue
            prop = propstat.find(f"{DAV}prop")
            for el in prop if prop is not None else []:
                if el.tag == f"{DAV}resourcetype":
                    is_dir = el.find(f"{DAV}collection") is not None
                elif el.tag == f"{OC}checksums":
                    props[el.tag] = el.findtext(f"{OC}checksum")
                else:
                    props[el.tag] = el.text
        if is_dir:
            continue
        length = props.get(f"{DAV}getcontentlength")
        out[href] = Described(
            int(length) if length is not None else None,
            (props.get(f"{DAV}getetag") or "").strip('"') or None,
            props.get(f"{OC}checksums"),
        )
    return out


def propfind(session: requests.Session, url: str, depth: str = "1") -> dict[str, Described]:
    r = session.request("PROPFIND", url, data=PROPFIND_BODY, timeout=TIMEOUT,
                        headers={"Depth": depth, "Content-Type": "application/xml; charset=utf-8"})
    assert r.status_code == 207, f"PROPFIND {url}: {r.status_code} {r.text[:300]}"
    return parse_multistatus(r.content)


def describes(d: Described | None, data: bytes) -> str | None:
    """None if the PROPFIND description is exactly that of `data`, else what differs."""
    if d is None:
        return "not listed"
    expected = f"SHA1:{sha1(data)} MD5:{hashlib.md5(data).hexdigest()}"
    problems = []
    if d.length != len(data):
        problems.append(f"getcontentlength {d.length} != {len(data)}")
    if d.etag != sha1(data):
        problems.append(f"getetag {d.etag} != SHA-1 {sha1(data)}")
    if d.checksums != expected:
        problems.append(f"oc:checksums {d.checksums!r} != {expected!r}")
    return "; ".join(problems) or None


# --- through the balancer ----------------------------------------------------------


def test_litmus_passes_in_full_through_the_balancer(cluster: Cluster, tmp_path: Path) -> None:
    """Every suite, no failure, no warning, with consecutive requests on alternating nodes."""
    _id, key = cluster.node1.create_key()
    output = run_litmus(cluster.url + "/", key, str(tmp_path))
    assert_litmus_clean(output)


def _rclone(tmp: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    exe = require_tool("rclone")
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


@dataclass
class LoadClient:
    """One client of the mixed load: its own names, so its model of them is exact."""

    idx: int
    base: str
    key: str
    folder: str
    model: dict[str, bytes] = field(default_factory=dict)  # name -> bytes acknowledged
    ops: Counter[str] = field(default_factory=Counter)
    nodes: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)  # 5xx, connection errors
    wrong: list[str] = field(default_factory=list)  # answers the model contradicts

    def name(self, n: int) -> str:
        return f"c{self.idx}-{n:02d}.bin"

    def url(self, name: str) -> str:
        return f"{self.base}{self.folder}{name}"

    def call(self, s: requests.Session, method: str, url: str, **kw: object) -> requests.Response | None:
        try:
            r = s.request(method, url, timeout=TIMEOUT, **kw)  # type: ignore[arg-type]
        except requests.RequestException as exc:
            self.errors.append(f"{method} {url}: {type(exc).__name__}: {exc}")
            return None
        self.nodes[r.headers.get(NODE_HEADER, "?")] += 1
        if r.status_code >= 500:
            self.errors.append(f"{method} {url} -> {r.status_code} via {r.headers.get(NODE_HEADER)}: {r.text[:200]}")
            return None
        return r

    def expect(self, r: requests.Response | None, what: str, *statuses: int) -> bool:
        if r is None:
            return False
        if r.status_code not in statuses:
            self.wrong.append(f"{what} -> {r.status_code} (expected {statuses}) via "
                              f"{r.headers.get(NODE_HEADER)}: {r.text[:200]}")
            return False
        return True

    def run(self, until: float) -> None:
        rng = random.Random(4242 + self.idx)
        prefix = f"c{self.idx}-"
        with session_for(self.key) as s:
            while time.monotonic() < until and len(self.errors) + len(self.wrong) < 20:
                roll = rng.random()
                name = self.name(rng.randrange(16))
                present = sorted(self.model)
                if roll < 0.35 or not present:
                    body = rng.randbytes(rng.randrange(1, 48 * 1024))
                    r = self.call(s, "PUT", self.url(name), data=body)
                    if self.expect(r, f"PUT {name}", 204 if name in self.model else 201):
                        self.model[name] = body
                    self.ops["PUT"] += 1
                elif roll < 0.65:
                    name = rng.choice(present)
                    r = self.call(s, "GET", self.url(name))
                    if self.expect(r, f"GET {name}", 200) and r.content != self.model[name]:  # type: ignore[union-attr]
                        self.wrong.append(f"GET {name}: {len(r.content)} bytes, not the {len(self.model[name])} "  # type: ignore[union-attr]
                                          f"acknowledged, via {r.headers.get(NODE_HEADER)}")  # type: ignore[union-attr]
                    self.ops["GET"] += 1
                elif roll < 0.80:
                    r = self.call(s, "PROPFIND", self.url(""), data=PROPFIND_BODY,
                                  headers={"Depth": "1", "Content-Type": "application/xml; charset=utf-8"})
                    if self.expect(r, "PROPFIND", 207):
                        listed = {href.rsplit("/", 1)[-1]: d for href, d in parse_multistatus(r.content).items()}  # type: ignore[union-attr]
                        mine = {n for n in listed if n.startswith(prefix)}
                        if mine != set(self.model):
                            self.wrong.append(f"PROPFIND via {r.headers.get(NODE_HEADER)}: lists {sorted(mine)}, "  # type: ignore[union-attr]
                                              f"acknowledged {sorted(self.model)}")
                        for n in mine & set(self.model):
                            problem = describes(listed[n], self.model[n])
                            if problem:
                                self.wrong.append(f"PROPFIND {n} via {r.headers.get(NODE_HEADER)}: {problem}")  # type: ignore[union-attr]
                    self.ops["PROPFIND"] += 1
                elif roll < 0.90:
                    name = rng.choice(present)
                    r = self.call(s, "DELETE", self.url(name))
                    if self.expect(r, f"DELETE {name}", 204):
                        del self.model[name]
                    self.ops["DELETE"] += 1
                else:
                    src = rng.choice(present)
                    dst = self.name(rng.randrange(16))
                    if dst == src:
                        continue
                    r = self.call(s, "MOVE", self.url(src),
                                  headers={"Destination": self.url(dst), "Overwrite": "T"})
                    if self.expect(r, f"MOVE {src} -> {dst}", 204 if dst in self.model else 201):
                        self.model[dst] = self.model.pop(src)
                    self.ops["MOVE"] += 1


def test_mixed_load_of_8_clients_through_the_balancer_matches_the_model(cluster: Cluster) -> None:
    """PUT/GET/PROPFIND/DELETE/MOVE from 8 clients for LOAD_SECONDS: no 5xx, no connection error,
    every answer as the model predicts, and at the end both nodes list exactly what was acknowledged."""
    _id, key = cluster.node1.create_key()
    folder = "/load/"
    with session_for(key) as s:
        assert s.request("MKCOL", cluster.url + folder, timeout=TIMEOUT).status_code == 201
    clients = [LoadClient(i, cluster.url, key, folder) for i in range(LOAD_CLIENTS)]
    failures: list[str] = []

    def guarded(client: LoadClient, until: float) -> None:
        try:
            client.run(until)
        except Exception as exc:  # noqa: BLE001 -- a bug here must fail the test, not hang it
            failures.append(f"client {client.idx}: {type(exc).__name__}: {exc}")

    until = time.monotonic() + LOAD_SECONDS
    threads = [threading.Thread(target=guarded, args=(c, until), daemon=True) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(LOAD_SECONDS + 2 * TIMEOUT)
    assert not any(t.is_alive() for t in threads), "a load client hung"
    assert not failures, failures

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
    _id, key = cluster.node1.create_key()
    n1, n2 = cluster.node1.url, cluster.node2.url
    with session_for(key) as s:
        assert s.put(n1 + "/doc.txt", data=b"v1", timeout=TIMEOUT).status_code == 201
        r = s.request("LOCK", n1 + "/doc.txt", data=LOCK_BODY, headers={"Timeout": "Second-600"}, timeout=TIMEOUT)
        assert r.status_code == 200, r.text
        token = r.headers["Lock-Token"].strip("<>")

        # Node 2 knows the lock: it refuses writes without the token and shows it.
        assert s.put(n2 + "/doc.txt", data=b"intruder", timeout=TIMEOUT).status_code == 423
        assert s.delete(n2 + "/doc.txt", timeout=TIMEOUT).status_code == 423
        assert s.request("LOCK", n2 + "/doc.txt", data=LOCK_BODY, timeout=TIMEOUT).status_code == 423
        r = s.request("PROPFIND", n2 + "/doc.txt", headers={"Depth": "0"}, timeout=TIMEOUT,
                      data=b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:lockdiscovery/>'
                           b"</D:prop></D:propfind>")
        assert r.status_code == 207 and token in r.text, r.text
        assert s.get(n2 + "/doc.txt", timeout=TIMEOUT).content == b"v1"

        # The token taken on node 1 works on node 2, and node 2 can release the lock.
        r = s.put(n2 + "/doc.txt", data=b"v2", headers={"If": f"(<{token}>)"}, timeout=TIMEOUT)
        assert r.status_code == 204, r.text
        r = s.request("UNLOCK", n2 + "/doc.txt", headers={"Lock-Token": f"<{token}>"}, timeout=TIMEOUT)
        assert r.status_code == 204, r.text

        # Released everywhere.
        assert s.put(n1 + "/doc.txt", data=b"v3", timeout=TIMEOUT).status_code == 204
        assert s.put(n2 + "/doc.txt", data=b"v4", timeout=TIMEOUT).status_code == 204
        assert s.get(n1 + "/doc.txt", timeout=TIMEOUT).content == b"v4"

        # A depth-infinity lock on a folder taken on node 2 covers new members written on node 1.
        assert s.request("MKCOL", n1 + "/folder/", timeout=TIMEOUT).status_code == 201
        r = s.request("LOCK", n2 + "/folder/", data=LOCK_BODY, headers={"Depth": "infinity"}, timeout=TIMEOUT)
        assert r.status_code == 200, r.text
        token = r.headers["Lock-Token"].strip("<>")
        assert s.put(n1 + "/folder/new.txt", data=b"x", timeout=TIMEOUT).status_code == 423
        r = s.put(n1 + "/folder/new.txt", data=b"x", headers={"If": f"(<{token}>)"}, timeout=TIMEOUT)
        assert r.status_code == 201, r.text
        r = s.request("UNLOCK", n1 + "/folder/", headers={"Lock-Token": f"<{token}>"}, timeout=TIMEOUT)
        assert r.status_code == 204, r.text


def _racing_put(port: int, auth: str, path: str, body: bytes, barrier: threading.Barrier, out: list[object],
                i: int) -> None:
    """PUT `body` with all but its last byte sent at once; the last byte goes when both racers are ready,
    so the two servers finish their uploads (and commit) within the same fraction of a millisecond."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        conn.putrequest("PUT", path)
        conn.putheader("Authorization", auth)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        conn.send(body[:-1])
        barrier.wait(TIMEOUT)
        conn.send(body[-1:])
        resp = conn.getresponse()
        resp.read()
        out[i] = resp.status
    except Exception as exc:  # noqa: BLE001 -- reported by the test
        out[i] = f"{type(exc).__name__}: {exc}"
        barrier.abort()
    finally:
        conn.close()


def test_same_name_puts_racing_from_both_nodes_leave_one_complete_version(cluster: Cluster) -> None:
    """Each round, node 1 and node 2 each receive a PUT of /race.bin, completed at the same
    moment (bodies of about 1 MB, distinct sizes and content), while each node also answers
    a stream of listings, as a node under load does. Afterwards both nodes serve the same
    bytes, equal to one of the two bodies, and the GET ETag and PROPFIND's size, ETag
    (SHA-1) and oc:checksums describe exactly those bytes, on both nodes."""
    rounds = int(os.environ.get("USS_SCALEOUT_RACE_ROUNDS", "150"))
    _id, key = cluster.node1.create_key()
    auth = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
    rng = random.Random(99)
    problems: list[str] = []
    winners: Counter[str] = Counter()
    nodes = (cluster.node1, cluster.node2)
    sessions = [session_for(key), session_for(key)]
    with session_for(key) as s:
        assert s.request("MKCOL", cluster.node1.url + "/busy/", timeout=TIMEOUT).status_code == 201
        for i in range(100):
            assert s.put(f"{cluster.node1.url}/busy/f{i:03d}", data=b"x" * 100, timeout=TIMEOUT).status_code == 201
    stop = threading.Event()

    def keep_busy(url: str) -> None:
        with session_for(key) as s:
            while not stop.is_set():
                try:
                    r = s.request("PROPFIND", url + "/busy/", headers={"Depth": "1"}, timeout=TIMEOUT)
                    if r.status_code != 207:
                        problems.append(f"background PROPFIND {url}: {r.status_code}")
                except requests.RequestException as exc:
                    problems.append(f"background PROPFIND {url}: {type(exc).__name__}: {exc}")

    busy = [threading.Thread(target=keep_busy, args=(n.url,), daemon=True) for n in nodes]
    for t in busy:
        t.start()
    try:
        for rnd in range(rounds):
            sizes = rng.sample(range(900_000, 1_100_000), 2)
            bodies = [os.urandom(n) for n in sizes]
            statuses: list[object] = [None, None]
            barrier = threading.Barrier(2)
            threads = [threading.Thread(target=_racing_put, daemon=True,
                                        args=(nodes[i].port, auth, "/race.bin", bodies[i], barrier, statuses, i))
                       for i in (0, 1)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(2 * TIMEOUT)
            if any(s not in (201, 204) for s in statuses):
                problems.append(f"round {rnd}: PUT statuses {statuses}")
                continue
            got = []
            for i, node in enumerate(nodes):
                r = sessions[i].get(node.url + "/race.bin", timeout=TIMEOUT)
                data = r.content
                got.append(data)
                if r.status_code != 200 or data not in bodies:
                    problems.append(f"round {rnd}: GET from node {i + 1}: {r.status_code}, {len(data)} bytes, "
                                    f"neither body ({sizes[0]} / {sizes[1]})")
                    continue
                whose = f"body of node {bodies.index(data) + 1}"
                if r.headers.get("ETag", "").strip('"') != sha1(data):
                    problems.append(f"round {rnd}: GET on node {i + 1} ({whose}): ETag {r.headers.get('ETag')} "
                                    f"!= SHA-1 {sha1(data)}")
                problem = describes(propfind(sessions[i], node.url + "/race.bin", depth="0").get("/race.bin"), data)
                if problem:
                    problems.append(f"round {rnd}: PROPFIND on node {i + 1} ({whose}): {problem}")
            if got[0] != got[1]:
                problems.append(f"round {rnd}: the nodes serve different bytes")
            elif got[0] in bodies:
                winners[f"node{bodies.index(got[0]) + 1}"] += 1
    finally:
        stop.set()
        for t in busy:
            t.join(TIMEOUT)
        for s in sessions:
            s.close()
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


# --- Redis failure -----------------------------------------------------------------


def test_redis_outage_fails_writes_closed_and_the_node_recovers(workdir: Path, tmp_path: Path) -> None:
    """With Redis gone, GET and HEAD still work; every request that needs the lock
    table (PUT, PROPFIND, LOCK, ...) is refused with a 5xx rather than run
    without lock checks. Once Redis is back the node serves writes again without
    a restart; the locks are gone with the Redis that held them (no persistence)."""
    redis_srv = redis_in(workdir).start()
    node = RunningServer(tmp_path / "data", config=write_config(tmp_path / "config.yaml", locks=redis_srv.url))
    try:
        node.start()
        _id, key = node.create_key()
        with session_for(key) as s:
            assert s.put(node.url + "/a.txt", data=b"before", timeout=TIMEOUT).status_code == 201
            r = s.request("LOCK", node.url + "/a.txt", data=LOCK_BODY, timeout=TIMEOUT)
            assert r.status_code == 200
            assert s.put(node.url + "/a.txt", data=b"no token", timeout=TIMEOUT).status_code == 423

            redis_srv.stop()
            r = s.get(node.url + "/a.txt", timeout=TIMEOUT)
            assert r.status_code == 200 and r.content == b"before"
            assert s.head(node.url + "/a.txt", timeout=TIMEOUT).status_code == 200
            answers = {}
            for method, path, kw in (
                ("PUT", "/a.txt", {"data": b"during"}),
                ("PUT", "/new.txt", {"data": b"during"}),
                ("PROPFIND", "/", {"headers": {"Depth": "1"}}),
                ("LOCK", "/b.txt", {"data": LOCK_BODY}),
            ):
                t0 = time.monotonic()
                r = s.request(method, node.url + path, timeout=TIMEOUT, **kw)  # type: ignore[arg-type]
                answers[f"{method} {path}"] = (r.status_code, round(time.monotonic() - t0, 1))
            print(f"with Redis stopped: {answers}")
            assert all(status >= 500 for status, _ in answers.values()), answers
            assert s.get(node.url + "/a.txt", timeout=TIMEOUT).content == b"before", "a write went through"
            assert s.get(node.url + "/new.txt", timeout=TIMEOUT).status_code == 404

            redis_srv.start()  # same port, empty: the lock is gone
            r = s.put(node.url + "/a.txt", data=b"after", timeout=TIMEOUT)
            assert r.status_code == 204, r.text
            assert s.request("LOCK", node.url + "/b.txt", data=LOCK_BODY, timeout=TIMEOUT).status_code in (200, 201)
            assert s.request("PROPFIND", node.url + "/", headers={"Depth": "1"}, timeout=TIMEOUT).status_code == 207
    finally:
        node.stop()
        redis_srv.stop()


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
        tmp_path / "data", config=write_config(tmp_path / "config.yaml", auth_failure_limit=0, locks=""),
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

        # SIGKILL one worker: the parent starts another; requests keep working.
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        survivor = (workers - {victim}).pop()
        replaced = _wait_for(lambda: _exactly(children_of(parent) - {victim}, 2), 15)
        assert replaced, f"no replacement worker: children now {children_of(parent)}\n{srv.log()[-2000:]}"
        assert survivor in replaced
        newcomer = (replaced - {survivor}).pop()
        assert "starting another" in srv.log()
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
