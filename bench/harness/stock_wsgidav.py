"""Stock WsgiDAV, the benchmark's baseline: cheroot + WsgiDAVApp + FilesystemProvider.

Nothing from uss_dav is imported. Settings are WsgiDAV's defaults except:
Basic auth only (SimpleDomainController, one user), lock storage on, the
HTML directory browser off, quiet logging, and cheroot with the same thread
count and socket timeout as uss_dav.

    python -m bench.harness.stock_wsgidav --root DIR --port PORT --user U --password P

Stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

from wsgidav.fs_dav_provider import FilesystemProvider
from wsgidav.wsgidav_app import WsgiDAVApp

from bench.harness.cheroot_app import serve, server_args


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
    parser = server_args(__doc__.splitlines()[0])
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    args = parser.parse_args()
    serve(build_app(args.root, args.user, args.password), args, "stock-wsgidav")


if __name__ == "__main__":
    main()
