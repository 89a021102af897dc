"""Load benchmark: uss_dav against stock WsgiDAV (and optionally nginx and bare cheroot), same machine, same run.

    .venv/bin/python bench/load.py [--quick] [--scenarios put4k,get64m,...] [--clients 1,8] [--nginx] [--bare]

Each server runs as its own subprocess on 127.0.0.1 with its own data
directory under one temporary directory; this process is the load generator
(one thread and one persistent http.client connection per client). Every
scenario runs against every server, one server at a time, at each client
count; the table compares throughput. See bench/README.md.
"""

from __future__ import annotations

import argparse
import base64
import glob
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable

KIB = 1024
MIB = 1024 * KIB
SMALL = 4 * KIB
BIG = 64 * MIB

# Bodies generated once; random bytes so that no server treats them as images.
_rng = random.Random(20240601)
SMALL_BODY = _rng.randbytes(SMALL)
TINY_BODY = _rng.randbytes(64)
BIG_BODY: bytes = b""  # made on first use (64 MiB)


def big_body() -> bytes:
    global BIG_BODY
    if not BIG_BODY:
        BIG_BODY = os.urandom(BIG)
    return BIG_BODY


PROPFIND_BODY = (
    b'<?xml version="1.0" encoding="utf-8"?>'
    b'<D:propfind xmlns:D="DAV:"><D:prop>'
    b"<D:resourcetype/><D:getcontentlength/><D:getlastmodified/><D:getetag/><D:getcontenttype/>"
    b"</D:prop></D:propfind>"
)
RESPONSE_RE = re.compile(rb"<(?:[A-Za-z0-9_.-]+:)?response[\s>]")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# --------------------------------------------------------------------------
# /proc: a server's process tree and its memory (also used by compress.py, upload_memory.py)
# --------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    out: list[int] = []
    for path in glob.glob(f"/proc/{pid}/task/*/children"):
        try:
            out += [int(p) for p in Path(path).read_text().split()]
        except (OSError, ValueError):
            pass
    return out


def process_tree(root: int) -> list[tuple[int, int]]:
    """(pid, parent pid) of `root` and every process below it."""
    tree, todo = [(root, 0)], [root]
    while todo:
        parent = todo.pop()
        for child in children(parent):
            tree.append((child, parent))
            todo.append(child)
    return tree


def status_kib(pid: int) -> dict[str, int]:
    values: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                values[key] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return values


# --------------------------------------------------------------------------
# Servers under test
# --------------------------------------------------------------------------


class ServerUnderTest:
    """A WebDAV server in a subprocess: start(), stop(), host/port, auth header.

    Subclasses set `name` and implement prepare() (data directory, credentials)
    and command(); the base class starts the process in its own session,
    waits until it answers, and stops the whole process group.
    """

    name = "?"
    host = "127.0.0.1"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir / self.name
        self.port = free_port()
        self.auth = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / "server.log"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # to implement
    def prepare(self) -> None:
        raise NotImplementedError

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONUNBUFFERED": "1"}

    def handles(self, scenario: Scenario) -> bool:
        """Whether this server takes part in `scenario` (all of them, unless a subclass says not)."""
        return True

    # common
    def start(self, timeout: float = 30.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.prepare()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(), cwd=ROOT, env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start:\n{self.log_tail()}")
            try:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=2)
                conn.request("OPTIONS", "/", headers={"Authorization": self.auth})
                status = conn.getresponse().status
                conn.close()
                if status >= 500:
                    raise RuntimeError(f"{self.name}: OPTIONS / answered {status}")
                return
            except (TimeoutError, ConnectionError, http.client.HTTPException):
                time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def cpu_seconds(self) -> float:
        """User + system CPU time so far of the server and every process below it
        (uss_dav's workers and optimizer pools, nginx's workers), from Linux /proc; else 0."""
        if not self.alive():
            return 0.0
        assert self.proc is not None
        ticks = 0
        for pid, _parent in process_tree(self.proc.pid):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
                ticks += int(fields[11]) + int(fields[12])
            except (OSError, ValueError, IndexError):
                continue  # ended meanwhile
        return ticks / os.sysconf("SC_CLK_TCK")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


