"""Load: 8 clients, mixed PUT/GET/PROPFIND/DELETE/MOVE on one collection, checked against a model.

Each client owns a disjoint set of names, and is the only one to PUT, DELETE
or MOVE them, so its model of them is exact and every answer about its own
names is predictable (201 vs 204, 404, exact bytes, size and ETag in a
listing). All clients also GET and PROPFIND everybody's names: those answers
cannot be predicted, but every body carries its own name and version and is
checked for being one whole version (never torn). At the end the listing and
the bytes of every file must equal the union of the models.

USS_LOAD_SECONDS sets the duration (default 60).
"""

from __future__ import annotations

import collections
import hashlib
import os
import random
import re
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

import pytest
import requests

from tests.server import RunningServer, write_config
from uss_dav.storage.records import read_record

DAV = "{DAV:}"
CLIENTS = 8
NAMES_PER_CLIENT = 8
DURATION = float(os.environ.get("USS_LOAD_SECONDS", "60"))
TIMEOUT = 15.0
MAX_REPORTED = 40


def make_body(origin: str, version: int, size: int) -> bytes:
    """A self-describing body: 'origin|version|size|' then bytes determined by those three."""
    head = f"{origin}|{version}|{size}|".encode()
    filler = random.Random(f"{origin}/{version}/{size}").randbytes(max(0, size - len(head)))
    return head + filler


def parse_body(body: bytes) -> tuple[str, int, int] | None:
    try:
        origin, version, size, _ = body.split(b"|", 3)
        return origin.decode(), int(version), int(size)
    except ValueError:
        return None


@dataclass
class Shared:
    url: str
    key: str
    deadline: float
    files: Path | None = None  # the collection on disk, for diagnostics
    lock: threading.Lock = field(default_factory=threading.Lock)
    problems: list[str] = field(default_factory=list)
    server_errors: int = 0
    connection_errors: int = 0
    counts: collections.Counter = field(default_factory=collections.Counter)

    def problem(self, text: str) -> None:
        with self.lock:
            if len(self.problems) < MAX_REPORTED:
                self.problems.append(text)


def listing(session: requests.Session, url: str) -> tuple[int, dict[str, tuple[int, str]]]:
    r = session.request("PROPFIND", url + "/", headers={"Depth": "1"}, timeout=TIMEOUT)
    out: dict[str, tuple[int, str]] = {}
    if r.status_code != 207:
        return r.status_code, out
    for resp in ET.fromstring(r.content).iter(f"{DAV}response"):
        href = unquote(resp.findtext(f"{DAV}href") or "")
        if href == "/":
            continue
        length = resp.findtext(f".//{DAV}getcontentlength")
        etag = (resp.findtext(f".//{DAV}getetag") or "").strip('"')
        out[href.lstrip("/")] = (int(length) if length is not None else -1, etag)
    return r.status_code, out


