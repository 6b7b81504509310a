"""create_app(settings): routes, error handlers, and a lifespan that owns the services."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import WebSocketRoute

from livecode import (
    auth,
    browser,
    compat,
    events,
    health,
    openapi,
    playground,
    rest,
    sse,
    wsdirect,
)
from livecode.config import Settings
from livecode.errors import InternalError, LivecodeError
from livecode.relay import Relay
from livecode.services import Services, open_services
from livecode.websocket import Sockets, websocket_endpoint

logger = logging.getLogger(__name__)

_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "bad_request"}


def create_app(settings: Settings, *, consume: bool | None = None) -> Starlette:
    """The ASGI app. `consume` (default: embedded mode) also runs worker threads in-process."""
    consume = (not settings.is_distributed) if consume is None else consume

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        services: Services = await run_in_threadpool(open_services, settings, consume=consume)

        async def load_stored(execution_id: str) -> list[events.ExecutionEvent] | None:
            return await run_in_threadpool(services.commands.stored_events, execution_id)

        services.relay = Relay(services.bus, load_stored, check_after_s=settings.relay_check_s)
        await services.relay.start()
        app.state.services = services
        app.state.authenticator = auth.Authenticator(settings, services.store.api_keys)
        app.state.openapi = openapi.document(settings, services.languages)
        logger.info(
            "livecode ready: %s mode, store %s",
            "distributed" if settings.is_distributed else "embedded",
            settings.database_url.split("@")[-1],
        )
        try:
            yield
        finally:
            # Stop following first, then let running executions finish and close the rest.
            await app.state.sockets.close_all()
            await services.relay.close()
            await run_in_threadpool(services.close)

    app = Starlette(
        routes=[
            *rest.routes,
            *sse.routes,
            *health.routes,
            *openapi.routes,
            *playground.routes,
            WebSocketRoute("/ws", websocket_endpoint),
            *compat.routes(settings),
        ],
        middleware=[
            Middleware(wsdirect.ServerSend),  # first: it keeps the server's own send
            Middleware(browser.SecurityHeaders),
            browser.cors_middleware(settings.allowed_origins),
            Middleware(auth.Authentication),
        ],
        exception_handlers={
            LivecodeError: _livecode_error,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
        lifespan=lifespan,
    )
    app.state.sockets = Sockets()  # closed with 1001 first when the server shuts down (cli.py)
    return app


async def _livecode_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LivecodeError)
    return rest.error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "bad_request")
    return JSONResponse(
        events.error_json(code, exc.detail), status_code=exc.status_code, headers=exc.headers
    )


async def _internal_error(request: Request, exc: Exception) -> Response:
    logger.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    error = InternalError()
    return JSONResponse(events.error_json(error.code, error.message), status_code=500)
