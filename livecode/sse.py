"""/executions/{id}/events: the WebSocket's execution events as Server-Sent Events.

Each event's `id:` is the last output seq sent, so a client that reconnects with
`Last-Event-ID` (or `?since=`) resumes with no gap and no duplicate. The `finished` event's id
is `{seq}-finished`: a browser's EventSource reconnects by itself after the stream ends, and
that id tells us it has seen everything, so it gets 204 (which stops EventSource) instead of
the same `finished` again.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from livecode import auth, events
from livecode.errors import BadRequest
from livecode.services import Services

FINISHED_SUFFIX = "-finished"
# The largest seq a client may name: 18 digits (a JSON number and a BIGINT hold it).
MAX_SEQ = 10**18 - 1


async def execution_events(request: Request) -> Response:
    services: Services = request.app.state.services
    assert services.relay is not None
    execution_id = request.path_params["execution_id"]
    execution = await run_in_threadpool(
        services.commands.get_execution, execution_id, tenant=auth.tenant(request)
    )
    last_event_id = request.headers.get("last-event-id", "")
    if last_event_id.endswith(FINISHED_SUFFIX) and execution.is_final:
        return Response(status_code=204)
    since = max(
        _seq(request.query_params.get("since")), _seq(last_event_id.removesuffix(FINISHED_SUFFIX))
    )
    # Subscribe before answering, so that an unreachable bus is a 503, not a cut-off 200.
    stack = contextlib.AsyncExitStack()
    stream = await stack.enter_async_context(services.relay.follow(execution.id, since))
    return StreamingResponse(
        _stream(stack, stream, since),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _stream(
    stack: contextlib.AsyncExitStack, stream: AsyncIterator[Mapping[str, Any]], since: int
) -> AsyncIterator[str]:
    last_seq = since
    async with stack:
        async for event in stream:
            last_seq = event.get("seq", last_seq)
            event_id = f"{last_seq}{FINISHED_SUFFIX}" if event["type"] == "finished" else last_seq
            yield f"id: {event_id}\nevent: {event['type']}\ndata: {events.encode(event)}\n\n"


def _seq(raw: str | None) -> int:
    if raw is None or raw == "":
        return 0
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest("since / Last-Event-ID must be a non-negative integer") from None
    if not 0 <= value <= MAX_SEQ or not raw.isdigit():
        raise BadRequest(f"since / Last-Event-ID must be an integer from 0 to {MAX_SEQ}")
    return value


routes = [Route("/executions/{execution_id}/events", execution_events, methods=["GET"])]
