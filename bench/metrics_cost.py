"""Time the /metrics layer (uss_dav.metrics.observed) per request, in-process, without a server or a socket.

    python -m bench.metrics_cost [--requests 200000] [--single-process]

Calls a trivial WSGI app (a 10 KiB body with its Content-Length, as a GET
answers) directly and wrapped by `observed`, the way cheroot's gateway
does (call, iterate, close), with a fake environ, and prints microseconds
per request for both and their difference: what the layer costs a GET.
By default PROMETHEUS_MULTIPROC_DIR is set first, as the server does for
its two serving processes; --single-process leaves it unset.
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BODY = b"x" * 10240
ENVIRON = {
    "REQUEST_METHOD": "GET",
    "PATH_INFO": "/photos/a.jpg",
    "SCRIPT_NAME": "",
    "QUERY_STRING": "",
    "REMOTE_ADDR": "127.0.0.1",
    "HTTP_AUTHORIZATION": "Basic eDo=",
    "CONTENT_LENGTH": "",
    "wsgi.url_scheme": "http",
}


def inner(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """What the layer wraps: a GET's answer, with its length declared."""
    start_response("200 OK", [("Content-Type", "image/jpeg"), ("Content-Length", str(len(BODY)))])
    return [BODY]


def _start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
    return None


def per_request(app: Callable[..., Any], n: int) -> float:
    """Microseconds per request: call, iterate and close, as cheroot's gateway does."""
    gc.collect()
    started = time.perf_counter()
    for _ in range(n):
        body = app(dict(ENVIRON), _start_response)
        for _chunk in body:
            pass
        close = getattr(body, "close", None)
        if close is not None:
            close()
    return (time.perf_counter() - started) / n * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5, help="best of this many (the machine is shared)")
    parser.add_argument("--single-process", action="store_true", help="leave PROMETHEUS_MULTIPROC_DIR unset")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="uss-metrics-cost-") as tmp:
        if not args.single_process:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(Path(tmp) / "prom")
            (Path(tmp) / "prom").mkdir()
        # Imported after the variable is set, as in a serving process.
        from uss_dav.config import load_config
        from uss_dav.metrics import observed
        from uss_dav.services import open_services

        services = open_services(load_config(None, {"data_dir": Path(tmp) / "data"}, environ={}), with_hook=False)
        wrapped = observed(inner, services)
        bare = min(per_request(inner, args.requests) for _ in range(args.rounds))
        layered = min(per_request(wrapped, args.requests) for _ in range(args.rounds))
        close = getattr(wrapped, "close", None)
        if close is not None:
            close()
        services.close()
    mode = "single process" if args.single_process else "multi-process files"
    print(f"{mode}: bare {bare:.2f} µs, observed {layered:.2f} µs, the layer {layered - bare:.2f} µs per request")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
