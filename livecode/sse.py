"""/executions/{id}/events: the WebSocket's execution events as Server-Sent Events.

Each event's `id:` is the last output seq sent, so a client that reconnects with
`Last-Event-ID` (or `?since=`) resumes with no gap and no duplicate.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from livecode import events
from livecode.errors import BadRequest
from livecode.services import Services


async def execution_events(request: Request) -> Response:
    services: Services = request.app.state.services
    execution_id = request.path_params["execution_id"]
    await run_in_threadpool(services.commands.get_execution, execution_id)  # 404 before streaming
    since = max(_seq(request.query_params.get("since")), _seq(request.headers.get("last-event-id")))
    return StreamingResponse(
        _stream(services, execution_id, since),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _stream(services: Services, execution_id: str, since: int) -> AsyncIterator[str]:
    assert services.relay is not None
    last_seq = since
    async with services.relay.follow(execution_id, since) as stream:
        async for event in stream:
            last_seq = event.get("seq", last_seq)
            yield _format(event, last_seq)


def _format(event: dict[str, Any], last_seq: int) -> str:
    return f"id: {last_seq}\nevent: {event['type']}\ndata: {events.encode(event)}\n\n"


def _seq(raw: str | None) -> int:
    if raw is None or raw == "":
        return 0
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest("since / Last-Event-ID must be a non-negative integer") from None
    if value < 0:
        raise BadRequest("since / Last-Event-ID must be a non-negative integer")
    return value


routes = [Route("/executions/{execution_id}/events", execution_events, methods=["GET"])]