class Client(threading.Thread):
    def __init__(self, index: int, shared: Shared, all_names: list[str]) -> None:
        super().__init__(daemon=True, name=f"load-{index}")
        self.index = index
        self.shared = shared
        self.rng = random.Random(1000 + index)
        self.own = [f"c{index}-{k}.bin" for k in range(NAMES_PER_CLIENT)]
        self.all_names = all_names
        #: name -> (origin, version, size) of what the server acknowledged, or None
        self.model: dict[str, tuple[str, int, int] | None] = {n: None for n in self.own}
        self.version = 0

    def expected_body(self, name: str) -> bytes | None:
        state = self.model[name]
        return make_body(*state) if state else None

    def request(self, session: requests.Session, method: str, name: str, **kw) -> requests.Response | None:
        try:
            r = session.request(method, f"{self.shared.url}/{name}", timeout=TIMEOUT, **kw)
        except requests.RequestException as exc:
            with self.shared.lock:
                self.shared.connection_errors += 1
            self.shared.problem(f"client {self.index}: {method} {name}: {exc!r}")
            return None
        with self.shared.lock:
            self.shared.counts[method] += 1
            if r.status_code >= 500:
                self.shared.server_errors += 1
        if r.status_code >= 500:
            self.shared.problem(f"client {self.index}: {method} {name} -> {r.status_code} {r.text[:200]!r}")
        return r

    def expect(self, r: requests.Response | None, allowed: tuple[int, ...], what: str) -> bool:
        if r is None:
            return False
        if r.status_code not in allowed:
            self.shared.problem(f"client {self.index}: {what} -> {r.status_code}, model says {allowed}: {r.text[:200]!r}")
            return False
        return True

    def run(self) -> None:
        with requests.Session() as s:
            s.auth = (self.shared.key, "")
            while time.monotonic() < self.shared.deadline:
                op = self.rng.choices(["put", "get", "get_any", "propfind", "delete", "move"], [30, 20, 20, 8, 10, 12])[0]
                getattr(self, op)(s)

    def put(self, s: requests.Session) -> None:
        name = self.rng.choice(self.own)
        self.version += 1
        state = (name, self.version, self.rng.choice([1000, 5000, 30_000, 120_000, 250_000]))
        r = self.request(s, "PUT", name, data=make_body(*state))
        if self.expect(r, (204,) if self.model[name] else (201,), f"PUT {name}"):
            self.model[name] = state
        elif r is not None and 200 <= r.status_code < 300:
            self.model[name] = state  # acknowledged, only with an unexpected code

    def get(self, s: requests.Session) -> None:
        name = self.rng.choice(self.own)
        expected = self.expected_body(name)
        r = self.request(s, "GET", name)
        if not self.expect(r, (200,) if expected else (404,), f"GET {name}"):
            return
        if expected is not None:
            if r.content != expected:
                self.shared.problem(f"client {self.index}: GET {name}: {len(r.content)} bytes, not the acknowledged "
                                    f"version {self.model[name]}")
            elif r.headers.get("ETag", "").strip('"') != hashlib.sha1(expected).hexdigest():
                self.shared.problem(f"client {self.index}: GET {name}: ETag {r.headers.get('ETag')} is not the SHA-1")

    def get_any(self, s: requests.Session) -> None:
        name = self.rng.choice(self.all_names)
        r = self.request(s, "GET", name)
        if r is None or r.status_code == 404:
            return
        if r.status_code != 200:
            self.shared.problem(f"client {self.index}: GET {name} (any) -> {r.status_code}")
            return
        parsed = parse_body(r.content)
        if parsed is None or r.content != make_body(*parsed):
            self.shared.problem(f"client {self.index}: GET {name} (any): torn body of {len(r.content)} bytes")

    def propfind(self, s: requests.Session) -> None:
        try:
            status, seen = listing(s, self.shared.url)
        except (requests.RequestException, ET.ParseError) as exc:
            with self.shared.lock:
                self.shared.connection_errors += 1
            self.shared.problem(f"client {self.index}: PROPFIND: {exc!r}")
            return
        with self.shared.lock:
            self.shared.counts["PROPFIND"] += 1
            if status >= 500:
                self.shared.server_errors += 1
        if status != 207:
            self.shared.problem(f"client {self.index}: PROPFIND -> {status}")
            return
        for name in self.own:
            expected = self.expected_body(name)
            if expected is None:
                if name in seen:
                    self.shared.problem(f"client {self.index}: PROPFIND lists {name}, which the model says is gone")
            elif seen.get(name) != (len(expected), hashlib.sha1(expected).hexdigest()):
                self.shared.problem(f"client {self.index}: PROPFIND {name}: {seen.get(name)} != model "
                                    f"({len(expected)}, sha1); {self.diagnose(s, name)}")
        stray = [n for n in seen if n not in self.all_names]
        if stray:
            self.shared.problem(f"client {self.index}: PROPFIND lists unknown names {stray[:5]}")

    def diagnose(self, s: requests.Session, name: str) -> str:
        """What the server and the disk say about `name` right now (after a surprising answer)."""
        parts = []
        try:
            depth0 = s.request("PROPFIND", f"{self.shared.url}/{name}", headers={"Depth": "0"}, timeout=TIMEOUT)
            etag0 = ET.fromstring(depth0.content).findtext(f".//{DAV}getetag") if depth0.status_code == 207 else None
            parts.append(f"now depth-0 ETag {etag0}")
            parts.append(f"depth-1 {listing(s, self.shared.url)[1].get(name)}")
            parts.append(f"HEAD ETag {s.head(f'{self.shared.url}/{name}', timeout=TIMEOUT).headers.get('ETag')}")
        except (requests.RequestException, ET.ParseError) as exc:
            parts.append(repr(exc))
        if self.shared.files is not None:
            try:
                st = os.stat(self.shared.files / name)
                record = read_record(str(self.shared.files / name))
                parts.append(f"disk ino {st.st_ino} size {st.st_size}; record {record}")
            except OSError as exc:
                parts.append(repr(exc))
        return "; ".join(parts)

    def delete(self, s: requests.Session) -> None:
        name = self.rng.choice(self.own)
        r = self.request(s, "DELETE", name)
        if self.expect(r, (204,) if self.model[name] else (404,), f"DELETE {name}"):
            self.model[name] = None

    def move(self, s: requests.Session) -> None:
        src, dst = self.rng.sample(self.own, 2)
        r = self.request(s, "MOVE", src, headers={"Destination": f"{self.shared.url}/{dst}", "Overwrite": "T"})
        if self.model[src] is None:
            self.expect(r, (404,), f"MOVE {src} -> {dst}")
            return
        if self.expect(r, (204,) if self.model[dst] else (201,), f"MOVE {src} -> {dst}") or (
                r is not None and 200 <= r.status_code < 300):
            self.model[dst], self.model[src] = self.model[src], None


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("load")
    srv = RunningServer(root / "data", config=write_config(root / "config.yaml", auth_failure_limit=0))
    try:
        yield srv.start()
    finally:
        srv.stop()


