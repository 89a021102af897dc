"""Runs the application under cheroot until SIGINT or SIGTERM."""

from __future__ import annotations

import logging
import signal
import sys
from typing import Any

import ipaddress

from cheroot import wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter

from uss_dav.app import Services, build_app, open_services
from uss_dav.config import Config

log = logging.getLogger(__name__)


def greet_first_key(services: Services) -> None:
    """On an empty data directory, make a key and show how to use it, once."""
    if services.keys.list():
        return
    record, key = services.keys.create("first key")
    services.store.ensure_collection(record.collection)
    scheme = "https" if services.config.tls.enabled else "http"
    url = f"{scheme}://{services.config.host}:{services.config.port}/"
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


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def warn_if_exposed(config: Config) -> None:
    """Keys must not cross a network in clear, and key management needs a token off loopback."""
    if is_loopback(config.host):
        return
    if not config.tls.enabled:
        log.warning("listening on %s without TLS: API keys travel in clear; set tls.cert and tls.key", config.host)
    if not config.admin_token:
        log.warning("listening on %s without admin_token: only loopback clients can manage keys", config.host)


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
    if config.tls.enabled:
        server.ssl_adapter = BuiltinSSLAdapter(config.tls.cert, config.tls.key)
    warn_if_exposed(config)
    signal.signal(signal.SIGTERM, _interrupt)
    scheme = "https" if config.tls.enabled else "http"
    log.info("serving %s on %s://%s:%d/", config.data_dir, scheme, config.host, config.port)
    try:
        server.safe_start()
    except KeyboardInterrupt:
        log.info("stopped")
    finally:
        server.stop()
        services.close()
