"""Operations: /metrics in Prometheus text format, and an id for every request.

    observed(app, services) -> WSGI app   # the outermost layer, built by uss_dav.app.build_app

Every request gets an id (a sane incoming X-Request-Id, else a new one),
returned as X-Request-Id and appended to the request's log line (WsgiDAV's
and REST's, through RequestIdFilter). Counted per request: method and
status, latency, body bytes in and out. Counted where they happen:
compression savings and codec fall-backs (around the store's write hook),
failed authentications (around the failure counter). The number of
rate-limited clients is read from the data directory at scrape time, so
every serving process reports the same figure.

With several serving processes, prometheus_client's multi-process mode
sums their counters: it is on when PROMETHEUS_MULTIPROC_DIR is set before
the serving processes start (multiprocess_dir, entered by the parent
once at start). prometheus_client reads that variable when first imported,
so it is imported here lazily, never at module import.

/metrics answers loopback clients without a key, and anyone with the admin
token; other clients get 403 (401 with a challenge when an admin token is
configured). A request to /metrics carrying any other credentials is
WebDAV's: a file named `metrics` stays reachable by its owner.
"""

from __future__ import annotations

import contextlib
import contextvars
import hmac
import itertools
import logging
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from uss_dav.auth import presented_key
from uss_dav.responses import text_response
from uss_dav.rest.access import is_loopback
from uss_dav.services import Services
from uss_dav.vocabulary import REQUEST_ID, SENDFILE

log = logging.getLogger(__name__)

METRICS_PATH = "/metrics"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Incoming ids kept as they are: what proxies and tracers send (UUIDs, hex, base64url), no spaces or quotes.
_SANE_ID = re.compile(r"[A-Za-z0-9._:+/=-]{1,128}")
#: Methods counted under their own name; anything else is "other" (label values stay few).
METHODS = frozenset(
    ["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS", "PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK"]
)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

_current_id: contextvars.ContextVar[str] = contextvars.ContextVar("uss_request_id", default="-")


@contextlib.contextmanager
def multiprocess_dir() -> Iterator[Path]:
    """A fresh directory where every serving process of this server writes its counts, for as long as it serves.

    The serving parent enters it before it forks: the workers inherit the
    variable, and counts of an earlier run are never summed in. It is private
    to this server (a temporary directory), never under the data directory,
    which other nodes share. An operator's own PROMETHEUS_MULTIPROC_DIR is
    used (and emptied) as it is, and left in place.
    """
    own = os.environ.get(MULTIPROC_ENV)
    if own:
        shutil.rmtree(own, ignore_errors=True)
        Path(own).mkdir(parents=True, exist_ok=True)
        yield Path(own)
        return
    with tempfile.TemporaryDirectory(prefix="uss_dav-metrics-") as made:
        os.environ[MULTIPROC_ENV] = made
        try:
            yield Path(made)
        finally:
            del os.environ[MULTIPROC_ENV]


class RequestIds:
    """Ids for requests that bring none: a random prefix per process, then a counter.

    Unique across processes and restarts without a system call per request
    (a random id each time cost an os.urandom on every GET).
    """

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(4)
        self._next = itertools.count(1)

    def __call__(self, environ: dict[str, Any]) -> str:
        """The client's X-Request-Id if it looks sane, else a new one."""
        incoming = environ.get("HTTP_X_REQUEST_ID", "")
        if incoming and _SANE_ID.fullmatch(incoming):
            return incoming
        return f"{self._prefix}{next(self._next) & 0xFFFFFFFF:08x}"  # 16 hex digits, as before


class RequestIdFilter(logging.Filter):
    """Appends the current request's id to the request log lines (WsgiDAV's and REST's)."""

    def filter(self, record: logging.LogRecord) -> bool:
        rid = _current_id.get()
        if rid != "-" and not getattr(record, "request_id", None):
            record.request_id = rid
            record.msg, record.args = f"{record.getMessage()} id={rid}", ()
        return True


#: The loggers that write one line per request.
REQUEST_LOGGERS = ("wsgidav.wsgidav_app", "uss_dav.rest.app")


