"""The servers a benchmark measures, each a subprocess on 127.0.0.1 on a free port with its own directory.

- `UssDav`: run_server.py with a key made by `keys create`.
- `StockWsgiDAV`: WsgiDAV with its plain FilesystemProvider on cheroot (bench/harness/stock_wsgidav.py).
- `Bare`: cheroot with a few lines of WSGI and uss_dav's durable PUT (bench/harness/bare_cheroot.py).
- `Nginx`: nginx with its DAV module and dav-ext, when installed.
- `Copyparty`: copyparty (the `bench` extra of pyproject.toml), one process, WebDAV on.

Each server class says which durability it was measured with (`durability`):
a benchmark that compares uploads prints it, since an fsync before the
answer costs more than any code path.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench.harness import proc
from bench.harness.scenarios import Get, Put, Scenario

ROOT = Path(__file__).resolve().parents[2]
_VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
PYTHON = str(_VENV_PYTHON) if _VENV_PYTHON.exists() else sys.executable

FSYNCED = "data and folder fsynced before the 201"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def basic(user: str, password: str) -> str:
    """An Authorization header value for Basic auth."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def stop_process(popen: subprocess.Popen[bytes] | None, *, group: bool = False) -> None:
    """SIGTERM, then SIGKILL after 10 s; with `group`, to the whole process group (a server and its workers)."""
    if popen is None or popen.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            if group:
                os.killpg(popen.pid, sig)
            else:
                popen.send_signal(sig)
        except ProcessLookupError:
            return
        try:
            popen.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


class ServerUnderTest:
    """A WebDAV server in a subprocess: start(), stop(), host/port, auth header.

    Subclasses set `name` and `durability` and implement prepare() (data
    directory, credentials) and command(); the base class starts the process
    in its own session, waits until it answers, and stops the whole process
    group.
    """

    name = "?"
    durability = "?"
    host = "127.0.0.1"

    def __init__(self, workdir: Path, name: str | None = None) -> None:
        self.name = name or self.name
        self.workdir = workdir / self.name
        self.port = free_port()
        self.auth = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / "server.log"

    @classmethod
    def available(cls) -> str | None:
        """None when this server can run here, else why not."""
        return None

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
        popen, self.proc = self.proc, None
        stop_process(popen, group=True)

    def cpu_seconds(self) -> float:
        """User + system CPU so far of the server and every process below it (0 when it is not running)."""
        return proc.tree_cpu_seconds(self.proc.pid) if self.proc and self.alive() else 0.0

    def beside_cpu_seconds(self) -> dict[str, float]:
        """CPU so far of processes the server needs beside its own, by name (a balancer, a file system)."""
        return {}

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def tracebacks(self) -> int:
        """How many tracebacks the server's log holds."""
        return self.log_tail(10**9).count("Traceback (most recent call last)")


class _UserPasswordRoot(ServerUnderTest):
    """A server that serves `root` to one user with a password."""

    user, password = "bench", "bench-password"

    def prepare(self) -> None:
        self.root = self.workdir / "root"
        self.root.mkdir(parents=True, exist_ok=True)
        self.auth = basic(self.user, self.password)


class StockWsgiDAV(_UserPasswordRoot):
    name = "stock"
    durability = "no fsync (WsgiDAV's default)"

    def command(self) -> list[str]:
        return [PYTHON, "-m", "bench.harness.stock_wsgidav", "--root", str(self.root), "--host", self.host,
                "--port", str(self.port), "--user", self.user, "--password", self.password, "--threads", "16"]


