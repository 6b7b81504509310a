"""Health endpoints: liveness, and one check per dependency (200 when it works, 503 and why);
and /metrics, the Prometheus view of this process (metrics.py)."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from livecode import events, metrics
from livecode.errors import SchemaMissing, Unavailable
from livecode.heartbeat import HEARTBEAT_EVERY_S, live_workers
from livecode.services import Services

logger = logging.getLogger(__name__)

Check = Callable[[Services], dict[str, Any]]

# How long ?wait=true waits when no worker is alive: one heartbeat, and a little more.
NO_WORKER_WAIT_S = HEARTBEAT_EVERY_S + 1.0
NO_WORKER = (
    "no worker is alive (none has reported in the last 15 seconds): queued executions wait "
    "until a `livecode worker` starts"
)


class CheckFailed(Exception):
    """A dependency does not work; the message says how."""


def check_db(services: Services) -> dict[str, Any]:
    try:
        services.store.ping()
        services.store.check_schema()
    except SchemaMissing as exc:
        raise CheckFailed(exc.message) from exc
    except Exception as exc:
        raise CheckFailed(f"database unreachable: {type(exc).__name__}") from exc
    backend = "postgresql" if services.settings.database_url.startswith("postgresql") else "sqlite"
    return {"status": "connected", "database": backend}


def check_redis(services: Services) -> dict[str, Any]:
    if services.redis is None:
        return {"status": "connected", "ping": "PONG", "mode": "embedded (in-process bus)"}
    try:
        services.redis.ping()
    except Exception as exc:
        raise CheckFailed(f"redis unreachable: {type(exc).__name__}") from exc
    return {"status": "connected", "ping": "PONG"}


def check_workers(services: Services) -> dict[str, Any]:
    active_tasks = services.store.count_running()
    if services.redis is None:
        threads = services.queue.worker_threads
        if threads == 0:
            raise CheckFailed("no worker threads are running")
        return {"status": "connected", "active_workers": threads, "active_tasks": active_tasks}
    try:
        workers = live_workers(services.redis)
    except Exception as exc:
        raise CheckFailed(f"redis unreachable: {type(exc).__name__}") from exc
    if not workers:
        raise CheckFailed(NO_WORKER)
    return {
        "status": "connected",
        "active_workers": sum(worker["threads"] for worker in workers),
        "worker_processes": len(workers),
        "active_tasks": active_tasks,
    }


def check_sandbox(services: Services) -> dict[str, Any]:
    if services.sandbox is not None:
        return {"status": "ok", **services.sandbox.measures()}
    if services.sandbox_error is not None:
        raise CheckFailed(services.sandbox_error)
    if services.redis is not None:  # a web process: the workers own the sandboxes
        try:
            workers = live_workers(services.redis)
        except Exception as exc:
            raise CheckFailed(f"redis unreachable: {type(exc).__name__}") from exc
        measured = [worker["sandbox"] for worker in workers if worker.get("sandbox")]
        if not measured:
            raise CheckFailed("no worker process has reported its sandbox")
        return {"status": "ok", "workers": measured}
    raise CheckFailed("no sandbox in this process")


def check_ready(services: Services) -> dict[str, Any]:
    parts = {
        "db": check_db,
        "redis": check_redis,
        "workers": check_workers,
        "sandbox": check_sandbox,
    }
    return {
        "status": "ready",
        "checks": {name: check(services)["status"] for name, check in parts.items()},
    }


def is_worker_alive(services: Services) -> bool:
    """Whether any worker thread or process can take a queued execution now (Redis down:
    presumed alive, since the queue is what is missing)."""
    if services.redis is None:
        return services.queue.worker_threads > 0
    try:
        return bool(live_workers(services.redis))
    except Exception:
        return True


async def metrics_endpoint(request: Request) -> Response:
    """GET /metrics: Prometheus text, with the store's queue as of now."""
    services: Services = request.app.state.services
    try:
        queued, running = await run_in_threadpool(
            lambda: (services.store.count_queued(), services.store.count_running())
        )
        metrics.QUEUED_EXECUTIONS.set(queued)
        metrics.RUNNING_EXECUTIONS.set(running)
    except Unavailable:
        metrics.QUEUED_EXECUTIONS.set(float("nan"))
        metrics.RUNNING_EXECUTIONS.set(float("nan"))
    return Response(metrics.generate_latest(), media_type=metrics.CONTENT_TYPE_LATEST)


async def health(request: Request) -> Response:
    return JSONResponse(events.health_json("healthy", timestamp=dt.datetime.now(dt.UTC)))


def _endpoint(check: Check) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        services: Services = request.app.state.services
        try:
            return JSONResponse(events.health_json(**await run_in_threadpool(check, services)))
        except CheckFailed as exc:
            return JSONResponse(
                events.health_json("unavailable", reason=str(exc)),
                status_code=503,
                headers={"Retry-After": "5"},
            )

    return endpoint


routes = [
    Route("/health", health, methods=["GET"]),
    Route("/health/ready", _endpoint(check_ready), methods=["GET"]),
    Route("/health/db", _endpoint(check_db), methods=["GET"]),
    Route("/health/redis", _endpoint(check_redis), methods=["GET"]),
    Route("/health/workers", _endpoint(check_workers), methods=["GET"]),
    Route("/health/celery", _endpoint(check_workers), methods=["GET"]),
    Route("/health/sandbox", _endpoint(check_sandbox), methods=["GET"]),
    Route("/metrics", metrics_endpoint, methods=["GET"]),
]
