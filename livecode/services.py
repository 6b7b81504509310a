"""The long-lived parts of a process, opened and closed in written steps.

A web process opens store, bus, queue, relay and commands; a worker process (and embedded
mode, which is both) also opens the sandbox and consumes the queue with an Executor.

The threads each process runs. `livecode serve` (distributed): uvicorn's event loop (sockets,
the relay, SSE) and anyio's thread pool, the one way the loop hops to blocking work
(`run_in_threadpool`: commands, the store, bus history reads). `livecode worker`:
`LIVECODE_WORKER_THREADS` Dramatiq worker threads, each running one `Executor.execute` at a
time with its output pump inline; Dramatiq's consumer thread; `broker-wake` (the Redis wake-up
subscription that ends idle polling); `bus-control-reader` (cancel and stdin from the control
channels); `heartbeat` (announces the worker for /health/workers); and `runners-pch`, once at
start (the C++ precompiled header). Embedded `serve`: the event loop, the thread pool,
`livecode-worker-N` threads reading the in-process queue, and `runners-pch`; the local bus
hands events to the loop with `call_soon_threadsafe`.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import redis

from livecode import events
from livecode.bus import Bus, create_bus, execution_channel
from livecode.commands import Commands
from livecode.config import Settings
from livecode.errors import Unavailable
from livecode.executor import Executor
from livecode.heartbeat import Heartbeat
from livecode.queue import Queue
from livecode.ratelimit import LocalRateLimiter, RateLimiter, RedisRateLimiter
from livecode.relay import Relay
from livecode.store import Store
from runners import Language, Sandbox, SandboxConfig, SandboxUnavailable, detect_languages

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

    def describe_worker(self) -> dict[str, Any]:
        """What a worker process announces: its threads and its sandbox's measures."""
        return {
            "threads": self.queue.worker_threads,
            "sandbox": self.sandbox.measures() if self.sandbox is not None else None,
        }

    def close(self) -> None:
        """Stop consuming (running executions finish), then close what was opened."""
        if self.heartbeat is not None:
            self.heartbeat.stop()
        self.queue.close()
        if self.sandbox is not None:
            self.sandbox.close()
        self.bus.close()
        self.store.close()
        if self.redis is not None:
            self.redis.close()


def open_services(settings: Settings, *, consume: bool) -> Services:
    """Open the parts of a process; `consume` adds the sandbox and worker threads."""
    store = Store.from_url(settings.database_url)
    if settings.database_url.startswith("sqlite"):
        store.create_tables()
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
                SandboxConfig(mode=settings.sandbox, slots=settings.worker_threads)
            )
        except SandboxUnavailable as exc:
            # No sandbox means no execution: serve everything else and say why runs fail.
            logger.error("sandbox unavailable, executions are refused: %s", exc)
            services.sandbox_error = commands.refusal = f"sandbox unavailable: {exc}"
            return services
        executor = Executor(store, bus, services.sandbox)
        queue.start_workers(executor.execute, settings.worker_threads)
        if not settings.is_distributed:
            _resume_embedded(services)
        if client is not None:
            services.heartbeat = Heartbeat(client, services.describe_worker)
            services.heartbeat.start()
    return services


def _resume_embedded(services: Services) -> None:
    """Embedded mode is the only process: what a previous run of it left unfinished is ours.

    Queued executions are queued again; running ones died with that process and end as
    internal errors (retrying them is the distributed recovery's job, not done here).
    """
    try:
        queued, running = services.store.unfinished()
    except Unavailable as exc:
        logger.error("could not look for unfinished executions: %s", exc)
        return
    for execution_id in running:
        failed = services.store.fail(execution_id, "the server stopped while it ran")
        if failed is not None:
            services.bus.publish(execution_channel(execution_id), events.finished_event(failed))
    for execution_id in queued:
        services.queue.enqueue(execution_id)
    if queued or running:
        logger.info(
            "resumed %d queued executions; %d interrupted ones failed", len(queued), len(running)
        )
