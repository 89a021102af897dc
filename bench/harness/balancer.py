"""haproxy in front of uss_dav nodes: the config and the process, for the multi-node tests and benches.

haproxy is Debian's, started in the foreground on a free loopback port with
a config written here: round robin, health checked on the REST ping, and
each answer names the node that served it (NODE_HEADER).
"""

from __future__ import annotations

import http.client
import os
import subprocess
import time
from pathlib import Path

from bench.harness import proc
from bench.harness.servers import (
    FSYNCED,
    ServerUnderTest,
    UssDav,
    free_port,
    stop_process,
)

HAPROXY = "/usr/sbin/haproxy"
#: Response header haproxy adds: which node answered.
NODE_HEADER = "X-Uss-Node"
PING = "/api/v1/ping"


def missing() -> str | None:
    """Why haproxy cannot run here, or None."""
    return None if os.access(HAPROXY, os.X_OK) else f"{HAPROXY} is not installed (apt-get install haproxy)"


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
    http-check send meth GET uri {PING}
    http-check expect status 200
    http-response set-header {NODE_HEADER} %[srv_name]
{servers}
"""


def _ping(port: int) -> str | None:
    """The node that answered a ping through haproxy, or None when none did (yet)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", PING)
        resp = conn.getresponse()
        resp.read()
        return resp.getheader(NODE_HEADER, "") if resp.status == 200 else None
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


class Haproxy:
    """haproxy in the foreground (-db) with a config written to `workdir`; start() returns once it
    has reached every node."""

    def __init__(self, workdir: Path, backends: list[int]) -> None:
        reason = missing()
        if reason:
            raise RuntimeError(reason)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cfg = workdir / "haproxy.cfg"
        self.cfg.write_text(haproxy_config(self.port, backends))
        self.log_path = workdir / "haproxy.log"
        self.backends = backends
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> Haproxy:
        check = subprocess.run([HAPROXY, "-c", "-f", str(self.cfg)], capture_output=True, text=True, timeout=30,
                               check=False)
        if check.returncode != 0:
            raise RuntimeError(f"haproxy -c: {check.stdout}{check.stderr}")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [HAPROXY, "-f", str(self.cfg), "-db"], stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        seen: set[str] = set()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(seen) < len(self.backends):
            if self.proc.poll() is not None:
                raise RuntimeError(f"haproxy exited: {self.log_path.read_text()[-2000:]}")
            node = _ping(self.port)
            if node is None:
                time.sleep(0.05)
            else:
                seen.add(node)
        if len(seen) < len(self.backends):
            self.stop()
            raise RuntimeError(f"haproxy reached only {sorted(seen)}: {self.log_path.read_text()[-2000:]}")
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        popen, self.proc = self.proc, None
        stop_process(popen)


class BalancedUssDav(ServerUnderTest):
    """uss_dav nodes on one data directory, each reaching it by its own path (its own mount of a shared
    file system), haproxy in front: one server to the load generator.

    The first node makes the key; its CPU is that of every node; haproxy's is
    reported beside it.
    """

    durability = FSYNCED

    def __init__(self, workdir: Path, name: str, data_dirs: list[Path]) -> None:
        super().__init__(workdir, name)
        self.nodes = [UssDav(self.workdir, data, f"node{i + 1}") for i, data in enumerate(data_dirs)]
        self.balancer: Haproxy | None = None

    def start(self, timeout: float = 30.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        first, *others = self.nodes
        first.start(timeout)
        self.auth = first.auth
        for node in others:
            node.auth = first.auth
            node.start(timeout)
        self.balancer = Haproxy(self.workdir, [n.port for n in self.nodes]).start()
        self.port = self.balancer.port

    def stop(self) -> None:
        if self.balancer is not None:
            self.balancer.stop()
        for node in self.nodes:
            node.stop()

    def alive(self) -> bool:
        return self.balancer is not None and self.balancer.alive() and all(n.alive() for n in self.nodes)

    def cpu_seconds(self) -> float:
        return sum(n.cpu_seconds() for n in self.nodes)

    def beside_cpu_seconds(self) -> dict[str, float]:
        popen = self.balancer.proc if self.balancer else None
        return {"haproxy": proc.tree_cpu_seconds(popen.pid) if popen and popen.poll() is None else 0.0}

    def log_tail(self, chars: int = 3000) -> str:
        return "\n".join(f"--- {n.name} ---\n{n.log_tail(chars)}" for n in self.nodes)

    def tracebacks(self) -> int:
        return sum(n.tracebacks() for n in self.nodes)
