"""A killed parent takes its serving processes (and their codec processes) with it.

The server runs with the default number of serving processes. Its parent is
killed with SIGKILL while 100 uploads are in flight from eight clients;
within 2 s nothing may listen on the port and no process of the server may
be left running. After a restart on the same data directory: every upload
acknowledged with 201 is there, whole, with a valid record; nothing else is
in the collection but uploads that were being sent; staging/ is empty.
A serving process killed on its own takes its codec processes with it, and
SIGTERM still lets the serving processes finish what they were doing.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from base64 import b64encode
from collections.abc import Callable, Iterator
from pathlib import Path

import requests

from bench.harness import proc
from tests.client import Upload, send_upload
from tests.server import ROOT, RunningServer, write_config
from uss_dav.storage.records import read_record

CORPUS = ROOT / "tests" / "data" / "corpus"
#: JPEGs go through the codec processes (exact mode: a JPEG XL transcode, GET gives the upload back).
JPEGS = [(CORPUS / name).read_bytes() for name in ("photo_exif_icc_xmp.jpg", "progressive.jpg", "cmyk.jpg")]
THREADS = 8
TIMEOUT = 20.0
#: How long the server's processes may outlive their parent.
GRACE = 2.0


def _client(port: int, auth: str, jobs: list[Upload], killed: threading.Event) -> None:
    for job in jobs:
        if killed.is_set():
            return
        send_upload(port, auth, job, pause=0.1, timeout=TIMEOUT)


def server_processes(session: int) -> dict[int, str]:
    """pid -> command line of every live (not zombie) process in the server's session."""
    return {pid: proc.cmdline(pid) for pid in proc.session_members(session)}


