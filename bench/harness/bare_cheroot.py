"""Bare cheroot: the ceiling for any WSGI app on cheroot that keeps uss_dav's durability.

No WebDAV, no locks, no properties, no records: a WSGI app that checks one
Authorization header and answers OPTIONS, MKCOL, GET and PUT on a folder.
PUT does what issue 3 asks of every upload and nothing more: stream the
body into a staging file on the same file system, fsync it, rename it into
place and fsync the folder. GET reads the file and returns it (small files
as one piece, big ones in 1 MiB pieces). What this server reaches is what
cheroot itself plus that durable write cost; uss_dav cannot beat it, so
bench.load --bare shows how far a bar is from what is possible here.

    python -m bench.harness.bare_cheroot --root DIR --port PORT --auth 'Basic ...'

Stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from typing import Any

from bench.harness.cheroot_app import serve, server_args

BLOCK = 1 << 20


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _chunks(fd: int) -> Iterator[bytes]:
    try:
        while chunk := os.read(fd, BLOCK):
            yield chunk
    finally:
        os.close(fd)


def build_app(root: str, auth: str) -> Callable[..., Any]:
    staging = os.path.join(root, ".staging")
    os.makedirs(staging, exist_ok=True)
    serial = itertools.count()  # next() on a count is atomic under the GIL

    def reply(start_response: Callable[..., Any], status: str, body: bytes = b"") -> list[bytes]:
        start_response(status, [("Content-Length", str(len(body)))])
        return [body]

    def put(environ: dict[str, Any], path: str, start_response: Callable[..., Any]) -> list[bytes]:
        existed = os.path.exists(path)
        tmp = os.path.join(staging, f"{os.getpid()}-{next(serial)}.part")
        left = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"]
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            while left > 0 and (chunk := body.read(min(left, BLOCK))):
                os.write(fd, chunk)
                left -= len(chunk)
            os.fsync(fd)
        finally:
            os.close(fd)
        if left:
            os.unlink(tmp)
            return reply(start_response, "400 Bad Request", b"incomplete body\n")
        os.replace(tmp, path)
        _fsync_dir(os.path.dirname(path))
        return reply(start_response, "204 No Content" if existed else "201 Created")

    def get(path: str, start_response: Callable[..., Any]) -> Any:
        try:
            fd = os.open(path, os.O_RDONLY)
        except (FileNotFoundError, IsADirectoryError):
            return reply(start_response, "404 Not Found", b"not found\n")
        size = os.fstat(fd).st_size
        headers = [("Content-Length", str(size)), ("Content-Type", "application/octet-stream")]
        start_response("200 OK", headers)
        if size <= BLOCK:
            try:
                return [os.read(fd, size)]
            finally:
                os.close(fd)
        return _chunks(fd)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ.get("HTTP_AUTHORIZATION") != auth:
            return reply(start_response, "401 Unauthorized", b"no\n")
        rel = environ.get("PATH_INFO", "/")
        if ".." in rel.split("/"):
            return reply(start_response, "400 Bad Request", b"dot-dot\n")
        path = os.path.join(root, rel.lstrip("/"))
        method = environ["REQUEST_METHOD"]
        if method == "OPTIONS":
            return reply(start_response, "200 OK")
        if method == "MKCOL":
            try:
                os.mkdir(path)
            except FileExistsError:
                return reply(start_response, "405 Method Not Allowed", b"exists\n")
            return reply(start_response, "201 Created")
        if method == "PUT":
            return put(environ, path, start_response)
        if method == "GET":
            return get(path, start_response)
        return reply(start_response, "405 Method Not Allowed", b"not here\n")

    return app


def main() -> None:
    parser = server_args(__doc__.splitlines()[0])
    parser.add_argument("--auth", required=True, help="the exact Authorization header to accept")
    args = parser.parse_args()
    serve(build_app(args.root, args.auth), args, "bare-cheroot")


if __name__ == "__main__":
    main()
