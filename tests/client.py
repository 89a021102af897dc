"""The client side of end-to-end tests: sessions, a few requests and readers, rclone, and the check for a missing tool."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn
from urllib.parse import quote

import pytest
import requests

from tests.server import RunningServer

DAV = "{DAV:}"


def unavailable(reason: str) -> NoReturn:
    """Skip for want of an external tool: with the reason on a user's machine, a failure under CI (which must install it)."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must install it")
    pytest.skip(reason)


@contextmanager
def mounted_tmpfs(mount: Path, megabytes: int) -> Iterator[Path]:
    """A tmpfs of `megabytes` mounted on the folder `mount` for the block (it needs root: unavailable() if refused)."""
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(mount)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        unavailable(f"cannot mount a {megabytes} MiB tmpfs for the data directory (it needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=False)


#: An exclusive write lock's request body (RFC 4918 9.10), as a DAV client sends it.
LOCK_BODY = (
    b'<?xml version="1.0" encoding="utf-8"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope>'
    b"<D:locktype><D:write/></D:locktype><D:owner>test</D:owner></D:lockinfo>"
)


def require_tool(tool: str) -> str:
    """The path of an external client or server the test needs; unavailable() when it is missing."""
    if not os.access(tool, os.X_OK):
        unavailable(f"{tool} is not installed (apt-get install {os.path.basename(tool)})")
    return tool


def session_for(key: str) -> requests.Session:
    """A requests session authenticated with `key` (Basic, key as user name)."""
    session = requests.Session()
    session.auth = (key, "")
    return session


def url_of(server: RunningServer, rel: str) -> str:
    return server.url + "/" + quote(rel)


def get_bytes(session: requests.Session, server: RunningServer, rel: str) -> bytes:
    """The body of GET /rel, which must answer 200."""
    r = session.get(url_of(server, rel), timeout=30)
    assert r.status_code == 200, f"GET /{rel}: {r.status_code} {r.text[:300]}"
    return r.content


def propfind(
    session: requests.Session, url: str, depth: str | None, body: str | bytes | None = None,
    *, headers: dict[str, str] | None = None, timeout: float = 30,
) -> requests.Response:
    """PROPFIND `url` with a Depth header (None: none) and `body` (None: no body, which is allprop)."""
    depth_header = {"Depth": depth} if depth is not None else {}
    return session.request("PROPFIND", url, headers={**depth_header, **(headers or {})}, data=body, timeout=timeout)


def hrefs(response: requests.Response) -> set[str]:
    """The href texts of a multistatus answer, as the server wrote them."""
    return {el.text or "" for el in ET.fromstring(response.content).iter(f"{DAV}href")}


def local_files(root: Path) -> dict[str, bytes]:
    """Every file under `root`: relative POSIX path -> bytes."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


RCLONE = "/usr/bin/rclone"
#: Seconds any one external client command may take.
CMD_TIMEOUT = 60


class Rclone:
    """rclone with an on-the-fly `:webdav:` remote configured only through the environment.

    No config file is read or written, and the key never shows on a command line.
    """

    vendor = "other"
    #: Whether stdout and stderr are decoded.
    text = False

    def __init__(self, tmp: Path, server: RunningServer, key: str) -> None:
        home = tmp / "rclone-home"
        home.mkdir(exist_ok=True)
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "TZ": "UTC",
            "XDG_CONFIG_HOME": str(home / "config"),
            "XDG_CACHE_HOME": str(home / "cache"),
            "RCLONE_CONFIG": "/dev/null",
            "RCLONE_WEBDAV_URL": server.url + "/",
            "RCLONE_WEBDAV_VENDOR": self.vendor,
            "RCLONE_WEBDAV_BEARER_TOKEN": key,
        }

    def run(self, *args: str, check: bool = True, input: bytes | None = None) -> subprocess.CompletedProcess:
        cmd = [RCLONE, *args, "--low-level-retries", "1", "--retries", "1", "--contimeout", "10s", "--timeout", "30s"]
        done = subprocess.run(
            cmd, check=False, env=self.env, input=input, capture_output=True, text=self.text, timeout=CMD_TIMEOUT
        )
        if check:
            stderr = done.stderr if self.text else done.stderr.decode(errors="replace")
            assert done.returncode == 0, f"rclone {' '.join(args)} exited {done.returncode}:\n{stderr[-3000:]}"
        return done


class OwncloudRclone(Rclone):
    """rclone as an ownCloud client: checksums (oc:checksums) and modification times (X-OC-Mtime)."""

    vendor = "owncloud"
    text = True

    def sync_json(self, *args: str, check: bool = True) -> tuple[dict[str, list[str]], dict[str, object], str]:
        """Run a transfer command with a JSON log: ({message: [objects]}, final stats, stderr)."""
        done = self.run(*args, "--use-json-log", "-v", check=check)
        messages: dict[str, list[str]] = {}
        stats: dict[str, object] = {}
        for line in done.stderr.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if "stats" in entry:
                stats = entry["stats"]
            if entry.get("object"):
                messages.setdefault(entry.get("msg", ""), []).append(entry["object"])
        return messages, stats, done.stderr


def copied(messages: dict[str, list[str]]) -> list[str]:
    return sorted(obj for msg, objs in messages.items() if msg.startswith("Copied") for obj in objs)


@dataclass
class Upload:
    """One PUT of a crash test: its body, and what became of it (status, or the error that cut it)."""

    name: str
    body: bytes
    #: Sent in eight pieces with a pause after each, so that a kill lands mid-body.
    slow: bool
    status: int | None = None
    error: str | None = None
    started: float | None = None
    finished: float | None = None

    @property
    def in_flight(self) -> bool:
        return self.started is not None and self.finished is None


def send_upload(port: int, auth: str, job: Upload, *, pause: float = 0.15, timeout: float = 20.0) -> None:
    """PUT `job` on a connection of its own; a connection cut by a kill is recorded, not raised."""
    job.started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.putrequest("PUT", f"/{job.name}")
        conn.putheader("Authorization", auth)
        conn.putheader("Content-Length", str(len(job.body)))
        conn.endheaders()
        step = len(job.body) // 8 + 1 if job.slow else len(job.body)
        for i in range(0, len(job.body), step):
            conn.send(job.body[i:i + step])
            if job.slow:
                time.sleep(pause)
        resp = conn.getresponse()
        resp.read()
        job.status = resp.status
    except (OSError, http.client.HTTPException) as exc:
        job.error = repr(exc)  # cut by the kill: neither acknowledged nor refused
    finally:
        job.finished = time.monotonic()
        conn.close()
