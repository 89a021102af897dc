"""A server leaves no named semaphore in /dev/shm, however it ends.

The codec pools' queues are multiprocessing semaphores, named
/dev/shm/sem.mp-* while their worker processes open them. Before the
fix, the names lived as long as the pools and only multiprocessing's
resource tracker (a child of the serving process, in the same process
group) removed them after a crash: a SIGKILL to the whole group (a test
harness, `kill -9 -PGID`, a process manager's last resort) took the
tracker down too and left five names per pool, for good.

Other programs on the machine create and leak such names at the same
time, so the test does not count /dev/shm: it collects the names the
server's own processes have mapped (/proc/PID/maps) while it runs, and
checks that none of them is left once every process of the server is gone.
"""

from __future__ import annotations

import os
import re
import signal
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest
import requests

from bench.harness import proc
from hooks.pool import start_pool
from tests.server import ROOT, ServerFactory

CORPUS = ROOT / "tests" / "data" / "corpus"
#: Stored as Lepton (its GET runs in the rebuild pool) and as a re-deflated PNG (the compression pool).
IMAGES = {"photo.jpg": CORPUS / "photo_exif_icc_xmp.jpg", "gray16.png": CORPUS / "gray16.png"}
SEM_MAPPING = re.compile(r"/dev/shm/(sem\.mp-[A-Za-z0-9_]+)")


def mapped_semaphores(session: int) -> set[str]:
    """Names of the multiprocessing semaphores the processes of `session` have open (named or already unlinked)."""
    names: set[str] = set()
    for pid in proc.session_members(session):
        try:
            names.update(SEM_MAPPING.findall(Path(f"/proc/{pid}/maps").read_text()))
        except OSError:  # ended meanwhile
            pass
    return names


def wait_until_gone(session: int, seconds: float) -> set[int]:
    deadline = time.monotonic() + seconds
    while (left := proc.session_members(session)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["clean-stop", "group-sigkill"])
def test_no_semaphore_outlives_the_server(make_server: ServerFactory, sig: signal.Signals) -> None:
    srv = make_server(start=False, auth_failure_limit=0)
    _key_id, key = srv.create_key("--compression", "exact")
    srv.start()
    with requests.Session() as s:
        s.auth = (key, "")
        for name, path in IMAGES.items():
            assert s.put(f"{srv.url}/{name}", data=path.read_bytes(), timeout=30).status_code == 201
        for name, path in IMAGES.items():
            got = s.get(f"{srv.url}/{name}", timeout=30)
            assert got.status_code == 200 and got.content == path.read_bytes()
    session = srv.proc.pid  # started in its own session
    names = mapped_semaphores(session)
    assert len(names) >= 10, f"both codec pools should have run (5 semaphores each): {sorted(names)}"

    srv.stop(sig)  # to the whole process group, resource tracker included
    assert not wait_until_gone(session, 15), "the server's processes did not end"
    left = sorted(name for name in names if (Path("/dev/shm") / name).exists())
    assert not left, f"{len(left)} of the server's {len(names)} semaphores left in /dev/shm: {left}"


def _pid_after(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def test_a_started_pool_has_every_worker_up_and_no_semaphore_name() -> None:
    pool = start_pool(2, timeout=30)
    try:
        pids = {f.result(timeout=30) for f in [pool.submit(_pid_after, 0.5) for _ in range(4)]}
        assert len(pids) == 2, f"both workers should serve: {pids}"
        names = set()  # a worker opens them by name (their creator through a temporary one)
        for pid in pids:
            names.update(SEM_MAPPING.findall(Path(f"/proc/{pid}/maps").read_text()))
        assert len(names) == 5, f"a pool's queues hold five semaphores: {sorted(names)}"
        assert not [n for n in names if (Path("/dev/shm") / n).exists()], "names left in /dev/shm while the pool runs"
        for pid in pids:  # dead workers break the pool, as before (none is started in their place)
            os.kill(pid, signal.SIGKILL)
        with pytest.raises(BrokenProcessPool):
            pool.submit(_pid_after, 0).result(timeout=30)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
