"""Runs the application under cheroot until SIGINT or SIGTERM."""

from __future__ import annotations

import logging
import signal
import sys
from typing import Any

from cheroot import wsgi

from uss_dav.app import Services, build_app, open_services
from uss_dav.config import Config

log = logging.getLogger(__name__)


def greet_first_key(services: Services) -> None:
    """On an empty data directory, make a key and show how to use it, once."""
    if services.keys.list():
        return
    record, key = services.keys.create("first key")
    services.store.ensure_collection(record.collection)
    url = f"http://{services.config.host}:{services.config.port}/"
    print(
        "\nNo API key existed, so one was made. It is shown only this once:\n\n"
        f"    {key}\n\n"
        "Try it:\n"
        f"    curl -u '{key}:' -T photo.jpg {url}\n"
        f"    curl -u '{key}:' -O {url}photo.jpg\n"
        f"    rclone ls :webdav: --webdav-url {url} --webdav-bearer-token '{key}'\n",
        flush=True,
    )


def _interrupt(signum: int, frame: Any) -> None:
    """SIGTERM stops the server the way Ctrl-C does."""
    raise KeyboardInterrupt


def serve(config: Config) -> None:
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # WsgiDAV turns propagation off at import; its request log belongs in ours.
    logging.getLogger("wsgidav").propagate = True
    services = open_services(config)
    services.store.sweep_staging()
    greet_first_key(services)
    server = wsgi.Server(
        (config.host, config.port),
        build_app(services),
        numthreads=config.threads,
        timeout=int(config.socket_timeout),
        server_name="uss_dav",
    )
    server.max_request_header_size = config.max_header_bytes
    signal.signal(signal.SIGTERM, _interrupt)
    log.info("serving %s on http://%s:%d/", config.data_dir, config.host, config.port)
    try:
        server.safe_start()
    except KeyboardInterrupt:
        log.info("stopped")
    finally:
        server.stop()
        services.close()
