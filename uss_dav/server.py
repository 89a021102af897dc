"""Runs the application under uss_dav.engine until SIGINT or SIGTERM."""

from __future__ import annotations

import contextlib
import ctypes
import faulthandler
import ipaddress
import logging
import os
import signal
import ssl
import sys
import time
from collections.abc import Callable
from typing import Any

from uss_dav.app import build_app
from uss_dav.config import Config
from uss_dav.engine.listener import HttpServer
from uss_dav.lifeline import codec_processes_watch_me, die_with_parent
from uss_dav.locks import MODE as LOCK_MODE
from uss_dav.metrics import multiprocess_dir
from uss_dav.nodes import NodeConflict, join
from uss_dav.private_tmp import private_tmp
from uss_dav.services import Services, open_services
from uss_dav.sweeper import StagingSweeper

log = logging.getLogger(__name__)

#: glibc's mallopt parameter for the number of malloc arenas.
M_ARENA_MAX = -8


def greet_first_key(services: Services) -> None:
    """On an empty data directory, make a key and show how to use it, once."""
    if services.keys.list():
        return
    _record, key = services.create_key("first key")
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


#: The signals that stop a serving process (SIGTERM from a process manager or the parent, Ctrl-C).
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def _interrupt(signum: int, frame: Any) -> None:
    """SIGTERM stops a serving process the way Ctrl-C does, once.

    A second one (a process manager and the supervisor both send one) is
    ignored from here on, so it cannot cut short the drain, nor the log
    line before it.
    """
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    raise KeyboardInterrupt


class StopNoted:
    """A signal handler that notes a stop signal, for a stretch that must not be cut short.

    Blocking the signals there is not enough: the codecs' numpy starts
    native threads at import, which do not block them, and a signal one of
    them takes still runs Python's handler in the main thread, masked or not.
    """

    def __init__(self) -> None:
        self.signum = 0

    def __call__(self, signum: int, frame: Any) -> None:
        self.signum = signum