def listens(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def codec_processes(procs: dict[int, str]) -> list[int]:
    return [pid for pid, cmd in procs.items() if "multiprocessing.forkserver" in cmd]


@contextlib.contextmanager
def launched(data: Path, config: Path) -> Iterator[RunningServer]:
    """A server started in its own session without waiting for it to serve (signals may come at any
    moment); whatever is left of it is killed when the block ends."""
    srv = RunningServer(data, config=config)
    srv.proc = subprocess.Popen(
        [sys.executable, str(ROOT / "run_server.py"), "--config", str(config), "--host", "127.0.0.1",
         "--port", str(srv.port), "--data-dir", str(data)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        yield srv
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(srv.proc.pid, signal.SIGKILL)
        srv.proc.wait(10)


def stop_when(srv: RunningServer, ready: Callable[[], bool], what: str) -> int | None:
    """SIGTERM to the server's session as soon as `ready()` (within 30 s); the parent's exit code."""
    assert srv.proc is not None
    deadline = time.monotonic() + 30
    while not ready():
        assert time.monotonic() < deadline and srv.proc.poll() is None, f"{what} never came"
        time.sleep(0.002)
    os.killpg(srv.proc.pid, signal.SIGTERM)
    return srv.proc.wait(10)


def wait_until_gone(session: int, port: int, deadline: float) -> tuple[dict[int, str], bool]:
    """(processes still running, whether the port still listens) once both are gone or at the deadline."""
    while True:
        left, listening = server_processes(session), listens(port)
        if (not left and not listening) or time.monotonic() > deadline:
            return left, listening
        time.sleep(0.05)


def _exact_server(tmp_path: Path) -> tuple[RunningServer, str, str]:
    srv = RunningServer(tmp_path / "data", config=write_config(tmp_path / "config.yaml", auth_failure_limit=0))
    key_id, key = srv.create_key("--compression", "exact")
    return srv, key_id, key


def test_sigkill_of_the_parent_ends_every_server_process_and_loses_nothing(tmp_path: Path) -> None:
    rng = random.Random(21)
    srv, key_id, key = _exact_server(tmp_path)
    auth = "Basic " + b64encode(f"{key}:".encode()).decode()
    jobs = []
    for i in range(100):
        body = JPEGS[i % 3] if i % 8 == 0 else os.urandom(rng.randint(100_000, 1_500_000))
        jobs.append(Upload(f"u{i:03d}.{'jpg' if i % 8 == 0 else 'bin'}", body, slow=(i % 4 == 1)))
    killed = threading.Event()
    threads: list[threading.Thread] = []
    try:
        srv.start()
        session = srv.proc.pid  # start_new_session: the server's session id is its parent's pid
        with requests.Session() as s:  # start the codec processes before the storm
            s.auth = (key, "")
            for i in range(6):
                assert s.put(f"{srv.url}/warm{i}.jpg", data=JPEGS[i % 3], timeout=TIMEOUT).status_code == 201
        threads = [threading.Thread(target=_client, args=(srv.port, auth, jobs[i::THREADS], killed), daemon=True)
                   for i in range(THREADS)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while sum(j.status == 201 for j in jobs) < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        before = server_processes(session)
        in_flight = [j.name for j in jobs if j.in_flight]

        os.kill(srv.proc.pid, signal.SIGKILL)  # the parent only, as a process manager would see it die
        killed.set()
        t0 = time.monotonic()
        left, listening = wait_until_gone(session, srv.port, t0 + GRACE)
        took = time.monotonic() - t0
        srv.proc.wait(timeout=5)
        for t in threads:
            t.join(timeout=TIMEOUT + 5)
        assert not any(t.is_alive() for t in threads), "a client hung after the kill"

        assert codec_processes(before), f"no codec process ran at the kill: the test proved nothing\n{before}"
        assert len(before) > 4, f"fewer processes than 2 serving processes with codecs: {before}"
        assert in_flight, "no upload was in flight at the kill: the test proved nothing"
        assert not listening, f"the port still listens {GRACE} s after the parent was killed"
        assert not left, f"still running {GRACE} s after the parent was killed: {left}"
        print(f"all {len(before)} server processes gone {took:.2f} s after the kill; in flight: {len(in_flight)}")

        acked = {j.name: j.body for j in jobs if j.status == 201}
        refused = {j.name: j.status for j in jobs if j.status is not None and j.status != 201}
        assert not refused, f"uploads refused before the kill: {refused}"
        assert len(acked) < len(jobs), "every upload finished before the kill: the test proved nothing"
        sent = {j.name: j.body for j in jobs if j.started}

        srv.start()
        assert os.listdir(srv.data_dir / "staging") == [], "staging/ not swept after the restart"
        problems = []
        collection = srv.data_dir / "collections" / key_id
        warm = {f"warm{i}.jpg" for i in range(6)}
        stray = set(os.listdir(collection)) - set(sent) - warm
        if stray:
            problems.append(f"names never sent: {sorted(stray)}")
        with requests.Session() as s:
            s.auth = (key, "")
            for name, body in sent.items():
                r = s.get(f"{srv.url}/{name}", timeout=TIMEOUT)
                if r.status_code == 404 and name not in acked:
                    continue  # was being sent: absent is right
                if r.status_code != 200:
                    problems.append(f"{name}: GET {r.status_code}" + (" (acknowledged: lost)" if name in acked else ""))
                    continue
                if r.content != body:
                    problems.append(f"{name}: torn ({len(r.content)} bytes of {len(body)})")
                    continue
                sha1 = hashlib.sha1(body).hexdigest()
                record = read_record(str(collection / name))
                stored = (collection / name).stat().st_size
                if record is None or (record["sha1"], record["size"], record["stored32"]) != (sha1, len(body), stored):
                    problems.append(f"{name}: record {record} does not describe the file")
                if r.headers.get("ETag", "").strip('"') != sha1:
                    problems.append(f"{name}: ETag {r.headers.get('ETag')} is not the SHA-1 {sha1}")
        print(f"acknowledged: {len(acked)}, sent: {len(sent)}, present after restart: "
              f"{len(set(os.listdir(collection)) - warm)}")
        assert not problems, "\n".join(problems) + f"\n--- server log ---\n{srv.log()[-3000:]}"
    finally:
        killed.set()
        srv.stop()
        if srv.proc is not None:  # orphans of a failed run: the parent is gone, so stop() cannot reach them
            with contextlib.suppress(ProcessLookupError):
                os.killpg(srv.proc.pid, signal.SIGKILL)


def test_a_killed_serving_process_takes_its_codec_processes_with_it(tmp_path: Path) -> None:
    srv, _key_id, key = _exact_server(tmp_path)
    try:
        srv.start()
        with requests.Session() as s:
            s.auth = (key, "")
            for i in range(6):
                assert s.put(f"{srv.url}/p{i}.jpg", data=JPEGS[i % 3], timeout=TIMEOUT).status_code == 201
        serving = proc.children(srv.proc.pid)
        tree = {pid: proc.children(pid) for pid in serving}
        victim = max(serving, key=lambda pid: len(tree[pid]))
        codecs = [c for child in tree[victim] for c in [child, *proc.children(child)]]
        assert len(codecs) >= 3, f"no codec processes under serving process {victim}: {tree}"

        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + GRACE
        while (alive := [p for p in codecs if p in server_processes(srv.proc.pid)]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive, f"codec processes {alive} outlived their serving process {victim}"
        with requests.Session() as s:  # the parent replaced it: still serving, codecs included
            s.auth = (key, "")
            assert s.put(f"{srv.url}/after.jpg", data=JPEGS[0], timeout=TIMEOUT).status_code == 201
    finally:
        srv.stop()


def test_sigterm_to_the_parent_lets_an_upload_in_flight_finish(tmp_path: Path) -> None:
    srv, key_id, key = _exact_server(tmp_path)
    body = os.urandom(2_000_000)
    job = Upload("slow.bin", body, slow=True)  # eight pieces, 0.1 s apart
    try:
        srv.start()
        auth = "Basic " + b64encode(f"{key}:".encode()).decode()
        client = threading.Thread(target=send_upload, args=(srv.port, auth, job), kwargs={"pause": 0.1, "timeout": TIMEOUT})
        client.start()
        time.sleep(0.35)
        assert job.in_flight
        os.kill(srv.proc.pid, signal.SIGTERM)
        client.join(timeout=TIMEOUT)
        assert srv.proc.wait(timeout=15) == 0
        assert job.status == 201, "the serving process did not finish its upload before its parent ended"
        assert (srv.data_dir / "collections" / key_id / "slow.bin").read_bytes() == body
        assert not server_processes(srv.proc.pid), "the parent ended before its serving processes"
    finally:
        srv.stop()


def test_a_forkserver_whose_serving_process_died_while_it_started_ends_at_once() -> None:
    """The race the kill test found: a serving process killed while its forkserver was still starting.

    The forkserver then finds itself adopted (here: its parent is not the
    serving process the environment names) and must end, not watch its new
    parent, which may be pid 1 and never end.
    """
    env = {**os.environ, "USS_SERVING_PID": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", "import uss_dav.codec_watch; print('still here')"],
        env=env, capture_output=True, text=True, timeout=30, cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert "still here" not in done.stdout


def test_sigterm_while_serving_processes_start_stops_every_process_and_leaves_no_record(tmp_path: Path) -> None:
    """A process manager may stop the server a moment after starting it, while its serving
    processes are still starting: each must stop, not keep serving with the signal lost (the
    parent then waits for it until it is killed, and its node record stays behind)."""
    config = write_config(tmp_path / "config.yaml")
    for delay in (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.7):
        data = tmp_path / f"data-{delay}"
        with launched(data, config) as srv:
            assert srv.proc is not None
            time.sleep(delay)
            os.killpg(srv.proc.pid, signal.SIGTERM)
            try:
                code = srv.proc.wait(10)
            except subprocess.TimeoutExpired:
                code = None
            left, listening = wait_until_gone(srv.proc.pid, srv.port, time.monotonic() + GRACE)
            # -SIGTERM: the signal came before the parent set its handler (nothing was started yet).
            assert code in (0, -signal.SIGTERM), f"SIGTERM {delay} s after the start: parent still running or failed ({code})"
            assert not left and not listening, f"SIGTERM {delay} s after the start left {left} (listening: {listening})"
            assert list((data / "nodes").glob("*.json")) == [], f"SIGTERM {delay} s after the start left its record"


def test_sigterm_after_the_node_record_is_written_but_before_serving_leaves_no_record(tmp_path: Path) -> None:
    """The start's own window: the record is written first, then the store is opened and swept.

    Thousands of thumbnails of the old flat layout make the sweep at start
    long enough to signal inside it every time. The stop must end the start
    and remove the record, not kill the parent with the record left behind.
    """
    config = write_config(tmp_path / "config.yaml")
    data = tmp_path / "data"
    flat = data / "thumbs" / "cid0"
    flat.mkdir(parents=True)
    for i in range(30_000):
        (flat / f"{i:040x}-64.webp").touch()
    with launched(data, config) as srv:
        code = stop_when(srv, lambda: bool(list((data / "nodes").glob("*.json"))), "the node record")
        remaining = sum(1 for _ in flat.iterdir())
        assert remaining > 0, "the sweep had finished: the signal came too late to test the window"
        assert code == 0, f"the start was not stopped cleanly ({code})"
        assert list((data / "nodes").glob("*.json")) == [], "a stop during the start left the node record"


def test_sigterm_while_the_node_record_is_written_stops_the_start_cleanly(tmp_path: Path) -> None:
    """The window before the record exists: the start reads every record on the data directory.

    Thousands of records left by servers that no longer run make that read
    long enough to signal inside it every time. The codecs' numpy runs
    native threads that do not block signals, so a blocked signal would
    still run Python's handler there (and a KeyboardInterrupt would kill
    the parent, exit -2): the stop must wait until the record is written,
    then end the start and remove it.
    """
    config = write_config(tmp_path / "config.yaml")
    data = tmp_path / "data"
    nodes = data / "nodes"
    nodes.mkdir(parents=True)
    stale = 30_000
    for i in range(stale):
        (nodes / f"gone-{i}.json").write_text('{"host": "gone", "pid": 1, "lock_mode": "files", "started": 0}')
    with launched(data, config) as srv:
        # Ready once the start has begun removing the stale records.
        code = stop_when(srv, lambda: sum(1 for _ in nodes.iterdir()) <= stale - 100, "the reading of the stale records")
        assert code == 0, f"the start was not stopped cleanly ({code})"
        assert list(nodes.glob("*.json")) == [], "a stop during the start left a record"
