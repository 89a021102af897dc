"""Two uss_dav nodes behind haproxy (bench/harness/balancer.py) and the checks the multi-node tests
share (tests/test_scaleout.py on one local data directory, tests/test_cephfs.py on CephFS).

Each answer through haproxy names the node that served it (NODE_HEADER).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import os
import random
import threading
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

import requests

from bench.harness.balancer import HAPROXY, NODE_HEADER, Haproxy
from tests.client import require_tool, session_for
from tests.server import RunningServer

DAV = "{DAV:}"
OC = "{http://owncloud.org/ns}"
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


# --- the nodes behind it ---------------------------------------------------------


@dataclass
class BalancedNodes:
    """Two uss_dav nodes on one data directory, and the haproxy in front of them."""

    node1: RunningServer
    node2: RunningServer
    balancer: Haproxy

    @property
    def url(self) -> str:
        return self.balancer.url

    def logs(self) -> str:
        """The tail of each node's log, for an assertion message."""
        return "\n".join(f"--- {n.url} (tail) ---\n{n.log()[-2500:]}" for n in (self.node1, self.node2))


def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


# --- what a PROPFIND says ------------------------------------------------------------




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


# --- mixed load -----------------------------------------------------------------------


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


def mixed_load(base: str, key: str, folder: str, clients: int, seconds: float) -> list[LoadClient]:
    """`clients` LoadClients through `base` for `seconds`; each keeps its own exact model of its names.

    Fails (AssertionError) if a client hangs or crashes; errors and answers
    the model contradicts are left in each client for the caller to judge.
    """
    loaders = [LoadClient(i, base, key, folder) for i in range(clients)]
    failures: list[str] = []

    def guarded(client: LoadClient, until: float) -> None:
        try:
            client.run(until)
        except Exception as exc:  # noqa: BLE001 -- a bug here must fail the test, not hang it
            failures.append(f"client {client.idx}: {type(exc).__name__}: {exc}")

    until = time.monotonic() + seconds
    threads = [threading.Thread(target=guarded, args=(c, until), daemon=True) for c in loaders]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 2 * TIMEOUT)
    assert not any(t.is_alive() for t in threads), "a load client hung"
    assert not failures, failures
    return loaders


# --- same-name PUTs racing through two nodes ---------------------------------------


def racing_put(port: int, auth: str, path: str, body: bytes, barrier: threading.Barrier, out: list[object],
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


def same_name_races(nodes: Sequence[RunningServer], key: str, rounds: int) -> tuple[list[str], Counter[str]]:
    """Each round, both nodes receive a PUT of /race.bin completed at the same moment (bodies
    of about 1 MB, distinct sizes and content) while each also answers a stream of listings,
    as a node under load does. Returns what went wrong (GET or PROPFIND on either node not
    describing one whole body, the nodes disagreeing) and how often each node's body won."""
    auth = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
    rng = random.Random(99)
    problems: list[str] = []
    winners: Counter[str] = Counter()
    sessions = [session_for(key), session_for(key)]
    with session_for(key) as s:
        assert s.request("MKCOL", nodes[0].url + "/busy/", timeout=TIMEOUT).status_code == 201
        for i in range(100):
            assert s.put(f"{nodes[0].url}/busy/f{i:03d}", data=b"x" * 100, timeout=TIMEOUT).status_code == 201
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
            threads = [threading.Thread(target=racing_put, daemon=True,
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
    return problems, winners


def locks_bind_both_nodes(nodes: BalancedNodes) -> None:
    """A LOCK through one node binds the other, its token works and UNLOCK releases it through either."""
    _id, key = nodes.node1.create_key()
    n1, n2 = nodes.node1.url, nodes.node2.url
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


@contextlib.contextmanager
def balanced(work: Path, node1: RunningServer, node2: RunningServer) -> Iterator[BalancedNodes]:
    """Start both nodes and haproxy (round robin) in front of them; stop all three afterwards."""
    require_tool(HAPROXY)
    balancer: Haproxy | None = None
    try:
        for node in (node1, node2):
            node.start()
        balancer = Haproxy(work, [node1.port, node2.port]).start()
        yield BalancedNodes(node1, node2, balancer)
    finally:
        if balancer is not None:
            balancer.stop()
        for node in (node1, node2):
            node.stop()
