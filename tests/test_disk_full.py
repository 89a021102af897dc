"""A full disk gets a 507 with a one-line reason, and nothing stored is lost or changed.

The server's data directory is on a small tmpfs of its own, mounted for the
test (that needs root, which CI has). Before, a disk that filled up during a
PUT's body was blamed on the client: 400 "unusable request body: OSError".
"""

from __future__ import annotations

import base64
import io
import os
import re
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.client import LOCK_BODY, mounted_tmpfs
from tests.server import ROOT, RunningServer, write_config

DISK_MB = 8
PNG = (ROOT / "tests" / "data" / "corpus" / "rgba.png").read_bytes()
JPEG = (ROOT / "tests" / "data" / "corpus" / "photo_exif_icc_xmp.jpg").read_bytes()  # 76 KB, about 60 KB as JPEG XL
FULL = "the server's disk is full: nothing was stored\n"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    with mounted_tmpfs(mount, DISK_MB):
        yield mount


def fill(path: Path, leave: int = 0) -> Path:
    """A file that takes every byte left on its file system, or all but about `leave` of them."""
    if leave:
        st = os.statvfs(path.parent)
        path.write_bytes(b"\0" * (st.f_bavail * st.f_frsize - leave))
        return path
    with open(path, "wb", buffering=0) as fh:
        block = b"\0" * (64 << 10)
        try:
            while True:
                fh.write(block)
        except OSError:
            pass
        try:
            while True:
                fh.write(b"\0")
        except OSError:
            pass
    return path


def send_head(port: int, key: str, method: str, path: str, length: int) -> tuple[socket.socket, bytes]:
    """A connection whose request declares `length` bytes and waits for 100 Continue; the server's first answer."""
    auth = base64.b64encode(f"{key}:".encode()).decode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {auth}\r\n"
        f"Content-Length: {length}\r\nExpect: 100-continue\r\n\r\n".encode()
    )
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += receive(sock)
    return sock, answer


def receive(sock: socket.socket) -> bytes:
    """The next bytes on `sock`; a closed connection fails the test rather than looping."""
    data = sock.recv(65536)
    assert data, "the server closed the connection before its whole answer"
    return data


def read_answer(sock: socket.socket, answer: bytes = b"") -> tuple[str, str]:
    """(status line, body) of the final answer on `sock`, after whatever of it was read already."""
    while b"\r\n\r\n" not in answer:
        answer += receive(sock)
    head, _, body = answer.partition(b"\r\n\r\n")
    size = int(re.search(rb"content-length: *(\d+)", head, re.IGNORECASE).group(1))  # type: ignore[union-attr]
    while len(body) < size:
        body += receive(sock)
    return head.split(b"\r\n")[0].decode(), body.decode()


def expect_continue(port: int, key: str, method: str, path: str, length: int) -> tuple[str, str]:
    """(status line, body) of a request that declares `length` bytes and sends none of them."""
    sock, answer = send_head(port, key, method, path, length)
    with sock:
        return read_answer(sock, answer)


def put_after_continue(sock: socket.socket, body: bytes) -> tuple[int, str]:
    """Send the body of a request that was told 100 Continue; (status, text) of its answer.

    The server may answer and stop reading before the whole body is sent:
    the answer is read either way.
    """
    with sock:
        try:
            sock.sendall(body)
        except OSError:
            pass
        status_line, text = read_answer(sock)
    return int(status_line.split()[1]), text


def pieces(data: bytes) -> Iterator[bytes]:
    """A body requests sends chunked (no Content-Length)."""
    for start in range(0, len(data), 1 << 20):
        yield data[start:start + (1 << 20)]