def inode_etag_of(etag: str, size: int, written_after_ns: int) -> bool:
    """The server's fallback validator, <inode>-<mtime ns>-<size> in hex, for a body of `size` bytes
    written after `written_after_ns` (time.time_ns()).

    Two writers overwriting one name race for its metadata record; a reader
    that opened the file between them finds no record for that inode and
    gets this validator (still unique to the version) rather than a checksum
    of other bytes.
    """
    parts = etag.split("-")
    if len(parts) != 3 or not all(re.fullmatch("[0-9a-f]+", p) for p in parts):
        return False
    inode, mtime_ns, length = (int(p, 16) for p in parts)
    # File times come from a coarse clock: allow a second before the test began.
    return length == size and inode > 0 and written_after_ns - 10**9 <= mtime_ns <= time.time_ns()


def test_get_during_overwrites_returns_one_whole_version(loaded: RunningServer) -> None:
    """A GET racing a PUT of the same name gets the old or the new file whole, with matching headers.

    The size and ETag of the response must describe the bytes sent, and the file never seems
    to be missing (two writers alternate a 900 kB and a 1 kB version, six readers GET for 4 s).
    """
    _key_id, key = loaded.create_key()
    began_ns = time.time_ns()
    versions = {b"B" * 900_000, b"s" * 1000}
    big, small = sorted(versions, key=len, reverse=True)
    stop = time.monotonic() + 4
    problems: list[str] = []
    counts = collections.Counter()
    bodies_by_etag: dict[str, str] = {}

    def writer() -> None:
        with requests.Session() as s:
            s.auth = (key, "")
            i = 0
            while time.monotonic() < stop:
                s.put(f"{loaded.url}/x.bin", data=big if i % 2 else small, timeout=TIMEOUT)
                i += 1

    def reader() -> None:
        with requests.Session() as s:
            s.auth = (key, "")
            while time.monotonic() < stop:
                try:
                    r = s.get(f"{loaded.url}/x.bin", timeout=5)
                except requests.RequestException as exc:
                    counts["error"] += 1
                    if len(problems) < 10:
                        problems.append(f"GET broke off: {exc!r}")
                    continue
                if r.status_code != 200:
                    counts[str(r.status_code)] += 1
                    if len(problems) < 10:
                        problems.append(f"GET of a file that always exists -> {r.status_code} {r.text[:100]!r}")
                    continue
                etag = r.headers.get("ETag", "").strip('"')
                digest = hashlib.sha1(r.content).hexdigest()
                seen = bodies_by_etag.setdefault(etag, digest)
                if r.content not in versions:
                    kind = "torn"  # bytes of no single version: a mix, or the wrong length
                elif seen != digest:
                    kind = "etag-shared"  # one ETag for two different bodies: not a validator
                elif etag != digest and not inode_etag_of(etag, len(r.content), began_ns):
                    kind = "etag-not-sha1"  # whole version, but neither its SHA-1 nor its inode validator
                else:
                    counts["whole"] += 1
                    continue
                counts[kind] += 1
                if len(problems) < 10:
                    problems.append(f"{kind}: Content-Length {r.headers.get('Content-Length')}, ETag {etag}: "
                                    f"{len(r.content)} bytes starting {r.content[:4]!r}")

    with requests.Session() as s:
        assert s.put(f"{loaded.url}/x.bin", data=small, auth=(key, ""), timeout=TIMEOUT).status_code == 201
    threads = [threading.Thread(target=writer, daemon=True) for _ in range(2)]
    threads += [threading.Thread(target=reader, daemon=True) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=4 + 3 * TIMEOUT)
    print(dict(counts))
    assert counts["whole"] > 0
    assert not problems, f"{dict(counts)}\n" + "\n".join(problems)


