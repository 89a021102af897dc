"""A real uss_dav server (run_server.py) on a free port for end-to-end tests, and a factory for servers with their own config."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import pytest
import requests
import yaml

from bench.harness import proc

ROOT = Path(__file__).resolve().parent.parent
#: The admin token (USS_ADMIN_TOKEN) of the `admin_server` fixture.
ADMIN_TOKEN = "admin-token-for-tests-" + "x" * 20


def write_config(path: Path, **overrides: object) -> Path:
    """config.yaml with `overrides` applied, written to `path` (relative paths stay valid: data_dir is passed explicitly)."""
    values = yaml.safe_load((ROOT / "config.yaml").read_text())
    values.update(overrides)
    path.write_text(yaml.safe_dump(values))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RunningServer:
    """run_server.py in a subprocess; stopped (and its children with it) by stop()."""

    def __init__(
        self,
        data_dir: Path,
        *,
        config: Path | None = None,
        extra_env: dict[str, str] | None = None,
        scheme: str = "http",
    ) -> None:
        self.data_dir = Path(data_dir)
        self.config = config or ROOT / "config.yaml"
        self.port = free_port()
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.log_path = self.data_dir.parent / f"server-{self.port}.log"
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(extra_env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def cli(self, *args: str) -> str:
        """Run `python -m uss_dav` on this server's data directory; return stdout."""
        done = subprocess.run(
            [sys.executable, "-m", "uss_dav", "--config", str(self.config), "--data-dir", str(self.data_dir), *args],
            cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=60,
        )
        if done.returncode != 0:
            raise RuntimeError(f"uss_dav {' '.join(args)} failed: {done.stderr}")
        return done.stdout

    def create_key(self, *options: str) -> tuple[str, str]:
        """(id, key) of a new key with its own collection."""
        out = self.cli("keys", "create", *options)
        key_id = re.search(r"^id: (\S+)$", out, re.MULTILINE).group(1)  # type: ignore[union-attr]
        key = re.search(r"^key: (\S+)$", out, re.MULTILINE).group(1)  # type: ignore[union-attr]
        return key_id, key

    def start(self, verify: str | bool = True) -> RunningServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "run_server.py"), "--config", str(self.config),
             "--host", "127.0.0.1", "--port", str(self.port), "--data-dir", str(self.data_dir)],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-3000:]}")
            try:
                requests.request("OPTIONS", self.url + "/", timeout=1, verify=verify)
                return self
            except requests.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("server did not start within 30 s")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Signal every process of the server and wait until all are gone (not only the parent:
        a serving process still exiting holds its files open, and the folder they are on cannot
        be unmounted yet)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=15)
        deadline = time.monotonic() + 15
        while proc.session_members(self.proc.pid) and time.monotonic() < deadline:
            time.sleep(0.02)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def processes(self) -> list[int]:
        """The parent and its serving processes (forked, so with the parent's command line)."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        return [self.proc.pid, *(pid for pid in proc.children(self.proc.pid) if "run_server.py" in proc.cmdline(pid))]

    def dump_stacks(self) -> str:
        """Have each process of this server write its thread stacks to the log (SIGUSR1), one at a
        time so that their lines do not interleave; the log's tail."""
        for pid in self.processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGUSR1)
            deadline, size = time.monotonic() + 3, -1
            while time.monotonic() < deadline and size != len(self.log()):
                size = len(self.log())
                time.sleep(0.3)  # until the dump has stopped growing
        return self.log()[-12000:]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class ServerFactory:
    """Servers with their own config, each under a fresh temporary folder; all stopped on exit.

    The fixtures `make_server` (one test) and `make_module_server` (one
    module) wrap it, so no test has to remember to stop what it started.
    """

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self._tmp = tmp_path_factory
        self._servers: list[RunningServer] = []

    def __call__(
        self,
        *,
        extra_env: dict[str, str] | None = None,
        start: bool = True,
        verify: str | bool = True,
        **config: object,
    ) -> RunningServer:
        """A server on the repository's config.yaml with `config` over it; started unless `start` is False.

        HTTPS when `config` names a TLS certificate; `verify` is the CA the start-up probe trusts.
        """
        root = self._tmp.mktemp("uss")
        tls = config.get("tls")
        scheme = "https" if isinstance(tls, dict) and tls.get("cert") else "http"
        srv = RunningServer(
            root / "data", config=write_config(root / "config.yaml", **config), extra_env=extra_env, scheme=scheme
        )
        self._servers.append(srv)
        if start:
            srv.start(verify=verify)
        return srv

    def stop_all(self) -> None:
        for srv in reversed(self._servers):
            srv.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop_all()


def collection_dir(server: RunningServer, key_id: str) -> Path:
    """Where the server keeps the files of the key `key_id`."""
    return server.data_dir / "collections" / key_id
