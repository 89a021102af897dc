"""Start uss_dav: parse arguments, build the app, serve."""

import argparse
import sys

from uss_dav.cli import add_common_options
from uss_dav.config import ConfigError, load_config
from uss_dav.server import serve


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve uss_dav (WebDAV + REST) from config.yaml.")
    add_common_options(parser)
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--workers", type=int, help="serving processes sharing the port (0: one per CPU core)")
    args = parser.parse_args()
    overrides = {"host": args.host, "port": args.port, "data_dir": args.data_dir, "workers": args.workers}
    try:
        config = load_config(args.config, overrides)
    except ConfigError as exc:
        sys.exit(str(exc))
    serve(config)


if __name__ == "__main__":  # the image workers re-import this module
    main()
