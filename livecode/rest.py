"""The REST mirror of the WebSocket commands (SPEC.md, "REST"; the reference README's shapes)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from livecode import auth, events, health, protocol
from livecode.errors import BadRequest, LivecodeError, TooLarge
from livecode.services import Services
from livecode.store import Execution

Endpoint = Callable[[Request], Awaitable[Response]]

MAX_PAGE = 200


# JSON may spell one byte of text as six (\u0001); past this, no valid body can be this large.
JSON_EXPANSION = 6
JSON_OVERHEAD_BYTES = 64 << 10


async def read_body(request: Request) -> bytes:
    """The request body, refused with 413 as soon as it is larger than any valid one can be."""
    settings = _services(request).settings
    cap = (settings.max_source_bytes + settings.max_stdin_bytes) * JSON_EXPANSION
    return await read_capped_body(request, cap + JSON_OVERHEAD_BYTES)


async def read_capped_body(request: Request, cap: int) -> bytes:
    """The request body; TooLarge as soon as it is larger than `cap` bytes (every edge's cap)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise TooLarge(f"the request body is larger than {cap} bytes")
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > cap:
            raise TooLarge(f"the request body is larger than {cap} bytes")
    return bytes(body)


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def create_session(request: Request) -> Response:
    body = protocol.parse_body(protocol.CreateSession, await read_body(request))
    session = await run_in_threadpool(
        _services(request).commands.create_session,
        body.language,
        body.source_code,
        tenant=auth.tenant(request),
    )
    return JSONResponse(events.session_json(session), status_code=201)


async def get_session(request: Request) -> Response:
    session = await run_in_threadpool(
        _services(request).commands.open_session,
        request.path_params["session_id"],
        tenant=auth.tenant(request),
    )
    return JSONResponse(events.session_json(session))


async def save_session(request: Request) -> Response:
    body = protocol.parse_body(protocol.SaveSource, await read_body(request))
    session = await run_in_threadpool(
        _services(request).commands.autosave,
        request.path_params["session_id"],
        body.source_code,
        body.base_version,
        tenant=auth.tenant(request),
    )
    return JSONResponse(events.saved_json(session))


async def delete_session(request: Request) -> Response:
    await run_in_threadpool(
        _services(request).commands.delete_session,
        request.path_params["session_id"],
        tenant=auth.tenant(request),
    )
    return Response(status_code=204)


async def run_session(request: Request) -> Response:
    options = protocol.parse_body(protocol.RunOptions, await read_body(request), optional=True)
    services = _services(request)
    execution = await run_in_threadpool(
        services.commands.run,
        request.path_params["session_id"],
        options,
        tenant=auth.tenant(request),
    )
    return await _accepted(request, services, execution)


async def run_once(request: Request) -> Response:
    body = protocol.parse_body(protocol.OneShotRun, await read_body(request))
    services = _services(request)
    execution = await run_in_threadpool(
        services.commands.run_once,
        body.language,
        body.source_code,
        body,
        tenant=auth.tenant(request),
    )
    return await _accepted(request, services, execution)


async def get_execution(request: Request) -> Response:
    execution = await run_in_threadpool(
        _services(request).commands.get_execution,
        request.path_params["execution_id"],
        tenant=auth.tenant(request),
    )
    return JSONResponse(events.execution_json(execution))


async def cancel_execution(request: Request) -> Response:
    execution = await run_in_threadpool(
        _services(request).commands.cancel,
        request.path_params["execution_id"],
        tenant=auth.tenant(request),
    )
    return JSONResponse(events.queued_json(execution), status_code=202)


async def list_executions(request: Request) -> Response:
    limit = _int_param(request, "limit", 50)
    if not 1 <= limit <= MAX_PAGE:
        raise BadRequest(f"limit must be between 1 and {MAX_PAGE}")
    executions = await run_in_threadpool(
        _services(request).commands.list_executions,
        request.path_params["session_id"],
        limit,
        request.query_params.get("before"),
        tenant=auth.tenant(request),
    )
    return JSONResponse([events.execution_json(execution) for execution in executions])


async def list_languages(request: Request) -> Response:
    return JSONResponse(events.languages_json(_services(request).languages))


async def _accepted(request: Request, services: Services, execution: Execution) -> Response:
    """202 with the queued execution; with ?wait=true, 200 and the final one if it ends in time.

    With no worker alive, the wait is cut short (a worker that just came back, or a Redis that
    did, announces itself within a heartbeat) and the 202 says why the run stays QUEUED.
    """
    queued = events.queued_json(execution)
    if not _wait(request):
        return JSONResponse(queued, status_code=202)
    assert services.relay is not None
    is_worker_alive = await run_in_threadpool(health.is_worker_alive, services)
    wait_s = services.settings.wait_cap_s
    if not is_worker_alive:
        wait_s = min(wait_s, health.NO_WORKER_WAIT_S)
    try:
        async with asyncio.timeout(wait_s):
            async with services.relay.follow(execution.id) as stream:
                async for event in stream:
                    if event["type"] == "finished":
                        return JSONResponse(_without_type(event))
    except TimeoutError:
        pass
    if not is_worker_alive:
        return JSONResponse(events.queued_json(execution, health.NO_WORKER), status_code=202)
    return JSONResponse(queued, status_code=202)


def _wait(request: Request) -> bool:
    """?wait= as the document types it: a boolean, spelled true or false."""
    raw = request.query_params.get("wait")
    if raw is None or raw == "false":
        return False
    if raw == "true":
        return True
    raise BadRequest("wait must be true or false")


def _without_type(event: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in event.items() if key != "type"}


def _int_param(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer") from None


def error_response(exc: LivecodeError) -> Response:
    """The JSON error body every endpoint answers with, plus Retry-After when there is one."""
    headers = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    return JSONResponse(
        events.error_json(exc.code, exc.message), status_code=exc.http_status, headers=headers
    )


def _by_method(**endpoints: Endpoint) -> Endpoint:
    """One route for a path served by several methods, so that a 405 lists all of them."""

    async def endpoint(request: Request) -> Response:
        return await endpoints[request.method if request.method != "HEAD" else "GET"](request)

    return endpoint


routes = [
    Route("/code-sessions", create_session, methods=["POST"]),
    Route(
        "/code-sessions/{session_id}",
        _by_method(GET=get_session, PATCH=save_session, DELETE=delete_session),
        methods=["GET", "PATCH", "DELETE"],
    ),
    Route("/code-sessions/{session_id}/run", run_session, methods=["POST"]),
    Route("/executions", run_once, methods=["POST"]),
    Route("/executions/{execution_id}", get_execution, methods=["GET"]),
    Route("/executions/{execution_id}/cancel", cancel_execution, methods=["POST"]),
    Route("/executions/session/{session_id}", list_executions, methods=["GET"]),
    Route("/languages", list_languages, methods=["GET"]),
]