class UssDav(ServerUnderTest):
    """run_server.py on `data` (default: data/ in its own directory); a key is made there unless `auth`
    is set before start() (a second node on the same data directory)."""

    name = "uss_dav"
    durability = FSYNCED
    #: The source tree it runs from: this one, or a checkout of another commit (see at_commit).
    root = ROOT

    def __init__(self, workdir: Path, data: Path | None = None, name: str | None = None) -> None:
        super().__init__(workdir, name)
        self.data = data or self.workdir / "data"

    def prepare(self) -> None:
        if self.auth:
            return
        out = subprocess.run(
            [PYTHON, "-m", "uss_dav", "--data-dir", str(self.data), "keys", "create", "--label", "bench"],
            cwd=self.root, env=self.env(), capture_output=True, text=True, timeout=60, check=False,
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
        return [PYTHON, str(self.root / "run_server.py"), "--data-dir", str(self.data),
                "--host", self.host, "--port", str(self.port)]


#: Debian's eatmydata: an LD_PRELOAD library that turns fsync and friends into no-ops.
EATMYDATA = Path("/usr/lib/x86_64-linux-gnu/libeatmydata.so")


class UssDavNoFsync(UssDav):
    """uss_dav with every fsync made a no-op (eatmydata): copyparty's and nginx's durability.

    Not a mode uss_dav offers: a measurement of what its software costs
    apart from the fsyncs it always does, for like-for-like ratios with the
    peers that never fsync. Not all of the flushing goes: ext4
    (auto_da_alloc, its default) starts writing a file out when it is
    renamed over an existing name, about 115 us per 10 KiB PUT here that
    copyparty (unlink, then write in place) never pays. What durability
    costs is measured on the disk instead (fs_floor.WriteRates).
    """

    name = "uss_dav_nofsync"
    durability = ("no fsync (eatmydata's LD_PRELOAD turns fsync into a no-op; a measurement, not a mode; "
                  "ext4 still writes out a file renamed over an old one)")

    @classmethod
    def available(cls) -> str | None:
        return None if EATMYDATA.exists() else f"{EATMYDATA} missing (Debian: eatmydata)"

    def env(self) -> dict[str, str]:
        return {**super().env(), "LD_PRELOAD": str(EATMYDATA)}


@contextlib.contextmanager
def at_commit(rev: str) -> Iterator[type[UssDav]]:
    """UssDav as it was at commit `rev` (a detached git worktree), to compare in the same run.

    Enter it before the Bench that runs the server: the worktree must outlive the server.
    """
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", rev],
                            capture_output=True, text=True, check=True).stdout.strip()
    tree = Path(tempfile.mkdtemp(prefix="uss-baseline-")) / commit
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(tree), commit], check=True)
    try:
        yield type("UssDavAtCommit", (UssDav,), {"name": f"uss_dav@{commit}", "root": tree})
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
        shutil.rmtree(tree.parent, ignore_errors=True)


class Bare(_UserPasswordRoot):
    """cheroot with a trivial app: OPTIONS, MKCOL, GET, durable PUT. Only the PUT and GET scenarios."""

    name = "bare"
    durability = FSYNCED

    def handles(self, scenario: Scenario) -> bool:
        return isinstance(scenario, (Put, Get))

    def command(self) -> list[str]:
        return [PYTHON, "-m", "bench.harness.bare_cheroot", "--root", str(self.root), "--host", self.host,
                "--port", str(self.port), "--auth", self.auth, "--threads", "16"]


class Copyparty(_UserPasswordRoot):
    """copyparty, one process (its default), WebDAV on (its default), one account with read, write, move, delete.

    `--daw` makes a PUT over an existing file replace it whoever the client
    is (without it copyparty keeps the old file for clients it does not
    recognise as WebDAV clients). Nothing about fsync is changed: copyparty
    never fsyncs. Its config folder goes into the server's directory.
    """

    name = "copyparty"
    durability = "no fsync (copyparty never fsyncs)"

    @classmethod
    def available(cls) -> str | None:
        if importlib.util.find_spec("copyparty") is None:
            return "copyparty is not installed (pip install -e '.[bench]')"
        return None

    def env(self) -> dict[str, str]:
        return {**super().env(), "XDG_CONFIG_HOME": str(self.workdir / "config")}

    def command(self) -> list[str]:
        return [PYTHON, "-m", "copyparty", "-q", "-i", self.host, "-p", str(self.port),
                "-a", f"{self.user}:{self.password}", "-v", f"{self.root}:/:rwmd,{self.user}", "--daw"]


NGINX_MODULE_DIRS = ("/usr/lib/nginx/modules", "/usr/share/nginx/modules", "/usr/lib64/nginx/modules")


def _nginx() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)


class Nginx(_UserPasswordRoot):
    """nginx with ngx_http_dav_module + dav-ext (PROPFIND), two worker processes, sendfile on."""

    name = "nginx"
    durability = "no fsync (its DAV module writes a temporary file and renames it)"

    @staticmethod
    def module_path() -> str | None:
        for d in NGINX_MODULE_DIRS:
            p = Path(d) / "ngx_http_dav_ext_module.so"
            if p.exists():
                return str(p)
        return None

    @classmethod
    def available(cls) -> str | None:
        exe = _nginx()
        if not exe:
            return "nginx is not installed"
        out = subprocess.run([exe, "-V"], capture_output=True, text=True, check=False)
        if "dav-ext" not in out.stderr and cls.module_path() is None:
            return "nginx has no dav-ext module (PROPFIND)"
        return None

    def prepare(self) -> None:
        super().prepare()
        w = self.workdir
        (w / "tmp").mkdir(exist_ok=True)
        (w / "htpasswd").write_text(f"{self.user}:{{PLAIN}}{self.password}\n")
        module = self.module_path()
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
        return [_nginx() or "nginx", "-p", str(self.workdir), "-c", str(self.workdir / "nginx.conf")]
