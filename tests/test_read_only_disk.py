"""A read-only data directory: each write gets a 503 with a one-line reason, reads go on, nothing changes.

ext4 remounts itself read-only after an I/O error (errors=remount-ro).
Before, a PUT then got 500 "internal error", which tells a client that the
request found a bug, not that the server's storage is down for writes.

The read-only disk is simulated in process: every call that would change
something under the data directory fails with EROFS, as the kernel's would.
A real `mount -o remount,ro` cannot be had under a running server: Linux
refuses it while any file on the mount is open for writing, and a server
holds its node record so (an exclusive flock needs a writer on NFS). Before
a start nothing is open, so the start is tested on a real read-only mount.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.client import LOCK_BODY, mounted_tmpfs
from tests.inprocess import ROOT, assembled_app, request, wsgi_environ
from tests.server import RunningServer, write_config

READ_ONLY = b"the server's storage is read-only: nothing was stored\n"
PNG = (ROOT / "tests" / "data" / "corpus" / "rgba.png").read_bytes()
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
PROPPATCH = (
    b'<?xml version="1.0" encoding="utf-8"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:x">'
    b"<D:set><D:prop><Z:note>n</Z:note></D:prop></D:set></D:propertyupdate>"
)


@contextmanager
def read_only(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every change under `data_dir` fails with EROFS while inside; yields the calls refused."""
    root = str(data_dir.resolve())
    refused: list[str] = []

    def inside(target: Any, kwargs: dict[str, Any]) -> bool:
        if isinstance(target, int) or kwargs.get("dir_fd") is not None:
            return True  # a descriptor: only files under the data directory are changed through one
        return os.path.abspath(os.fsdecode(target)).startswith(root)

    def guarded(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def call(target: Any, *args: Any, **kwargs: Any) -> Any:
            if inside(target, kwargs):
                refused.append(f"{name} {target}")
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), target)
            return real(target, *args, **kwargs)

        return call

    real_open = os.open

    def opened(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & WRITE_FLAGS and inside(path, kwargs):
            refused.append(f"open {path}")
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)
        return real_open(path, flags, *args, **kwargs)

    with monkeypatch.context() as patched:
        patched.setattr(os, "open", opened)
        for name in ("replace", "rename", "unlink", "remove", "mkdir", "rmdir", "link", "setxattr", "removexattr", "utime"):
            patched.setattr(os, name, guarded(name, getattr(os, name)))
        yield refused


def test_each_write_is_a_503_with_the_reason_and_reads_go_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    with assembled_app(data) as (app, key, _services):
        kept = os.urandom(100_000)
        assert request(app, key, "PUT", "/kept.bin", kept)[0].startswith("201")
        assert request(app, key, "PUT", "/photo.png", PNG)[0].startswith("201")
        assert request(app, key, "MKCOL", "/folder/")[0].startswith("201")
        with read_only(data, monkeypatch) as refused:
            writes: list[tuple[str, str, bytes, dict[str, str]]] = [
                ("PUT", "/kept.bin", b"replaced", {}),  # the plain PUT
                ("PUT", "/new.bin", b"new", {"if_none_match": "*"}),  # WsgiDAV's PUT
                ("DELETE", "/kept.bin", b"", {}),
                ("DELETE", "/folder/", b"", {}),
                ("MKCOL", "/other/", b"", {}),
                ("MOVE", "/kept.bin", b"", {"destination": "http://localhost/moved.bin"}),
                ("COPY", "/kept.bin", b"", {"destination": "http://localhost/copy.bin"}),
                ("LOCK", "/kept.bin", LOCK_BODY, {}),
            ]
            for method, path, body, headers in writes:
                status, _headers, text = request(app, key, method, path, body, **headers)
                assert (status, text) == ("503 Service Unavailable", READ_ONLY), f"{method} {path}: {status} {text!r}"
            # The REST face: the same status and reason, as a problem document.
            environ = wsgi_environ("POST", "/api/v1/images", key, PNG)
            environ["QUERY_STRING"] = "name=rest.png"
            seen: list[str] = []
            answer = json.loads(b"".join(app(environ, lambda status, headers, exc=None: seen.append(status))))
            assert seen[0].startswith("503") and answer["detail"] == READ_ONLY.decode().strip(), (seen, answer)
            status, _headers, text = request(app, key, "DELETE", "/api/v1/images/kept.bin")
            assert status.startswith("503") and json.loads(text)["detail"] == READ_ONLY.decode().strip(), text
            status, _headers, text = request(app, key, "PROPPATCH", "/kept.bin", PROPPATCH)
            assert status.startswith("207") and b"<D:status>HTTP/1.1 503 " in text, text
            # Reads go on: the bytes, the listing, and a thumbnail (made, but not kept).
            assert request(app, key, "GET", "/kept.bin")[2] == kept
            status, _headers, text = request(app, key, "PROPFIND", "/", depth="1")
            assert status.startswith("207") and b"kept.bin" in text, text
            status, _headers, thumbnail = request(app, key, "GET", "/api/v1/images/photo.png/thumbnail")
            assert status.startswith("200") and thumbnail, status
            assert refused, "nothing was written to, so nothing was tested"
        assert request(app, key, "GET", "/kept.bin")[2] == kept
        for name in ("/new.bin", "/moved.bin", "/copy.bin", "/rest.png", "/other/"):
            assert request(app, key, "PROPFIND", name, depth="0")[0].startswith("404"), name
        assert request(app, key, "PROPFIND", "/folder/", depth="0")[0].startswith("207")
        assert os.listdir(data / "staging") == [], "a refused write left a staged file"
        assert request(app, key, "PUT", "/kept.bin", b"replaced")[0].startswith("204")


def test_a_server_refuses_to_start_on_a_read_only_data_directory_with_one_line(tmp_path: Path) -> None:
    """Before, the start ended in a traceback from deep in its node record's mkdir."""
    data = tmp_path / "data"
    data.mkdir()
    with mounted_tmpfs(data, 4):
        srv = RunningServer(data, config=write_config(tmp_path / "config.yaml"))
        try:
            srv.create_key()
            subprocess.run(["mount", "-o", "remount,ro", str(data)], check=True)
            with pytest.raises(RuntimeError, match="server exited"):
                srv.start()
            assert srv.proc is not None and srv.proc.wait(10) != 0
            lines = [line for line in srv.log().splitlines() if line.strip()]
            expected = f"uss_dav: refusing to start: cannot write its node record in {data}: Read-only file system"
            assert lines[-1] == expected, lines[-5:]
            assert "Traceback" not in srv.log()
        finally:
            srv.stop()
