"""The long-lived parts of a process, opened and closed in written steps.

A web process opens store, bus, queue, relay and commands; a worker process (and embedded
mode, which is both) also opens the sandbox and consumes the queue with an Executor.

The threads each process runs. `livecode serve` (distributed): uvicorn's event loop (sockets,
the relay, SSE) and two thread pools, the ways the loop hops to blocking work: anyio's
(`run_in_threadpool`: REST and SSE commands, the store, bus history reads) and the sockets'
(`livecode-ws-command-N`, websocket.in_thread: a socket's commands). `livecode worker`:
`LIVECODE_WORKER_THREADS` Dramatiq worker threads, each running one `Executor.execute` at a
time with its output pump inline; Dramatiq's consumer thread; `broker-wake` (the Redis wake-up
subscription that ends idle polling); `bus-control-reader` (cancel and stdin from the control
channels); `heartbeat` (announces the worker for /health/workers); `leases` (renews the leases
of the executions it runs); and `runners-pch`, once at start (the C++ precompiled header);
with LIVECODE_METRICS_PORT, prometheus-client's HTTP server. Embedded `serve`: the event
loop, the thread pools, `livecode-worker-N` threads reading the in-process queue (a socket's
command thread runs the run it queued itself while a worker thread would have sat idle:
queue.runs_after_reply), `leases` and `runners-pch`; the local bus hands events to the loop
with `call_soon_threadsafe`. Every
process also runs a `sweeper` (sweeper.py), which does its pass when it holds the lock.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import redis

from livecode import metrics
from livecode.bus import Bus, create_bus
from livecode.commands import Commands
from livecode.config import Settings
from livecode.errors import SchemaMissing, Unavailable
from livecode.executor import Executor
from livecode.heartbeat import Heartbeat
from livecode.lease import Leases
from livecode.queue import Queue
from livecode.ratelimit import LocalRateLimiter, RateLimiter, RedisRateLimiter
from livecode.relay import Relay
from livecode.store import Store
from livecode.sweeper import Sweeper
from runners import (
    Language,
    Sandbox,
    SandboxConfig,
    SandboxUnavailable,
    WarmConfig,
    detect_languages,
)

logger = logging.getLogger(__name__)


@dataclasses.dataclass(slots=True)
class Services:
    """Everything the edges and the health checks need, owned by the app lifespan or the CLI."""

    settings: Settings
    store: Store
    bus: Bus
    queue: Queue
    commands: Commands
    languages: tuple[Language, ...]
    redis: redis.Redis | None = None
    relay: Relay | None = None
    sandbox: Sandbox | None = None
    sandbox_error: str | None = None
    heartbeat: Heartbeat | None = None
    executor: Executor | None = None
    leases: Leases | None = None
    sweeper: Sweeper | None = None

    def describe_worker(self) -> dict[str, Any]:
        """What a worker process announces: its threads and its sandbox's measures."""
        return {
            "threads": self.queue.worker_threads,
            "sandbox": self.sandbox.measures() if self.sandbox is not None else None,
        }

    def close(self, grace_s: float | None = None) -> None:
        """Take no new execution; let running ones finish within `grace_s` (default:
        LIVECODE_SHUTDOWN_GRACE_S), hand the rest back as QUEUED; then close what was opened."""
        grace_s = self.settings.shutdown_grace_s if grace_s is None else grace_s
        if self.sweeper is not None:
            self.sweeper.stop()
        on_timeout = self.executor.hand_back if self.executor is not None else None
        self.queue.close(grace_s, on_timeout)
        if self.heartbeat is not None:  # after the runs: the worker lived until now
            self.heartbeat.stop()
        if self.leases is not None:
            self.leases.stop()
        if self.sandbox is not None:
            self.sandbox.close()
        self.bus.close()
        self.store.close()
        if self.redis is not None:
            self.redis.close()


def open_services(settings: Settings, *, consume: bool) -> Services:
    """Open the parts of a process; `consume` adds the sandbox and worker threads.

    Raises SchemaMissing when the database answers but lacks the schema (`livecode init-db`);
    a database that does not answer yet is no reason not to start (503s until it does).
    """
    store = Store.from_url(settings.database_url)
    if settings.database_url.startswith("sqlite"):
        store.create_tables()
    else:
        check_schema(store)
    bus = create_bus(settings.redis_url)
    client = redis.Redis.from_url(settings.redis_url) if settings.redis_url else None
    limiter: RateLimiter = RedisRateLimiter(client) if client is not None else LocalRateLimiter()
    queue = Queue(settings)
    languages = detect_languages()
    commands = Commands(settings, store, bus, queue, limiter, languages)
    services = Services(settings, store, bus, queue, commands, languages, redis=client)
    if consume:
        if settings.sandbox == "none":
            logger.warning(
                "LIVECODE_SANDBOX=none: programs run WITHOUT the sandbox. "
                "Never expose this server to anyone."
            )
        try:
            services.sandbox = Sandbox(
                SandboxConfig(
                    mode=settings.sandbox,
                    slots=settings.worker_threads,
                    warm=WarmConfig(
                        enabled=settings.warm_python,
                        max_runs=settings.warm_python_runs,
                        max_age_s=settings.warm_python_age_s,
                    ),
                )
            )
        except SandboxUnavailable as exc:
            # No sandbox means no execution: serve everything else and say why runs fail.
            logger.error("sandbox unavailable, executions are refused: %s", exc)
            services.sandbox_error = commands.refusal = f"sandbox unavailable: {exc}"
            return services
        services.leases = Leases(store, settings.lease_s)
        services.executor = Executor(
            store, bus, services.sandbox, leases=services.leases, enqueue=queue.enqueue
        )
        queue.start_workers(services.executor.execute, settings.worker_threads)
        if client is not None:
            services.heartbeat = Heartbeat(client, services.describe_worker)
            services.heartbeat.start()
    services.sweeper = Sweeper(settings, store, bus, queue)
    if consume and not settings.is_distributed:
        _resume_embedded(services, services.sweeper)
    services.sweeper.start()
    return services


def check_schema(store: Store) -> None:
    """Raise SchemaMissing when the database lacks the schema; log (only) when it is down."""
    try:
        store.check_schema()
    except SchemaMissing:
        store.close()
        raise
    except Unavailable as exc:
        logger.warning("the database does not answer yet (%s); serving 503s until it does", exc)


def _resume_embedded(services: Services, sweeper: Sweeper) -> None:
    """Embedded mode is the only process: what a previous run of it left unfinished is ours.

    Queued executions are queued again; running ones died with that process: each is retried
    as a new attempt (or ends as an internal error when it has none left), as a sweeper does
    with an expired lease.
    """
    store = services.store
    try:
        running = store.recovery.expired_leases(None)
        queued, _ = store.recovery.unfinished()
        for execution in running:
            sweeper.move_on(execution)
        for execution_id in queued:
            services.queue.enqueue(execution_id)
    except Unavailable as exc:
        logger.error("could not look for unfinished executions: %s", exc)
        return
    if queued or running:
        metrics.SWEEPER_ACTIONS.labels("resumed").inc(len(queued) + len(running))
        logger.info("resumed %d queued and %d interrupted executions", len(queued), len(running))