def _install_log_filter() -> None:
    for name in REQUEST_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RequestIdFilter) for f in logger.filters):
            logger.addFilter(RequestIdFilter())


class Metrics:
    """The instruments of one serving process, and the exposition of all of them."""

    def __init__(self, services: Services) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram
        from prometheus_client.multiprocess import MultiProcessCollector

        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        own = None if self.multiprocess else CollectorRegistry(auto_describe=True)
        self.requests = Counter("uss_requests", "Requests answered, by method and status", ["method", "status"], registry=own)
        self.latency = Histogram(
            "uss_request_duration_seconds", "Time from request to last byte, by method", ["method"],
            buckets=LATENCY_BUCKETS, registry=own,
        )
        self.bytes_in = Counter("uss_request_body_bytes", "Request body bytes (declared or read)", registry=own)
        self.bytes_out = Counter("uss_response_body_bytes", "Response body bytes sent", registry=own)
        self.saved = Counter("uss_compression_saved_bytes", "Bytes compression saved on stored uploads", registry=own)
        self.fallbacks = Counter("uss_codec_fallbacks", "Uploads a codec failed or declined, stored otherwise", registry=own)
        self.auth_failures = Counter("uss_auth_failures", "Failed authentications (wrong key or admin token)", registry=own)
        if own is None:
            self.registry = CollectorRegistry()
            MultiProcessCollector(self.registry)
        else:
            self.registry = own
        self.registry.register(_RateLimited(services))
        self._by_status: dict[tuple[str, str], Any] = {}
        self._by_method: dict[str, Any] = {}

    def request_done(self, method: str, status: str, seconds: float) -> None:
        """Count one answered request; label children are looked up once per (method, status), not per request."""
        counter = self._by_status.get((method, status))
        if counter is None:
            counter = self._by_status[(method, status)] = self.requests.labels(method, status)
        timer = self._by_method.get(method)
        if timer is None:
            timer = self._by_method[method] = self.latency.labels(method)
        counter.inc()
        timer.observe(seconds)

    def exposition(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _RateLimited:
    """The number of client addresses over the failed-authentication limit, read at scrape time."""

    def __init__(self, services: Services) -> None:
        self.failures = services.failures

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        yield GaugeMetricFamily("uss_rate_limited_clients", "Client addresses now refused with 429", value=self.failures.limited())

    def describe(self) -> list[Any]:
        return []


class ObservedHook:
    """The store's write hook, with its savings and fall-backs counted."""

    def __init__(self, inner: Any, metrics: Metrics) -> None:
        self.inner, self.metrics = inner, metrics

    def process(self, path: str, mode: str, *, images_only: bool | None = None) -> Any:
        outcome = self.inner.process(path, mode, images_only=images_only)
        if getattr(outcome, "fallback", None):
            self.metrics.fallbacks.inc()
        stored = getattr(outcome, "stored_path", None)
        if stored:
            try:
                saved = os.path.getsize(path) - os.path.getsize(stored)
            except OSError:
                saved = 0
            if saved > 0:
                self.metrics.saved.inc(saved)
        return outcome

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class ObservedFailures:
    """The failed-authentication counter, with every failure counted for /metrics too."""

    def __init__(self, inner: Any, metrics: Metrics) -> None:
        self.inner, self.metrics = inner, metrics

    def fail(self, address: str) -> float | None:
        self.metrics.auth_failures.inc()
        return self.inner.fail(address)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class _Body:
    """The response body, passed through; counts and times it when the server closes it."""

    def __init__(self, inner: Iterable[bytes], done: Callable[[int], None], counted: bool) -> None:
        self.inner, self.done, self.counted, self.sent = inner, done, counted, 0

    def __iter__(self) -> Iterator[bytes]:
        if not self.counted:
            return iter(self.inner)
        return self._counting()

    def _counting(self) -> Iterator[bytes]:
        for chunk in self.inner:
            self.sent += len(chunk)
            yield chunk

    def close(self) -> None:
        try:
            close = getattr(self.inner, "close", None)
            if close:
                close()
        finally:
            self.done(self.sent)


class Observed:
    """The outermost WSGI layer: request ids, request metrics and the /metrics endpoint."""

    def __init__(self, app: Callable[..., Any], services: Services, metrics: Metrics) -> None:
        self.app, self.services, self.metrics = app, services, metrics
        self.request_id = RequestIds()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        started = time.perf_counter()
        rid = self.request_id(environ)
        environ[REQUEST_ID] = rid
        _current_id.set(rid)
        method = environ.get("REQUEST_METHOD", "")
        method = method if method in METHODS else "other"
        state: dict[str, Any] = {}

        def observe_start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            headers.append(("X-Request-Id", rid))
            state["status"] = status[:3]
            state["length"] = next((v for k, v in headers if k.lower() == "content-length"), None)
            return start_response(status, headers, exc_info)

        sendfile = environ.get(SENDFILE)
        if sendfile is not None:
            def counted_sendfile(fh: Any, count: int) -> int:
                sent = sendfile(fh, count)
                state["sendfile"] = state.get("sendfile", 0) + sent
                return sent

            environ[SENDFILE] = counted_sendfile

        declared = environ.get("CONTENT_LENGTH", "")
        if declared.isdigit() and declared != "0":  # each inc is a locked write to a shared file
            self.metrics.bytes_in.inc(int(declared))

        def done(iterated: int) -> None:
            self.metrics.request_done(method, state.get("status", "500"), time.perf_counter() - started)
            length = state.get("length")
            if iterated or length is None or not length.isdigit() or method == "HEAD":
                out = iterated + state.get("sendfile", 0)
            else:
                out = int(length)
            if out:
                self.metrics.bytes_out.inc(out)

        if self._is_scrape(environ):
            response = self._scrape(environ, observe_start)
        else:
            response = self.app(environ, observe_start)
        if type(response).__name__ == "FileBody":
            # The gateway sends it with sendfile only if it gets it as it is (uss_dav.gateway).
            done(0)
            return response
        # A body of declared length is counted from its header, not chunk by chunk.
        counted = state.get("length") is None
        return _Body(response, done, counted)

    def _is_scrape(self, environ: dict[str, Any]) -> bool:
        """GET or HEAD of /metrics without a body, and without credentials or with the admin token."""
        if environ.get("PATH_INFO") != METRICS_PATH or environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            return False
        if "HTTP_TRANSFER_ENCODING" in environ or environ.get("CONTENT_LENGTH", "") not in ("", "0"):
            return False
        return "HTTP_AUTHORIZATION" not in environ or self._is_admin(environ)

    def _is_admin(self, environ: dict[str, Any]) -> bool:
        token, presented = self.services.config.admin_token, presented_key(environ)
        if not token or presented is None:
            return False
        return hmac.compare_digest(presented.encode("utf-8", "surrogateescape"), token.encode("utf-8", "surrogateescape"))

    def _scrape(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        """The exposition for loopback clients and admin-token holders; 401/403 for anyone else."""
        if not (is_loopback(environ.get("REMOTE_ADDR")) or self._is_admin(environ)):
            if self.services.config.admin_token:
                challenge = [("WWW-Authenticate", f'Bearer realm="{self.services.config.realm} admin"')]
                return text_response(start_response, "401 Unauthorized", "admin token required", challenge)
            return text_response(
                start_response, "403 Forbidden", "/metrics is open to loopback clients only: no admin token is configured"
            )
        body, content_type = self.metrics.exposition()
        headers = [("Content-Type", content_type), ("Content-Length", str(len(body))), ("Cache-Control", "no-store")]
        start_response("200 OK", headers)
        return [] if environ["REQUEST_METHOD"] == "HEAD" else [body]


def observed(app: Callable[..., Any], services: Services) -> Callable[..., Any]:
    """`app` with request ids, request metrics and /metrics; counts savings, fall-backs and auth failures."""
    metrics = Metrics(services)
    if services.store.hook is not None:
        services.store.hook = ObservedHook(services.store.hook, metrics)
    services.failures = ObservedFailures(services.failures, metrics)  # type: ignore[assignment]
    _install_log_filter()
    return Observed(app, services, metrics)
