"""Stock WsgiDAV, the benchmark's baseline: cheroot + WsgiDAVApp + FilesystemProvider.

Nothing from uss_dav is imported. Settings are WsgiDAV's defaults except:
Basic auth only (SimpleDomainController, one user), lock storage on, the
HTML directory browser off, quiet logging, and cheroot with the same thread
count and socket timeout as uss_dav.

    python bench/stock_server.py --root DIR --port PORT --user U --password P

Stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

from cheroot import wsgi
from wsgidav.fs_dav_provider import FilesystemProvider
from wsgidav.wsgidav_app import WsgiDAVApp


def build_app(root: str, user: str, password: str) -> WsgiDAVApp:
    config = {
        "provider_mapping": {"/": FilesystemProvider(root)},
        "http_authenticator": {
            "domain_controller": None,  # SimpleDomainController
            "accept_basic": True,
            "accept_digest": False,
            "default_to_digest": False,
        },
        "simple_dc": {"user_mapping": {"*": {user: {"password": password}}}},
        "lock_storage": True,
        "dir_browser": {"enable": False},
        "verbose": 1,
        "logging": {"enable": False},
    }
    return WsgiDAVApp(config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--timeout", type=int, default=60)
    args = parser.parse_args()

    server = wsgi.Server(
        (args.host, args.port),
        build_app(args.root, args.user, args.password),
        numthreads=args.threads,
        timeout=args.timeout,
        server_name="stock-wsgidav",
    )

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    print(f"stock WsgiDAV serving {args.root} on http://{args.host}:{args.port}/", file=sys.stderr, flush=True)
    try:
        server.safe_start()  # stops the server, then re-raises the KeyboardInterrupt
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
