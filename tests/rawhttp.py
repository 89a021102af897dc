"""Raw HTTP/1.x over a socket: send exact bytes, read every response back (the hostile and framing tables)."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

CASE_TIMEOUT = 10.0


@dataclass
class Response:
    status: int
    reason: bytes
    headers: dict[str, str]
    body: bytes


@dataclass
class Exchange:
    raw: bytes
    responses: list[Response]
    elapsed: float
    timed_out: bool
    send_error: str | None
    closed: bool
    #: Bytes after the last response that are no response at all.
    leftover: bytes = b""

    @property
    def statuses(self) -> list[int]:
        """The status of each response, then -1 if something that is not a response followed."""
        return [r.status for r in self.responses] + ([-1] if self.leftover else [])

    @property
    def final(self) -> list[Response]:
        return [r for r in self.responses if r.status >= 200]

    def describe(self) -> str:
        head = self.raw[:1500].decode("latin-1")
        return (
            f"statuses={[r.status for r in self.responses]} elapsed={self.elapsed:.2f}s "
            f"timed_out={self.timed_out} send_error={self.send_error} closed={self.closed}\n"
            f"--- raw response (first 1500 bytes) ---\n{head}"
        )


def parse_responses(data: bytes, head: bool = False) -> list[Response]:
    """Split a byte stream into HTTP/1.x responses (Content-Length, chunked or until close)."""
    return split_responses(data, head)[0]


def split_responses(data: bytes, head: bool = False) -> tuple[list[Response], bytes]:
    """The responses at the start of a byte stream, and whatever follows them that is no response."""
    out: list[Response] = []
    pos = 0
    while pos < len(data):
        while data.startswith(b"\r\n", pos):
            pos += 2
        end = data.find(b"\r\n\r\n", pos)
        if end < 0 or not data.startswith(b"HTTP/", pos):
            break
        lines = data[pos:end].split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        try:
            status = int(parts[1])
        except (IndexError, ValueError):
            break
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
        pos = end + 4
        body = b""
        if status < 200 or status in (204, 304) or head:
            pass
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            while True:
                eol = data.find(b"\r\n", pos)
                if eol < 0:
                    pos = len(data)
                    break
                size = int(data[pos:eol].split(b";")[0] or b"0", 16)
                pos = eol + 2
                if size == 0:
                    trailer_end = data.find(b"\r\n", pos)
                    pos = len(data) if trailer_end < 0 else trailer_end + 2
                    break
                body += data[pos:pos + size]
                pos += size + 2
        elif "content-length" in headers:
            n = int(headers["content-length"])
            body = data[pos:pos + n]
            pos += n
        else:
            body = data[pos:]
            pos = len(data)
        out.append(Response(status, parts[2] if len(parts) > 2 else b"", headers, body))
    return out, data[pos:].lstrip(b"\r\n")


def exchange(port: int, data: bytes, *, timeout: float = CASE_TIMEOUT, shut: bool = True, head: bool = False) -> Exchange:
    """Send `data` on a new connection, half-close, read until EOF or `timeout`."""
    start = time.monotonic()
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    send_error = None
    received = b""
    timed_out = closed = False
    try:
        try:
            sock.sendall(data)
            if shut:
                sock.shutdown(socket.SHUT_WR)
        except OSError as exc:  # the server may answer (413, 400) and close before reading everything
            send_error = repr(exc)
        deadline = start + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                timed_out = True
                break
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            received += chunk
    finally:
        sock.close()
    responses, leftover = split_responses(received, head)
    return Exchange(received, responses, time.monotonic() - start, timed_out, send_error, closed, leftover)
