"""Prometheus metrics of a process, and /metrics (README, "Metrics").

Every server serves /metrics (to the operator only: auth.py); a worker process serves it on
LIVECODE_METRICS_PORT (with LIVECODE_METRICS_TOKEN, to its bearer only). Each process
counts what it does itself (a worker its runs, a server its sockets), so sum over processes.
Names follow Prometheus's conventions: a `livecode_` prefix, base units (seconds), `_total`
on counters, labels of few values (language, status, reason, action, attempt).

Cost, measured: an `inc()` or `observe()` is 0.3-1.5 us; a run touches six or seven.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    make_wsgi_app,
    start_http_server,
)
from prometheus_client.exposition import ThreadingWSGIServer

__all__ = [
    "ATTEMPTS",
    "BUS_ERRORS",
    "CONTENT_TYPE_LATEST",
    "EXECUTIONS",
    "FOLLOWERS",
    "QUEUED",
    "QUEUED_EXECUTIONS",
    "QUEUE_ERRORS",
    "QUEUE_WAIT",
    "RELAY_LAG",
    "RELAY_WRITTEN",
    "RUNNING_EXECUTIONS",
    "RUN_DURATION",
    "SANDBOX_OVERHEAD",
    "STORE_ERRORS",
    "SWEEPER_ACTIONS",
    "WEBSOCKETS",
    "count_final",
    "generate_latest",
    "serve_metrics",
]

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

    from livecode.store import Execution

logger = logging.getLogger(__name__)

_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_SHORT = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5)

# -- executions (counted where they happen: the worker's runs, the server's queued cancels) --
QUEUED = Counter(
    "livecode_executions_queued_total", "Executions queued by this server.", ["language"]
)
EXECUTIONS = Counter(
    "livecode_executions_total",
    "Executions that reached a final state here, by language, status and reason.",
    ["language", "status", "reason"],
)
ATTEMPTS = Counter(
    "livecode_execution_attempts_total",
    "Attempts started (claims) by this worker; attempt is 1, 2, 3...",
    ["attempt"],
)
QUEUE_WAIT = Histogram(
    "livecode_queue_wait_seconds",
    "From queued to claimed by a worker (first attempts).",
    buckets=_SECONDS,
)
RUN_DURATION = Histogram(
    "livecode_run_duration_seconds",
    "Program wall time (compile included) of each attempt that ran.",
    ["language"],
    buckets=_SECONDS,
)
SANDBOX_OVERHEAD = Histogram(
    "livecode_sandbox_overhead_seconds",
    "Time a sandboxed run took beyond the program's own wall time (set up, clean up).",
    ["language"],
    buckets=_SHORT,
)
SWEEPER_ACTIONS = Counter(
    "livecode_sweeper_actions_total",
    "What sweepers and shutdowns did: retried (lease expired), failed (out of attempts), "
    "enqueued (message lost), handed_back (worker shutdown), resumed (embedded restart).",
    ["action"],
)
# -- the queue, seen from the store (set when /metrics is read, by servers) ----------------
QUEUED_EXECUTIONS = Gauge("livecode_queued_executions", "Executions QUEUED in the store.")
RUNNING_EXECUTIONS = Gauge("livecode_running_executions", "Executions RUNNING in the store.")
# -- sockets and followers -----------------------------------------------------------------
WEBSOCKETS = Gauge("livecode_websocket_connections", "Open WebSocket connections.")
FOLLOWERS = Gauge(
    "livecode_followers", "Followers of an execution or session (WebSocket, SSE, ?wait=true)."
)
RELAY_LAG = Histogram(
    "livecode_relay_lag_seconds",
    "From an event read off the bus to its follower taking it (the server's own delay); an "
    "event written straight to sockets counts once, with the delay of its last socket.",
    buckets=_SHORT,
)
RELAY_WRITTEN = Counter(
    "livecode_relay_written_total",
    "Live events the relay wrote straight to a WebSocket, one per socket, without its task.",
)
# -- dependencies ----------------------------------------------------------------------------
STORE_ERRORS = Counter(
    "livecode_store_errors_total", "Store calls that failed: database down or not set up."
)
BUS_ERRORS = Counter("livecode_bus_errors_total", "Bus calls that failed: Redis unreachable.")
QUEUE_ERRORS = Counter("livecode_queue_errors_total", "Enqueues that failed: Redis unreachable.")


def count_final(execution: Execution) -> None:
    """Count an execution that reached its final state here (livecode_executions_total)."""
    reason = execution.reason.value if execution.reason is not None else ""
    EXECUTIONS.labels(execution.language, execution.status.value, reason).inc()


def serve_metrics(port: int, host: str = "0.0.0.0", *, token: str | None = None) -> None:
    """Serve /metrics on a port of its own from a daemon thread (worker processes); with
    `token`, only to requests bearing it (``Authorization: Bearer``), else 401."""
    if token is None:
        start_http_server(port, addr=host)
    else:
        app = _bearer_only(make_wsgi_app(), hashlib.sha256(token.encode()).hexdigest())
        server = make_server(host, port, app, ThreadingWSGIServer, handler_class=_QuietHandler)
        threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    logger.info("metrics on http://%s:%d/metrics", host, port)


def _bearer_only(app: WSGIApplication, token_sha256: str) -> WSGIApplication:
    """`app` for requests bearing the token (compared by hash, in constant time), else 401."""

    def guarded(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        scheme, _, value = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        given = hashlib.sha256(value.strip().encode()).hexdigest()
        if scheme.lower() == "bearer" and hmac.compare_digest(given, token_sha256):
            return app(environ, start_response)
        body = (
            b'{"error": {"code": "unauthorized", "message": "/metrics needs the operator\'s '
            b'token: Authorization: Bearer <LIVECODE_METRICS_TOKEN>"}}'
        )
        start_response(
            "401 Unauthorized",
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                ("WWW-Authenticate", 'Bearer realm="livecode"'),
            ],
        )
        return [body]

    return guarded


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """No access line on stderr for each scrape (prometheus-client's server logs none)."""