def test_mixed_load_matches_the_model(loaded: RunningServer) -> None:
    srv = loaded
    key_id, key = srv.create_key()
    clients: list[Client] = []
    try:
        all_names = [f"c{i}-{k}.bin" for i in range(CLIENTS) for k in range(NAMES_PER_CLIENT)]
        shared = Shared(srv.url, key, time.monotonic() + DURATION, srv.data_dir / "collections" / key_id)
        clients = [Client(i, shared, all_names) for i in range(CLIENTS)]
        started = time.monotonic()
        for c in clients:
            c.start()
        for c in clients:
            c.join(timeout=DURATION + 2 * TIMEOUT)
        assert not any(c.is_alive() for c in clients), "a client did not finish"
        elapsed = time.monotonic() - started
        total = sum(shared.counts.values())
        print(f"{total} requests in {elapsed:.1f} s ({total / elapsed:.0f}/s): {dict(shared.counts)}")

        # The final state equals the union of the models.
        final: dict[str, bytes] = {}
        for c in clients:
            for name in c.own:
                body = c.expected_body(name)
                if body is not None:
                    final[name] = body
        with requests.Session() as s:
            s.auth = (key, "")
            status, seen = listing(s, srv.url)
            assert status == 207
            if set(seen) != set(final):
                shared.problem(f"final listing differs: extra {sorted(set(seen) - set(final))}, "
                               f"missing {sorted(set(final) - set(seen))}")
            for name in all_names:
                r = s.get(f"{srv.url}/{name}", timeout=TIMEOUT)
                if name not in final:
                    if r.status_code != 404:
                        shared.problem(f"final: GET {name} -> {r.status_code}, model says deleted")
                    continue
                body = final[name]
                sha1 = hashlib.sha1(body).hexdigest()
                if r.status_code != 200 or r.content != body:
                    shared.problem(f"final: GET {name} -> {r.status_code}, {len(r.content)} bytes, "
                                   f"model has {len(body)} bytes")
                elif r.headers.get("ETag", "").strip('"') != sha1:
                    shared.problem(f"final: GET {name} ETag {r.headers.get('ETag')} is not the SHA-1")
                if name in seen and seen[name] != (len(body), sha1):
                    shared.problem(f"final: PROPFIND {name} says {seen[name]}, model ({len(body)}, {sha1})")
        staging = sorted(os.listdir(srv.data_dir / "staging"))

        assert total > 0
        assert shared.server_errors == 0, f"{shared.server_errors} 5xx:\n" + "\n".join(shared.problems)
        assert shared.connection_errors == 0, f"{shared.connection_errors} connection errors:\n" + "\n".join(shared.problems)
        assert not shared.problems, "\n".join(shared.problems)
        assert staging == [], f"staging not empty when idle: {staging}"
    finally:
        for c in clients:
            c.shared.deadline = 0