def test_a_full_disk_is_a_507_and_keeps_what_was_stored(small_disk: Path, tmp_path: Path) -> None:
    srv = RunningServer(small_disk / "data", config=write_config(tmp_path / "config.yaml", auth_failure_limit=0))
    _key_id, key = srv.create_key()
    # Larger than the room left, by less than the engine drains of an unread body (4 MiB),
    # so the client reads the answer instead of a reset.
    big = os.urandom((DISK_MB + 2) << 20)
    kept = os.urandom(1 << 20)
    try:
        srv.start()
        with requests.Session() as s:
            s.auth = (key, "")
            assert s.put(f"{srv.url}/kept.bin", data=kept, timeout=30).status_code == 201
            assert s.put(f"{srv.url}/photo.png", data=PNG, timeout=30).status_code == 201
            # A body declared larger than the free space is refused before it is sent.
            for path in ("/kept.bin", "/api/v1/images?name=rest.bin"):
                status_line, text = expect_continue(srv.port, key, "PUT" if path == "/kept.bin" else "POST", path, 12 << 20)
                assert status_line.split()[1] == "507", (path, status_line, text)  # not "100 Continue" first
                assert "12582912 bytes do not fit" in text, text
            # A chunked body says no length: the disk fills as it comes (WsgiDAV's PUT).
            r = s.put(f"{srv.url}/kept.bin", data=pieces(big), timeout=30)
            assert (r.status_code, r.text) == (507, FULL), f"chunked: {r.status_code} {r.text!r}"
            # Two uploads that each fit, but not together (the plain PUT): both are let in before
            # either body is sent, so the disk fills mid-body.
            halves = {f"half{i}.bin": os.urandom(9 << 19) for i in range(2)}  # 4.5 MiB each, about 6.9 free
            waiting = {}
            for name, body in halves.items():
                sock, answer = send_head(srv.port, key, "PUT", f"/{name}", len(body))
                assert answer.startswith(b"HTTP/1.1 100 "), (name, answer)
                waiting[name] = sock
            with ThreadPoolExecutor(2) as pool:
                answers = dict(zip(halves, pool.map(lambda n: put_after_continue(waiting[n], halves[n]), halves)))
            # One of them, or both if each had part of its body on disk when the space ran out.
            assert any(status == 507 for status, _ in answers.values()), answers
            for name, (status, text) in answers.items():
                assert status == 201 or (status, text) == (507, FULL), (name, status, text)
                got = s.get(f"{srv.url}/{name}", timeout=30)
                assert (got.status_code, got.content) == ((200, halves[name]) if status == 201 else (404, got.content))
                if status == 201:
                    assert s.delete(f"{srv.url}/{name}", timeout=30).status_code == 204
            assert s.get(f"{srv.url}/kept.bin", timeout=30).content == kept
            assert s.get(f"{srv.url}/rest.bin", timeout=30).status_code == 404
            assert os.listdir(srv.data_dir / "staging") == [], "a refused upload left its staged file"
            # With the disk filled to the last byte, the other writes are refused the same way.
            filler = fill(small_disk / "filler")
            proppatch = (
                b'<?xml version="1.0" encoding="utf-8"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:x">'
                b"<D:set><D:prop><Z:note>" + b"n" * 5000 + b"</Z:note></D:prop></D:set></D:propertyupdate>"
            )
            for method, path, body in (("PUT", "/small.txt", b"x" * 5000), ("LOCK", "/kept.bin", LOCK_BODY)):
                r = s.request(method, f"{srv.url}{path}", data=body, timeout=30)
                assert (r.status_code, r.reason) == (507, "Insufficient Storage"), f"{method}: {r.status_code} {r.text!r}"
            # A thumbnail that cannot be kept is still served (and made again next time).
            r = s.get(f"{srv.url}/api/v1/images/photo.png/thumbnail", params={"size": 64}, timeout=30)
            assert r.status_code == 200 and r.content, r.text
            # PROPPATCH answers per property (RFC 4918 9.2): 207, with that property's 507.
            r = s.request("PROPPATCH", f"{srv.url}/kept.bin", data=proppatch, timeout=30)
            assert r.status_code == 207 and "<D:status>HTTP/1.1 507 " in r.text, r.text
            assert "OSError" not in r.text and "Source exception" not in r.text, r.text
            filler.unlink()
            # Room for a JPEG's upload but not for its smaller copy: stored as it came, not refused.
            filler = fill(small_disk / "filler", leave=len(JPEG) + (len(JPEG) >> 1))
            assert s.put(f"{srv.url}/photo.jpg", data=JPEG, timeout=30).status_code == 201
            assert s.get(f"{srv.url}/photo.jpg", timeout=30).content == JPEG
            assert os.listdir(srv.data_dir / "staging") == [], "the codec's unwritten copy was left behind"
            filler.unlink()
            # The room the refused uploads took is free again.
            assert s.put(f"{srv.url}/after.bin", data=kept, timeout=30).status_code == 201
        log = srv.log()
        assert "refused a write: [Errno 28] No space left on device" in log
        assert "thumbnail of photo.png served without keeping it" in log
        assert "copy not written (No space left on device), stored as uploaded" in log
    finally:
        srv.stop()


def test_a_failing_write_is_the_servers_and_a_broken_body_the_clients() -> None:
    """UploadBody tells the two apart: only an error reading the body is a 400."""
    import errno

    from wsgidav.dav_error import DAVError

    from providers.collection import UploadBody

    class FailingUpload:
        def write(self, data: bytes) -> int:
            raise OSError(errno.EIO, "Input/output error")

    class Upload:
        def write(self, data: bytes) -> int:
            return len(data)

    def broken() -> Iterator[bytes]:
        yield b"x"
        raise ValueError("chunk size is not a number")

    with pytest.raises(OSError, match="Input/output error"):
        UploadBody(FailingUpload()).writelines([b"x"])  # type: ignore[arg-type]
    with pytest.raises(DAVError) as refused:
        UploadBody(Upload()).writelines(broken())  # type: ignore[arg-type]
    assert refused.value.value == 400 and "unusable request body" in str(refused.value.context_info)


def test_a_short_write_is_finished_not_counted_as_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write to a filling disk may take only part of the bytes; the upload must write the rest (or fail)."""
    from uss_dav.storage import Upload

    real_write = os.write

    def short(fd: int, data: Any) -> int:
        """At most 1000 bytes per write, as a filling disk may take."""
        return real_write(fd, bytes(data[:1000]))

    monkeypatch.setattr(os, "write", short)
    upload = Upload(str(tmp_path), "cid", ["x.bin"])
    body = os.urandom(5000)
    upload.write(body)
    upload.copy_from(io.BytesIO(b"tail" * 600), 1024)
    upload.release()
    assert Path(upload.path).read_bytes() == body + b"tail" * 600
    assert upload.length == len(body)