class StockWsgiDAV(ServerUnderTest):
    name = "stock"

    def prepare(self) -> None:
        self.root = self.workdir / "root"
        self.root.mkdir(parents=True, exist_ok=True)
        self.user, self.password = "bench", "bench-password"
        self.auth = basic(self.user, self.password)

    def command(self) -> list[str]:
        return [PYTHON, str(BENCH / "stock_server.py"), "--root", str(self.root), "--host", self.host,
                "--port", str(self.port), "--user", self.user, "--password", self.password, "--threads", "16"]


class UssDav(ServerUnderTest):
    name = "uss_dav"

    def prepare(self) -> None:
        self.data = self.workdir / "data"
        out = subprocess.run(
            [PYTHON, "-m", "uss_dav", "--data-dir", str(self.data), "keys", "create", "--label", "bench"],
            cwd=ROOT, env=self.env(), capture_output=True, text=True, timeout=60, check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(f"uss_dav keys create failed: {out.stderr}")
        match = re.search(r"^key: (\S+)$", out.stdout, re.MULTILINE)
        if not match:
            raise RuntimeError(f"no key in output of keys create: {out.stdout!r}")
        self.auth = basic(match.group(1), "")

    def env(self) -> dict[str, str]:
        return {**super().env(), "USS_LOG_LEVEL": "warning"}

    def command(self) -> list[str]:
        return [PYTHON, str(ROOT / "run_server.py"), "--data-dir", str(self.data),
                "--host", self.host, "--port", str(self.port)]


class Bare(ServerUnderTest):
    """cheroot with a trivial app: OPTIONS, MKCOL, GET, durable PUT (bench/bare_server.py). Optional (--bare)."""

    name = "bare"

    def prepare(self) -> None:
        self.root = self.workdir / "root"
        self.root.mkdir(parents=True, exist_ok=True)
        self.auth = basic("bench", "bench-password")

    def handles(self, scenario: Scenario) -> bool:
        return isinstance(scenario, (Put4k, Put64m, Get4k, Get64m))

    def command(self) -> list[str]:
        return [PYTHON, str(BENCH / "bare_server.py"), "--root", str(self.root), "--host", self.host,
                "--port", str(self.port), "--auth", self.auth, "--threads", "16"]


NGINX_MODULE_DIRS = ("/usr/lib/nginx/modules", "/usr/share/nginx/modules", "/usr/lib64/nginx/modules")


class Nginx(ServerUnderTest):
    """nginx with ngx_http_dav_module + dav-ext (PROPFIND). Optional (--nginx)."""

    name = "nginx"

    @staticmethod
    def module_path() -> str | None:
        for d in NGINX_MODULE_DIRS:
            p = Path(d) / "ngx_http_dav_ext_module.so"
            if p.exists():
                return str(p)
        return None

    @classmethod
    def available(cls) -> str | None:
        """None when usable, else why not."""
        exe = shutil.which("nginx")
        if not exe:
            return "nginx is not installed"
        out = subprocess.run([exe, "-V"], capture_output=True, text=True, check=False)
        if "dav-ext" not in out.stderr and cls.module_path() is None:
            return "nginx has no dav-ext module (PROPFIND)"
        return None

    def prepare(self) -> None:
        self.root = self.workdir / "root"
        self.root.mkdir(parents=True, exist_ok=True)
        (self.workdir / "tmp").mkdir(exist_ok=True)
        user, password = "bench", "bench-password"
        self.auth = basic(user, password)
        (self.workdir / "htpasswd").write_text(f"{user}:{{PLAIN}}{password}\n")
        module = self.module_path()
        w = self.workdir
        conf = f"""
{f"load_module {module};" if module else ""}
daemon off;
{"user root;" if os.geteuid() == 0 else ""}
worker_processes 2;
pid {w}/nginx.pid;
error_log {w}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {w}/tmp;
    proxy_temp_path {w}/tmp; fastcgi_temp_path {w}/tmp; uwsgi_temp_path {w}/tmp; scgi_temp_path {w}/tmp;
    client_max_body_size 0;
    sendfile on;
    server {{
        listen {self.host}:{self.port};
        root {self.root};
        auth_basic "bench";
        auth_basic_user_file {w}/htpasswd;
        location / {{
            dav_methods PUT DELETE MKCOL COPY MOVE;
            dav_ext_methods PROPFIND OPTIONS;
            create_full_put_path on;
            dav_access user:rw;
        }}
    }}
}}
"""
        (w / "nginx.conf").write_text(conf)

    def command(self) -> list[str]:
        return [shutil.which("nginx") or "nginx", "-p", str(self.workdir), "-c", str(self.workdir / "nginx.conf")]


# --------------------------------------------------------------------------
# Client side
# --------------------------------------------------------------------------


@dataclass
class Result:
    status: int  # -1: exception
    nbytes: int = 0
    body: bytes = b""


class Conn:
    """One persistent HTTP/1.1 connection (http.client reopens it if the server closed it)."""

    def __init__(self, server: ServerUnderTest, timeout: float) -> None:
        self.server = server
        self.conn = http.client.HTTPConnection(server.host, server.port, timeout=timeout)
        self.buf = bytearray(MIB)
        self.last = ""  # the last request and its status, for the slow-request report

    def call(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
             keep_body: bool = True) -> Result:
        hdrs = {"Authorization": self.server.auth}
        if body is not None:
            hdrs["Content-Length"] = str(len(body))
        if headers:
            hdrs.update(headers)
        self.last = f"{method} {path}"
        try:
            self.conn.request(method, path, body=body, headers=hdrs)
            resp = self.conn.getresponse()
            self.last += f" -> {resp.status}"
            if keep_body or resp.status >= 300:
                data = resp.read()
                return Result(resp.status, len(data), data)
            view, n = memoryview(self.buf), 0
            while True:
                got = resp.readinto(view)
                if not got:
                    break
                n += got
            return Result(resp.status, n)
        except (OSError, http.client.HTTPException) as exc:
            self.conn.close()
            self.last += f" -> {type(exc).__name__}"
            return Result(-1, 0, f"{type(exc).__name__}: {exc}".encode())

    def close(self) -> None:
        self.conn.close()


# --------------------------------------------------------------------------
# Scenarios
# --------------------------------------------------------------------------

OK = "ok"
MISS = "miss"  # an expected 404 in the mixed load (another client deleted or moved the name)
ERR = "error"


@dataclass
class Outcome:
    kind: str
    nbytes: int = 0
    detail: str = ""


def expect(res: Result, method: str, path: str, statuses: tuple[int, ...], *, length: int | None = None,
           miss_ok: bool = False) -> Outcome:
    if res.status in statuses:
        if length is not None and res.nbytes != length:
            return Outcome(ERR, res.nbytes, f"{method} {path} -> {res.status} with {res.nbytes} bytes, expected {length}")
        return Outcome(OK, res.nbytes)
    if miss_ok and res.status == 404:
        return Outcome(MISS)
    return Outcome(ERR, 0, f"{method} {path} -> {res.status} {body_text(res.body)}")


def body_text(body: bytes, limit: int = 400) -> str:
    """An error body on one line: the text of an HTML page without its head, else the bytes."""
    text = body.decode("utf-8", "replace")
    if "<html" in text.lower():
        text = re.sub(r"(?is)<head>.*?</head>", " ", text)
        text = re.sub(r"(?s)<[^>]*>", " ", text)
    text = " ".join(text.split())
    return text[:limit] + ("..." if len(text) > limit else "")


PUT_OK = (200, 201, 204)


class Scenario:
    """One kind of load. prepare() runs before every run (untimed); op() is one timed request."""

    name = "?"
    unit = "ops/s"  # or "MB/s"
    by_count = False  # True: each client does a fixed number of ops instead of running for a time

    def prepare(self, server: ServerUnderTest, conn: Conn, clients: int, state: dict) -> None:
        pass

    def op(self, conn: Conn, client: int, seq: int, rng: random.Random) -> Outcome:
        raise NotImplementedError


def mkcol(conn: Conn, path: str) -> None:
    res = conn.call("MKCOL", path)
    if res.status not in (201, 405):  # 405: already there
        raise RuntimeError(f"setup: MKCOL {path} -> {res.status} {res.body[:300]!r}")


def seed(server: ServerUnderTest, paths: list[str], body: bytes, threads: int = 4) -> None:
    """PUT `body` to every path, a few connections in parallel (untimed set-up)."""
    errors: list[str] = []

    def work(part: list[str]) -> None:
        conn = Conn(server, timeout=120)
        try:
            for p in part:
                res = conn.call("PUT", p, body)
                if res.status not in PUT_OK:
                    errors.append(f"PUT {p} -> {res.status} {res.body[:300]!r}")
                    return
        finally:
            conn.close()

    ts = [threading.Thread(target=work, args=(paths[i::threads],), daemon=True) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise RuntimeError("setup failed: " + "; ".join(errors[:3]))


class Put4k(Scenario):
    name = "PUT 4 KiB"

    def prepare(self, server, conn, clients, state):
        mkcol(conn, "/put4k/")

    def op(self, conn, client, seq, rng):
        path = f"/put4k/c{client}-{seq % 100:03d}.bin"  # new names first, then overwrites
        return expect(conn.call("PUT", path, SMALL_BODY), "PUT", path, PUT_OK)


class Put64m(Scenario):
    name = "PUT 64 MiB"
    unit = "MB/s"
    by_count = True

    def prepare(self, server, conn, clients, state):
        big_body()
        mkcol(conn, "/put64m/")

    def op(self, conn, client, seq, rng):
        path = f"/put64m/c{client}.bin"
        out = expect(conn.call("PUT", path, BIG_BODY), "PUT", path, PUT_OK)
        out.nbytes = BIG if out.kind == OK else 0
        return out


class Get4k(Scenario):
    name = "GET 4 KiB"
    files = 100

    def prepare(self, server, conn, clients, state):
        if not state.get("get4k"):
            mkcol(conn, "/get4k/")
            seed(server, [f"/get4k/f{i:03d}.bin" for i in range(self.files)], SMALL_BODY)
            state["get4k"] = True

    def op(self, conn, client, seq, rng):
        path = f"/get4k/f{rng.randrange(self.files):03d}.bin"
        res = conn.call("GET", path)
        out = expect(res, "GET", path, (200,), length=SMALL)
        if out.kind == OK and res.body != SMALL_BODY:
            return Outcome(ERR, 0, f"GET {path} -> 200 but the body differs from what was PUT")
        return out


class Get64m(Scenario):
    name = "GET 64 MiB"
    unit = "MB/s"
    by_count = True

    def prepare(self, server, conn, clients, state):
        if not state.get("get64m"):
            mkcol(conn, "/get64m/")
            res = conn.call("PUT", "/get64m/big.bin", big_body())
            if res.status not in PUT_OK:
                raise RuntimeError(f"setup: PUT /get64m/big.bin -> {res.status} {res.body[:300]!r}")
            state["get64m"] = True

    def op(self, conn, client, seq, rng):
        path = "/get64m/big.bin"
        return expect(conn.call("GET", path, keep_body=False), "GET", path, (200,), length=BIG)


class Propfind1000(Scenario):
    name = "PROPFIND d1 1000"
    members = 1000

    def prepare(self, server, conn, clients, state):
        if not state.get("pf1000"):
            mkcol(conn, "/pf1000/")
            seed(server, [f"/pf1000/f{i:04d}.bin" for i in range(self.members)], TINY_BODY)
            state["pf1000"] = True

    def op(self, conn, client, seq, rng):
        path = "/pf1000/"
        res = conn.call("PROPFIND", path, PROPFIND_BODY,
                        {"Depth": "1", "Content-Type": 'application/xml; charset="utf-8"'})
        out = expect(res, "PROPFIND", path, (207,))
        if out.kind == OK:
            n = len(RESPONSE_RE.findall(res.body))
            if n != self.members + 1:
                return Outcome(ERR, 0, f"PROPFIND {path} -> 207 with {n} responses, expected {self.members + 1}")
        return out


class Mixed(Scenario):
    """40% GET 4 KiB, 20% PUT 4 KiB, 20% PROPFIND d1 (the folder), 10% DELETE, 10% MOVE.

    All clients work on the same 100 names in /mix/, re-seeded before each run,
    so they race: a 404 for GET/DELETE/MOVE of a name another client removed
    is expected and counted as a miss, not an error.
    """

    name = "mixed"
    names = 100

    def prepare(self, server, conn, clients, state):
        mkcol(conn, "/mix/")
        seed(server, [self.path(i) for i in range(self.names)], SMALL_BODY)

    def path(self, i: int) -> str:
        return f"/mix/f{i:03d}.bin"

    def op(self, conn, client, seq, rng):
        r = rng.random()
        i = rng.randrange(self.names)
        path = self.path(i)
        if r < 0.40:
            res = conn.call("GET", path)
            return expect(res, "GET", path, (200,), length=SMALL, miss_ok=True)
        if r < 0.60:
            return expect(conn.call("PUT", path, SMALL_BODY), "PUT", path, PUT_OK)
        if r < 0.80:
            res = conn.call("PROPFIND", "/mix/", PROPFIND_BODY,
                            {"Depth": "1", "Content-Type": 'application/xml; charset="utf-8"'})
            return expect(res, "PROPFIND", "/mix/", (207,))
        if r < 0.90:
            return expect(conn.call("DELETE", path), "DELETE", path, (200, 204), miss_ok=True)
        j = (i + 1 + rng.randrange(self.names - 1)) % self.names
        dest = self.path(j)
        res = conn.call("MOVE", path, None, {"Destination": conn.server.url + dest, "Overwrite": "T"})
        return expect(res, "MOVE", f"{path} -> {dest}", (201, 204), miss_ok=True)


SCENARIOS: dict[str, type[Scenario]] = {
    "put4k": Put4k,
    "put64m": Put64m,
    "get4k": Get4k,
    "get64m": Get64m,
    "propfind": Propfind1000,
    "mixed": Mixed,
}


# --------------------------------------------------------------------------
# Runner
# --------------------------------------------------------------------------


@dataclass
class Settings:
    duration: float = 5.0  # measured seconds, timed scenarios
    warmup: float = 1.0  # warm-up seconds, timed scenarios
    warmup_ops: int = 200  # at most this many warm-up ops per client
    max_ops: int = 100_000  # per client, timed scenarios
    big_ops: dict[int, int] = field(default_factory=lambda: {1: 8})  # per-client count by client number
    big_default_ops: int = 4
    big_warmup_ops: int = 1
    big_time_cap: float = 60.0  # seconds, measured phase of a count-bound run
    request_timeout: float = 120.0  # seconds without a byte before a client gives up (64 MiB runs)
    small_timeout: float = 15.0  # the same for the timed scenarios

    def count_for(self, clients: int) -> int:
        return self.big_ops.get(clients, self.big_default_ops)


@dataclass
class RunResult:
    server: str
    scenario: str
    clients: int
    unit: str
    ops: int = 0
    misses: int = 0
    errors: int = 0
    nbytes: int = 0
    elapsed: float = 0.0  # count-bound runs: start to the last client's end
    window: float = 0.0  # timed runs: the measured window (the duration)
    credit: float = 0.0  # timed runs: completed ops, pro rata for those straddling the window's end
    latencies: list[float] = field(default_factory=list)
    error_samples: list[str] = field(default_factory=list)  # one example per kind of error
    error_kinds: dict[str, int] = field(default_factory=dict)
    aborted: str = ""
    warmup_errors: list[str] = field(default_factory=list)
    slowest: tuple[float, str] = (0.0, "")
    client_cpu: float = 0.0  # CPU seconds of this (load generator) process during the measured phase
    server_cpu: float = 0.0  # CPU seconds of the server's processes during the measured phase

    @property
    def rate(self) -> float:
        if self.window > 0:
            return self.credit / self.window
        if self.elapsed <= 0:
            return 0.0
        if self.unit == "MB/s":
            return self.nbytes / 1e6 / self.elapsed
        return (self.ops + self.misses) / self.elapsed

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        s = sorted(self.latencies)
        return s[min(len(s) - 1, int(q * len(s)))] * 1000


STOP = threading.Event()  # set on Ctrl-C: every client loop ends at its next request


def run_one(server: ServerUnderTest, scenario: Scenario, clients: int, settings: Settings, state: dict) -> RunResult:
    result = RunResult(server.name, scenario.name, clients, scenario.unit)
    setup = Conn(server, settings.request_timeout)
    try:
        scenario.prepare(server, setup, clients, state)
    finally:
        setup.close()
    os.sync()  # no write-back of the previous run's data during this one

    if scenario.by_count:
        warm_n, warm_t = settings.big_warmup_ops, settings.big_time_cap
        meas_n, meas_t = settings.count_for(clients), settings.big_time_cap
        timeout = settings.request_timeout
    else:
        warm_n, warm_t = settings.warmup_ops, settings.warmup
        meas_n, meas_t = settings.max_ops, settings.duration
        timeout = settings.small_timeout

    barrier = threading.Barrier(clients + 1)
    halt = threading.Event()  # this run only: set when it overruns its hard limit
    start: dict[str, float] = {}
    lock = threading.Lock()
    ends: list[float] = []

    def client(idx: int) -> None:
        rng = random.Random(1000 + idx)  # same op sequence for every server
        conn = Conn(server, timeout)
        seq = 0
        try:
            t_end = time.monotonic() + warm_t
            for _ in range(warm_n):
                if STOP.is_set() or halt.is_set() or time.monotonic() >= t_end:
                    break
                out = scenario.op(conn, idx, seq, rng)
                seq += 1
                if out.kind == ERR:
                    with lock:
                        result.warmup_errors.append(out.detail)
            barrier.wait()
            barrier.wait()  # the main thread has set start["t"]
            t_end = start["t"] + meas_t
            lat: list[float] = []
            ok = miss = err = nbytes = 0
            kinds: dict[str, int] = {}
            samples: dict[str, str] = {}
            slowest = (0.0, "")
            credit = 0.0
            for _ in range(meas_n):
                if STOP.is_set() or halt.is_set():
                    break
                t0 = time.monotonic()
                if t0 >= t_end:
                    break
                out = scenario.op(conn, idx, seq, rng)
                t1 = time.monotonic()
                took = t1 - t0
                lat.append(took)
                if took > slowest[0]:
                    slowest = (took, conn.last)
                seq += 1
                if out.kind in (OK, MISS):
                    # the share of this op that fell inside the window (a stalled op adds ~0)
                    credit += (min(t1, t_end) - t0) / took if took > 0 else 1.0
                if out.kind == OK:
                    ok += 1
                    nbytes += out.nbytes
                elif out.kind == MISS:
                    miss += 1
                else:
                    err += 1
                    kind = error_kind(out.detail)
                    kinds[kind] = kinds.get(kind, 0) + 1
                    samples.setdefault(kind, out.detail)
            with lock:
                ends.append(time.monotonic())
                result.ops += ok
                result.misses += miss
                result.errors += err
                result.nbytes += nbytes
                result.credit += credit
                result.latencies.extend(lat)
                for kind, n in kinds.items():
                    if kind not in result.error_kinds:
                        result.error_samples.append(samples[kind])
                    result.error_kinds[kind] = result.error_kinds.get(kind, 0) + n
                result.slowest = max(result.slowest, slowest)
        except threading.BrokenBarrierError:
            pass
        except Exception as exc:  # noqa: BLE001 -- a bug in a scenario: end the run rather than hang it
            result.aborted = f"client {idx}: {type(exc).__name__}: {exc}"
            barrier.abort()
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    try:
        try:
            _wait_barrier(barrier, timeout=warm_t + settings.request_timeout + 30)
            cpu0 = (time.process_time(), server.cpu_seconds())
            start["t"] = time.monotonic()
            _wait_barrier(barrier, timeout=10)
        except RuntimeError as exc:
            halt.set()
            result.aborted = result.aborted or str(exc)
            return result
        hard_limit = start["t"] + meas_t + timeout + 30
        for t in threads:
            while t.is_alive():
                t.join(0.2)
                if time.monotonic() > hard_limit:
                    halt.set()
                    result.aborted = "clients did not finish in time"
                    break
    except BaseException:
        halt.set()
        barrier.abort()
        raise
    result.client_cpu = time.process_time() - cpu0[0]
    result.server_cpu = server.cpu_seconds() - cpu0[1]
    if ends:
        result.elapsed = max(ends) - start["t"]
    if not scenario.by_count:
        result.window = meas_t
    if not server.alive():
        result.aborted = f"server died:\n{server.log_tail()}"
    return result


def error_kind(detail: str) -> str:
    """What errors have in common: method and outcome, without names, numbers and dates."""
    method, _, rest = detail.partition(" ")
    outcome = rest.partition(" -> ")[2]
    return method + " " + re.sub(r"[0-9]+", "#", outcome)[:60]


def _wait_barrier(barrier: threading.Barrier, timeout: float) -> None:
    """Barrier.wait, but interruptible by Ctrl-C and bounded."""
    done = threading.Event()
    err: list[BaseException] = []

    def waiter() -> None:
        try:
            barrier.wait(timeout)
        except BaseException as exc:  # noqa: BLE001
            err.append(exc)
        done.set()

    threading.Thread(target=waiter, daemon=True).start()
    while not done.wait(0.2):
        pass
    if err:
        raise RuntimeError(f"clients did not reach the start line: {err[0]!r}")


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


def cpu_pct(r: RunResult, who: str) -> str:
    """CPU use over the measured phase, in % of one core."""
    wall = r.window or r.elapsed
    if wall <= 0:
        return "-"
    return f"{100 * (r.client_cpu if who == 'client' else r.server_cpu) / max(wall, r.elapsed):.0f}"


def fmt_rate(r: RunResult | None) -> str:
    if r is None:
        return "-"
    if r.aborted:
        return "ABORT"
    v = r.rate
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 1 else f"{v:.2f}"


def print_table(results: dict[tuple[str, int, str], RunResult], scenarios: list[Scenario], clients: list[int],
                servers: list[str]) -> None:
    base = servers[0]
    others = servers[1:]
    head = ["scenario", "clients", "unit"] + servers + [f"{s}/{base}" for s in others]
    head += ["errors " + "/".join(servers), "p50 ms " + "/".join(servers), "p99 ms " + "/".join(servers)]
    rows = [head]
    for sc in scenarios:
        for c in clients:
            rs = [results.get((sc.name, c, s)) for s in servers]
            if not any(rs):
                continue
            row = [sc.name, str(c), sc.unit] + [fmt_rate(r) for r in rs]
            b = rs[0]
            for r in rs[1:]:
                ok = r and b and not r.aborted and not b.aborted and b.rate > 0
                row.append(f"{r.rate / b.rate:.2f}" if ok else "-")
            row.append("/".join(str(r.errors) if r else "-" for r in rs))
            row.append("/".join(f"{r.pct(0.5):.1f}" if r and r.latencies else "-" for r in rs))
            row.append("/".join(f"{r.pct(0.99):.1f}" if r and r.latencies else "-" for r in rs))
            rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    for n, row in enumerate(rows):
        cells = [cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))]
        print("  ".join(cells))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def print_problems(results: dict[tuple[str, int, str], RunResult]) -> None:
    lines = []
    for r in results.values():
        if r.aborted:
            lines.append(f"[{r.server} | {r.scenario} x{r.clients}] ABORTED: {r.aborted}")
        if r.errors:
            lines.append(f"[{r.server} | {r.scenario} x{r.clients}] {r.errors} errors:")
            for (kind, n), sample in zip(r.error_kinds.items(), r.error_samples):
                lines.append(f"    {n} x {sample}")
        if r.latencies and r.slowest[0] > max(1.0, 20 * r.pct(0.5) / 1000):
            lines.append(f"[{r.server} | {r.scenario} x{r.clients}] slowest request {r.slowest[0]:.2f} s "
                         f"(p50 {r.pct(0.5):.1f} ms): {r.slowest[1]}")
        if r.warmup_errors:
            lines.append(f"[{r.server} | {r.scenario} x{r.clients}] {len(r.warmup_errors)} errors during warm-up "
                         f"(not counted), first: {r.warmup_errors[0]}")
        if r.misses:
            lines.append(f"[{r.server} | {r.scenario} x{r.clients}] {r.misses} expected 404s (raced names), "
                         f"{r.ops} ok")
    if lines:
        print()
        print("\n".join(lines))


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="short runs (about a minute in all)")
    p.add_argument("--scenarios", default=",".join(SCENARIOS),
                   help=f"comma-separated, from: {', '.join(SCENARIOS)} (default: all)")
    p.add_argument("--clients", default="1,8", help="comma-separated client counts (default 1,8)")
    p.add_argument("--duration", type=float, help="measured seconds per timed run (default 5, quick 1.5)")
    p.add_argument("--nginx", action="store_true", help="also run nginx + dav-ext, if installed")
    p.add_argument("--bare", action="store_true",
                   help="also run bare cheroot (no WebDAV, durable PUT): the ceiling for a cheroot app")
    p.add_argument("--workdir", default=None, help="parent of the temporary data directories (default /tmp)")
    p.add_argument("--keep", action="store_true", help="keep the data directories and server logs")
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--rounds", type=int, default=1,
                   help="runs of each scenario on each server, the order reversed every other round; "
                        "the best counts (default 1)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        print(f"unknown scenario(s): {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}", file=sys.stderr)
        return 2
    clients = [int(c) for c in args.clients.split(",") if c.strip()]
    if not clients or any(c < 1 or c > 64 for c in clients):
        print("--clients: numbers from 1 to 64", file=sys.stderr)
        return 2
    settings = Settings()
    if args.quick:
        settings = Settings(duration=1.5, warmup=0.3, warmup_ops=50, big_ops={}, big_default_ops=1,
                            big_warmup_ops=0, big_time_cap=30.0)
    if args.duration:
        settings.duration = args.duration

    server_types: list[type[ServerUnderTest]] = [StockWsgiDAV, UssDav]
    if args.bare:
        server_types.append(Bare)
    if args.nginx:
        why = Nginx.available()
        if why:
            print(f"--nginx: skipped, {why}", file=sys.stderr)
        else:
            server_types.append(Nginx)

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored

    t_start = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="uss-bench-", dir=args.workdir))
    servers: list[ServerUnderTest] = []
    results: dict[tuple[str, int, str], RunResult] = {}  # the best round of each
    every_run: list[RunResult] = []
    scenarios = [SCENARIOS[n]() for n in names]
    code = 0
    try:
        for cls in server_types:
            srv = cls(workdir)
            servers.append(srv)
            srv.start()
        print("servers: " + ", ".join(f"{s.name} {s.url}" for s in servers) + f"; data under {workdir}",
              flush=True)
        states: dict[str, dict] = {s.name: {} for s in servers}
        for sc in scenarios:
            for c, round_ in ((c, n) for c in clients for n in range(max(1, args.rounds))):
                for srv in servers if round_ % 2 == 0 else servers[::-1]:
                    if not srv.handles(sc):
                        continue
                    if not srv.alive():
                        print(f"{srv.name} is not running; skipped {sc.name} x{c}", file=sys.stderr)
                        continue
                    t0 = time.monotonic()
                    try:
                        r = run_one(srv, sc, c, settings, states[srv.name])
                    except RuntimeError as exc:
                        r = RunResult(srv.name, sc.name, c, sc.unit, aborted=str(exc))
                    every_run.append(r)
                    best = results.get((sc.name, c, srv.name))
                    if best is None or best.aborted or (not r.aborted and r.rate > best.rate):
                        results[(sc.name, c, srv.name)] = r
                    print(f"  {sc.name:<17} x{c:<2} {srv.name:<8} {fmt_rate(r):>8} {sc.unit:<5} "
                          f"ok={r.ops} miss={r.misses} err={r.errors} cpu% client={cpu_pct(r, 'client')} "
                          f"server={cpu_pct(r, 'server')} ({time.monotonic() - t0:.1f} s)",
                          flush=True)
    except KeyboardInterrupt:
        STOP.set()
        print("\ninterrupted; partial results:", file=sys.stderr)
        code = 130
    except RuntimeError as exc:  # a server did not start
        STOP.set()
        print(f"\n{exc}", file=sys.stderr)
        code = 1
    finally:
        for srv in servers:
            srv.stop()
        log_notes = [f"[{srv.name}] server log: {n} tracebacks" + ("" if args.keep else " (--keep keeps the log)")
                     for srv in servers if (n := srv.log_tail(10**9).count("Traceback (most recent call last)"))]
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    print()
    print_table(results, scenarios, clients, [s.name for s in servers])
    print_problems(results)
    if log_notes:
        print("\n".join(log_notes))
    total = time.monotonic() - t_start
    rounds = f"best of {args.rounds} rounds; " if args.rounds > 1 else ""
    print(f"\ntotal {total:.0f} s; {rounds}timed runs {settings.duration:g} s after {settings.warmup:g} s warm-up; "
          f"64 MiB runs {settings.big_warmup_ops} warm-up + "
          f"{', '.join(f'{settings.count_for(c)} x{c}' for c in clients)} transfers per client")
    if args.json:
        Path(args.json).write_text(json.dumps([
            {"server": r.server, "scenario": r.scenario, "clients": r.clients, "unit": r.unit, "rate": r.rate,
             "ops": r.ops, "misses": r.misses, "errors": r.errors, "elapsed": r.elapsed,
             "p50_ms": r.pct(0.5), "p99_ms": r.pct(0.99), "client_cpu_s": r.client_cpu, "server_cpu_s": r.server_cpu,
             "error_kinds": r.error_kinds, "error_samples": r.error_samples, "aborted": r.aborted}
            for r in results.values()], indent=1))
    failed = [r for r in every_run if r.errors or r.aborted]
    if failed and args.rounds > 1:
        print(f"{len(failed)} of {len(every_run)} runs had errors or were aborted "
              "(the table shows each server's best round)")
    if failed:
        code = code or 1
    return code


if __name__ == "__main__":
    sys.exit(main())
