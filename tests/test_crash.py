"""Crash safety: SIGKILL the server while 100 PUTs are in flight, restart, check every file.

50 files are stored with known content v1. Eight threads then send 100 PUTs
(the 50 overwritten with distinct v2 content, 50 new files), bodies of
200 KB-2 MB, a quarter of them sent slowly; the server is killed once some
have been acknowledged and others are still in flight. After a restart on
the same data directory:

- every file is byte-identical to its previous or its new version (new files:
  absent or new), never torn, never empty;
- every PUT acknowledged with a 2xx before the kill is there with its new content;
- no temp/staging file is listed or left in staging/ or the collection;
- PROPFIND size and ETag match the GET bytes (ETag == SHA-1 of the body).
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import threading
import time
import xml.etree.ElementTree as ET
from base64 import b64encode
from dataclasses import dataclass, field
from urllib.parse import unquote

import requests

from tests.client import Upload, propfind, send_upload
from tests.flock_holder import flock_held_elsewhere
from tests.server import ServerFactory

DAV = "{DAV:}"
THREADS = 8
TIMEOUT = 20.0


@dataclass
class Run:
    kill_at: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)
    acked: int = 0


def _send(port: int, auth: str, job: Upload, run: Run) -> None:
    send_upload(port, auth, job, timeout=TIMEOUT)
    if job.status is not None and 200 <= job.status < 300:
        with run.lock:
            run.acked += 1


def _worker(port: int, auth: str, jobs: list[Upload], run: Run) -> None:
    for job in jobs:
        if run.kill_at and time.monotonic() > run.kill_at + 1:
            return  # the server is gone; the rest were never sent
        _send(port, auth, job, run)


def _listing(session: requests.Session, url: str) -> dict[str, tuple[int, str]]:
    r = propfind(session, url + "/", "1", timeout=TIMEOUT)
    assert r.status_code == 207, r.text[:500]
    out = {}
    for resp in ET.fromstring(r.content).iter(f"{DAV}response"):
        href = unquote(resp.findtext(f"{DAV}href") or "")
        if href == "/":
            continue
        length = resp.findtext(f".//{DAV}getcontentlength")
        etag = resp.findtext(f".//{DAV}getetag")
        out[href.lstrip("/")] = (int(length) if length is not None else -1, (etag or "").strip('"'))
    return out


def test_sigkill_during_uploads_leaves_old_or_new_versions_only(make_server: ServerFactory) -> None:
    rng = random.Random(20261124)
    srv = make_server(auth_failure_limit=0, start=False)
    key_id, key = srv.create_key()
    auth = "Basic " + b64encode(f"{key}:".encode()).decode()
    v1 = {f"f{i:02d}.bin": os.urandom(rng.randint(50_000, 300_000)) for i in range(50)}
    v2 = {f"f{i:02d}.bin": os.urandom(rng.randint(200_000, 2_000_000)) for i in range(50)}
    v2.update({f"n{i:02d}.bin": os.urandom(rng.randint(200_000, 2_000_000)) for i in range(50)})
    jobs = [Upload(name, body, slow=(i % 4 == 0)) for i, (name, body) in enumerate(v2.items())]
    rng.shuffle(jobs)
    run = Run()
    threads: list[threading.Thread] = []
    try:
        srv.start()
        with requests.Session() as s:
            s.auth = (key, "")
            for name, body in v1.items():
                assert s.put(f"{srv.url}/{name}", data=body, timeout=TIMEOUT).status_code == 201

        per_thread = [jobs[i::THREADS] for i in range(THREADS)]
        threads = [threading.Thread(target=_worker, args=(srv.port, auth, part, run), daemon=True) for part in per_thread]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 15
        while run.acked < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        in_flight = [j.name for j in jobs if j.in_flight]
        run.kill_at = time.monotonic()
        srv.kill()
        for t in threads:
            t.join(timeout=TIMEOUT + 5)
        assert not any(t.is_alive() for t in threads), "a client thread hung after the kill"

        acked = {j.name for j in jobs if j.status is not None and 200 <= j.status < 300}
        refused = {j.name: j.status for j in jobs if j.status is not None and not 200 <= j.status < 300}
        assert not refused, f"PUTs refused before the kill: {refused}"
        assert in_flight, "no PUT was in flight when the server was killed: the test proved nothing"
        assert len(acked) < len(jobs), "every PUT finished before the kill: the test proved nothing"
        print(f"acknowledged before the kill: {len(acked)}; in flight at the kill: {len(in_flight)}")

        srv.start()
        staging = srv.data_dir / "staging"
        assert sorted(os.listdir(staging)) == [], "staging/ not swept after the restart"

        problems: list[str] = []
        with requests.Session() as s:
            s.auth = (key, "")
            listing = _listing(s, srv.url)
            stray = set(listing) - set(v2)
            if stray:
                problems.append(f"listed names that were never uploaded: {sorted(stray)}")
            on_disk = set(os.listdir(srv.data_dir / "collections" / key_id))
            if on_disk - set(v2):
                problems.append(f"stray files in the collection: {sorted(on_disk - set(v2))}")
            litter = [str(p.relative_to(srv.data_dir)) for top in ("collections", "meta")
                      for p in (srv.data_dir / top).rglob("*") if p.name.endswith((".tmp", ".part"))]
            if litter:
                problems.append(f"temporary files left after the restart: {litter[:10]}")
            new_seen = 0
            for name in sorted(v2):
                r = s.get(f"{srv.url}/{name}", timeout=TIMEOUT)
                old = v1.get(name)
                if r.status_code == 404:
                    if old is not None:
                        problems.append(f"{name}: lost (had v1)")
                    elif name in acked:
                        problems.append(f"{name}: acknowledged new file missing")
                    if name in listing:
                        problems.append(f"{name}: listed but GET 404")
                    continue
                if r.status_code != 200:
                    problems.append(f"{name}: GET {r.status_code}")
                    continue
                body = r.content
                if body == v2[name]:
                    new_seen += 1
                elif body != old:
                    problems.append(f"{name}: torn or foreign content ({len(body)} bytes; v1 {len(old or b'')}, "
                                    f"v2 {len(v2[name])})")
                    continue
                if name in acked and body != v2[name]:
                    problems.append(f"{name}: acknowledged PUT lost (still v1)")
                sha1 = hashlib.sha1(body).hexdigest()
                if r.headers.get("ETag", "").strip('"') != sha1:
                    problems.append(f"{name}: GET ETag {r.headers.get('ETag')} != sha1 {sha1}")
                if name not in listing:
                    problems.append(f"{name}: GET 200 but not listed")
                elif listing[name] != (len(body), sha1):
                    problems.append(f"{name}: PROPFIND says {listing[name]}, GET has ({len(body)}, {sha1})")
            print(f"new versions present after restart: {new_seen}")
        assert not problems, "\n".join(problems) + f"\n--- server log (tail) ---\n{srv.log()[-3000:]}"
        assert sorted(os.listdir(staging)) == []
    finally:
        run.kill_at = run.kill_at or time.monotonic()
        srv.stop()
        for t in threads:
            t.join(timeout=1)


def test_a_staged_file_is_swept_while_serving_once_its_writer_dies(make_server: ServerFactory) -> None:
    """A partial upload whose lock is released only after the start-up sweep (a dead node's lock on
    a shared file system) is swept by the running server, not kept until the next restart; while
    its writer lives, no sweep touches it."""
    srv = make_server(staging_sweep_interval=0.3)
    staged = srv.data_dir / "staging" / "0123456789abcdef0123456789abcdef.part"
    with flock_held_elsewhere(staged, "partial upload"):
        time.sleep(1.5)  # several sweeps
        assert staged.exists(), "a sweep removed the file of a live writer"
    deadline = time.monotonic() + 10
    while staged.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not staged.exists(), f"staging/ still holds {staged.name} after its writer died\n{srv.log()[-2000:]}"


def test_sigusr1_writes_every_threads_stack_to_the_log_and_the_server_serves_on(make_server: ServerFactory) -> None:
    """An operator seeing a hung request asks each process where it waits, without stopping it."""
    srv = make_server()
    pids = srv.processes()
    assert len(pids) >= 2, f"expected a parent and serving processes, found {pids}"
    for pid in pids:
        before = len(srv.log())
        os.kill(pid, signal.SIGUSR1)
        deadline = time.monotonic() + 5
        while "(most recent call first)" not in srv.log()[before:] and time.monotonic() < deadline:
            time.sleep(0.05)
        dump = srv.log()[before:]
        assert "(most recent call first)" in dump, f"process {pid} wrote no stacks"
        if pid != pids[0]:  # a serving process: its request threads and its engine loop
            assert "in _work" in dump and "in serve_forever" in dump, dump[-3000:]
    assert srv.processes() == pids, "a process ended on SIGUSR1"
    assert requests.request("OPTIONS", srv.url + "/", timeout=10).status_code in (200, 401)
