"""What the benchmark's own servers share: their command line and a cheroot run until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable
from typing import Any

from cheroot import wsgi


def server_args(description: str) -> argparse.ArgumentParser:
    """--root, --host, --port, and cheroot's --threads and --timeout, the same defaults as uss_dav's."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--root", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--timeout", type=int, default=60)
    return parser


def serve(app: Callable[..., Any], args: argparse.Namespace, name: str) -> None:
    """Run `app` under cheroot on args.host:args.port until SIGTERM or SIGINT."""
    server = wsgi.Server(
        (args.host, args.port), app, numthreads=args.threads, timeout=args.timeout, server_name=name
    )

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    print(f"{name} serving {args.root} on http://{args.host}:{args.port}/", file=sys.stderr, flush=True)
    try:
        server.safe_start()  # stops the server, then re-raises the KeyboardInterrupt
    except KeyboardInterrupt:
        pass
