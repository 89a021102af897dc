"""Operations: /metrics in Prometheus text format, and an id for every request.

    observed(app, services) -> WSGI app   # the outermost layer, built by uss_dav.app.build_app

Every request gets an id (a sane incoming X-Request-Id, else a new one),
returned as X-Request-Id and appended to the request's log line (WsgiDAV's
and REST's, through RequestIdFilter). Counted per request: method and
status, latency, body bytes in and out. Counted where they happen:
compression savings and codec fall-backs (the store tells its listener),
failed authentications (the failure counter tells its listener); the
listener is the Services' Tally (uss_dav.tally), which holds every count
of a serving process in plain ints. The number of rate-limited clients is
read from the data directory at scrape time, so every serving process
reports the same figure.

With several serving processes, /metrics sums their counts: each writes
its totals to the directory named by PROMETHEUS_MULTIPROC_DIR (made by
multiprocess_dir, entered by the parent once at start) every 0.5 s and
when it stops, so a scrape shows the other processes' counts as of at most
0.5 s ago (its own at once). prometheus_client only renders the text.

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
from uss_dav.tally import LATENCY_BUCKETS, Tally
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
    """The exposition of every serving process's counts (their Tally files summed), and the rate-limited gauge."""

    def __init__(self, services: Services) -> None:
        from prometheus_client import CollectorRegistry

        self.tally, self.failures = services.tally, services.failures
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )
        from prometheus_client.utils import floatToGoString

        totals = self.tally.all_processes()
        requests = CounterMetricFamily("uss_requests", "Requests answered, by method and status", labels=["method", "status"])
        for (method, status), n in sorted(totals.requests.items()):
            requests.add_metric([method, status], n)
        yield requests
        latency = HistogramMetricFamily(
            "uss_request_duration_seconds", "Time from request to last byte, by method", labels=["method"]
        )
        bounds = [floatToGoString(b) for b in LATENCY_BUCKETS] + ["+Inf"]
        for method, counts in sorted(totals.latency.items()):
            cumulative = list(itertools.accumulate(counts))
            latency.add_metric([method], list(zip(bounds, cumulative)), totals.latency_sum.get(method, 0.0))
        yield latency
        for name, metric, doc in PLAIN_COUNTERS:
            yield CounterMetricFamily(metric, doc, value=totals.plain.get(name, 0))
        yield GaugeMetricFamily("uss_rate_limited_clients", "Client addresses now refused with 429", value=self.failures.limited())

    def exposition(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


#: The plain totals: Tally's name, the metric's name (without _total), its help.
PLAIN_COUNTERS = (
    ("bytes_in", "uss_request_body_bytes", "Request body bytes (declared or read)"),
    ("bytes_out", "uss_response_body_bytes", "Response body bytes sent"),
    ("saved", "uss_compression_saved_bytes", "Bytes compression saved on stored uploads"),
    ("fallbacks", "uss_codec_fallbacks", "Uploads a codec failed or declined, stored otherwise"),
    ("auth_failures", "uss_auth_failures", "Failed authentications (wrong key or admin token)"),
)


class _Exchange:
    """One request as the layer sees it: the status and length the app declares, then one count when it is done.

    One object with slots rather than a dict and three closures per request.
    """

    __slots__ = ("by_sendfile", "bytes_in", "forward", "length", "method", "rid", "sendfile", "started", "status", "tally")

    def __init__(self, tally: Tally, forward: Callable[..., Any], rid: str, method: str, started: float, bytes_in: int) -> None:
        self.tally, self.forward, self.rid, self.method, self.started, self.bytes_in = (
            tally, forward, rid, method, started, bytes_in,
        )
        self.status, self.by_sendfile = "500", 0
        self.length: str | None = None
        self.sendfile: Callable[[Any, int], int] | None = None

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        headers.append(("X-Request-Id", self.rid))
        self.status = status[:3]
        self.length = next((v for k, v in headers if k.lower() == "content-length"), None)
        return self.forward(status, headers, exc_info)

    def counted_sendfile(self, fh: Any, count: int) -> int:
        assert self.sendfile is not None
        sent = self.sendfile(fh, count)
        self.by_sendfile += sent
        return sent

    def done(self, iterated: int) -> None:
        length = self.length
        if iterated or length is None or not length.isdigit() or self.method == "HEAD":
            out = iterated + self.by_sendfile
        else:
            out = int(length)
        self.tally.request(self.method, self.status, time.perf_counter() - self.started, self.bytes_in, out)


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
        self.app, self.services, self.metrics, self.tally = app, services, metrics, services.tally
        self.request_id = RequestIds()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        started = time.perf_counter()
        rid = self.request_id(environ)
        environ[REQUEST_ID] = rid
        _current_id.set(rid)
        method = environ.get("REQUEST_METHOD", "")
        declared = environ.get("CONTENT_LENGTH", "")
        exchange = _Exchange(
            self.tally, start_response, rid, method if method in METHODS else "other", started,
            int(declared) if declared.isdigit() else 0,
        )
        sendfile = environ.get(SENDFILE)
        if sendfile is not None:
            exchange.sendfile = sendfile
            environ[SENDFILE] = exchange.counted_sendfile
        if self._is_scrape(environ):
            response = self._scrape(environ, exchange.start_response)
        else:
            response = self.app(environ, exchange.start_response)
        if type(response).__name__ == "FileBody":
            # The engine sends it with sendfile only if it gets it as it is (uss_dav.engine.response).
            exchange.done(0)
            return response
        # A body of declared length is counted from its header, not chunk by chunk.
        return _Body(response, exchange.done, exchange.length is None)

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
    """`app` with request ids, request metrics and /metrics.

    Starts the services' Tally writing to the multi-process directory, if the
    serving parent made one (call it in the serving process: the writer is
    a thread); Services.close writes its last counts.
    """
    own = os.environ.get(MULTIPROC_ENV)
    services.tally.start(Path(own) if own else None)
    _install_log_filter()
    return Observed(app, services, Metrics(services))
