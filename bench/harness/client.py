"""One client connection of the load generator."""

from __future__ import annotations

import http.client
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.harness.servers import ServerUnderTest

MIB = 1 << 20


@dataclass
class Result:
    status: int  # -1: exception
    nbytes: int = 0
    body: bytes = b""


class Conn:
    """One persistent HTTP/1.1 connection with the server's credentials (http.client reopens it if closed)."""

    def __init__(self, server: ServerUnderTest, timeout: float) -> None:
        self.server = server
        self.conn = http.client.HTTPConnection(server.host, server.port, timeout=timeout)
        self.buf = bytearray(MIB)
        self.last = ""  # the last request and its status, for the slow-request report

    def call(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
             keep_body: bool = True) -> Result:
        """Send one request; read the whole answer (without `keep_body`, count a 2xx body's bytes only)."""
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
            while got := resp.readinto(view):
                n += got
            return Result(resp.status, n)
        except (OSError, http.client.HTTPException) as exc:
            self.conn.close()
            self.last += f" -> {type(exc).__name__}"
            return Result(-1, 0, f"{type(exc).__name__}: {exc}".encode())

    def close(self) -> None:
        self.conn.close()