def is_loopback_host(host: str) -> bool:
    """Whether a listening address (a name or an IP) is this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def warn_if_exposed(config: Config) -> None:
    """Keys must not cross a network in clear, and key management needs a token off loopback."""
    if is_loopback_host(config.host):
        return
    if not config.tls.enabled:
        log.warning("listening on %s without TLS: API keys travel in clear; set tls.cert and tls.key", config.host)
    if not config.admin_token:
        log.warning("listening on %s without admin_token: only loopback clients can manage keys", config.host)


def make_server(config: Config, services: Services, *, reuse_port: bool) -> HttpServer:
    context = None
    if config.tls.enabled:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(config.tls.cert, config.tls.key)
    return HttpServer(
        build_app(services),
        config.host,
        config.port,
        threads=config.threads,
        timeout=config.socket_timeout,
        max_header_bytes=config.max_header_bytes,
        ssl_context=context,
        reuse_port=reuse_port,
        multiprocess=reuse_port,
    )


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's per-thread malloc arenas.

    Each request thread that rebuilds an exact-mode JPEG (tens of MB) would
    otherwise keep its own arena of that size: RSS grew from 54 to 764 MiB
    over 20 such GETs on 16 threads; with two arenas it stays near 120 MiB.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_ARENA_MAX, arenas)
    except (OSError, AttributeError):
        pass  # not glibc: nothing to tune


def run_serving_process(config: Config, *, reuse_port: bool = False) -> None:
    """One serving process: the app under the engine until SIGTERM or Ctrl-C, even one sent while it starts.

    A forked one inherits the parent's handlers with its stop signals
    blocked (Supervisor.spawn); its own handlers come first, then the
    signals are let through, so a SIGTERM sent meanwhile stops it here
    rather than running the parent's handler in the child and being lost.
    """
    for sig in STOP_SIGNALS:
        signal.signal(sig, _interrupt)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    services: Services | None = None
    server: HttpServer | None = None
    sweeper: StagingSweeper | None = None
    try:
        limit_malloc_arenas()
        codec_processes_watch_me()
        services = open_services(config)
        server = make_server(config, services, reuse_port=reuse_port)
        sweeper = StagingSweeper(services.store.sweep_staging, config.staging_sweep_interval).start()
        server.serve_forever()
    except KeyboardInterrupt:
        log.info("stopped")
    finally:
        if sweeper is not None:
            sweeper.stop()
        if server is not None:
            server.stop()
        if services is not None:
            services.close()


class Supervisor:
    """Forks `workers` serving processes that share the port (SO_REUSEPORT).

    SIGTERM (or Ctrl-C) is passed on to every worker, which drains and stops;
    a worker that dies otherwise is replaced, and what its uploads left in
    staging/ is swept then (its locks died with it; a long-running server
    would otherwise keep a crashed worker's partial uploads until it
    restarts). A parent that dies (even by SIGKILL) takes its workers with
    it at once (uss_dav.lifeline), so no worker outlives the pid a process
    manager watches; the next start sweeps what they left. The parent
    serves nothing and holds no state a worker needs: everything, locks
    included, is on the data directory.
    """

    def __init__(self, config: Config, sweep: Callable[[], int]) -> None:
        self.config = config
        self.sweep = sweep
        self.serving: dict[int, float] = {}
        self.stopping = False

    def spawn(self) -> None:
        parent = os.getpid()
        # Blocked across the fork: until the child has its own handlers, a SIGTERM would run this
        # object's stop() in it (a copy that signals the siblings) and the child would serve on.
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    die_with_parent(parent)
                    run_serving_process(self.config, reuse_port=True)
                except BaseException:
                    log.exception("serving process failed")
                    code = 1
                finally:
                    os._exit(code)
            self.serving[pid] = time.monotonic()  # stop() passes a stop signal on to it from here on
            if self.stopping:
                # One handled between the fork and the line above (the mask does not hold it
                # back: see StopNoted) missed this child; it stops once its handlers are set.
                os.kill(pid, signal.SIGTERM)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)

    def stop(self, signum: int, frame: Any) -> None:
        self.stopping = True
        for pid in self.serving:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        for _ in range(self.config.processes):
            if self.stopping:
                break
            self.spawn()
        while self.serving:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            started = self.serving.pop(pid, None)
            if started is None or self.stopping:
                continue
            log.error("serving process %d ended (status %d); starting another", pid, status)
            if time.monotonic() - started < 1.0:
                time.sleep(1.0)  # do not spin on a serving process that dies at start
            if self.stopping:
                continue  # stopped during that second: no replacement
            self.spawn()
            try:
                self.sweep()
            except OSError as exc:  # the next replacement or start tries again
                log.warning("sweeping staging/ after a lost serving process failed: %s", exc)
        log.info("stopped")


def serve(config: Config) -> None:
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # WsgiDAV turns propagation off at import; its request log belongs in ours.
    logging.getLogger("wsgidav").propagate = True
    # `kill -USR1 <pid>` writes that process's thread stacks to the log, to see where a hung
    # request waits without stopping the server; forked serving processes inherit it.
    faulthandler.register(signal.SIGUSR1, all_threads=True, chain=False)
    # Once this server has a node record, a stop signal must not end it before the record is
    # left. While the record is written, a stop signal is only noted (see StopNoted); from
    # then until the serving code takes the signals over, one stops the start as Ctrl-C does.
    noted = StopNoted()
    for sig in STOP_SIGNALS:
        signal.signal(sig, noted)
    try:
        membership = join(config.data_dir, LOCK_MODE)  # held until every process of this server ends
    except NodeConflict as exc:
        sys.exit(f"uss_dav: refusing to start: {exc}")
    except OSError as exc:  # the data directory is read-only, full or not ours to write
        sys.exit(f"uss_dav: refusing to start: cannot write its node record in {config.data_dir}: {exc.strerror}")
    try:
        for sig in STOP_SIGNALS:
            signal.signal(sig, _interrupt)
        if noted.signum:
            raise KeyboardInterrupt
        # What this server and its processes put in the temporary folder goes in a folder of
        # its own, which the next start removes if this one is killed (uss_dav.private_tmp).
        with private_tmp():
            _serve(config)
    except KeyboardInterrupt:
        log.info("stopped while starting")
    finally:
        membership.leave()


def _serve(config: Config) -> None:
    setup = open_services(config, with_hook=False)
    setup.store.sweep_staging()
    if flat := setup.store.sweep_flat_thumbnails():
        log.info("removed %d thumbnails kept in the flat layout of earlier versions", flat)
    greet_first_key(setup)
    warn_if_exposed(config)
    scheme = "https" if config.tls.enabled else "http"
    log.info(
        "serving %s on %s://%s:%d/ with %d serving process(es)", config.data_dir, scheme, config.host, config.port, config.processes
    )
    if config.processes == 1:
        run_serving_process(config)
        return
    # Before the fork: every serving process must write its counts where /metrics sums them.
    with multiprocess_dir():
        Supervisor(config, setup.store.sweep_staging).run()
