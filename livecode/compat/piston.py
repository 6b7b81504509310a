"""Piston v2 at /api/v2, for its unchanged clients (npm's piston-client, raw requests).

    GET    /api/v2/runtimes          [{language, version, aliases, runtime?}]
    POST   /api/v2/execute           {compile?, run, language, version}; 400 {message}
    WS     /api/v2/connect           interactive: runtime, stage, data, exit (piston_connect)
    GET    /api/v2/packages          the built-in runtimes, installed
    POST   /api/v2/packages          400: built in, nothing to install (404 for unknown ones)
    DELETE /api/v2/packages          400 likewise
    GET    /api/v2/piston/runtimes, POST /api/v2/piston/execute: emkc.org's paths for the same

Unlike Piston, a body is read as JSON whatever its Content-Type: piston-client sends
``text/plain``, which Piston itself refuses with 415. Errors are Piston's ``{"message": ...}``.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from livecode.compat import auth
from livecode.compat.piston_connect import connect
from livecode.compat.piston_job import JobInvalid, parse_job, result_json, runtimes_of
from livecode.compat.runs import body_cap, wait_final
from livecode.compat.semver import satisfies
from livecode.errors import LivecodeError
from livecode.rest import read_capped_body
from livecode.services import Services
from runners import Reason

__all__ = ["routes"]

logger = logging.getLogger(__name__)

Endpoint = Callable[[Request], Awaitable[Response]]


class PistonError(Exception):
    """An answer in Piston's words: a status and its message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message


async def list_runtimes(request: Request) -> Response:
    auth.tenant(request)
    return JSONResponse(
        [runtime.as_json() for runtime in runtimes_of(_services(request).languages)]
    )


async def execute(request: Request) -> Response:
    services, tenant = _services(request), auth.tenant(request)
    runtimes = runtimes_of(services.languages)
    body = await _json(request)
    job = parse_job(body, settings=services.settings, runtimes=runtimes)
    execution = await run_in_threadpool(
        functools.partial(
            services.commands.run_once,
            language=job.runtime.livecode.id,
            source_code=job.source_code,
            options=job.options,
            tenant=tenant,
        )
    )
    # Piston answers when the job is done: wait for the compile and the run, and the queue.
    settings = services.settings
    wait_s = settings.compile_timeout_s + settings.wall_timeout_s + settings.wait_cap_s
    execution = await wait_final(services, execution.id, wait_s, tenant=tenant)
    if not execution.is_final:
        await run_in_threadpool(
            functools.partial(services.commands.cancel, execution.id, tenant=tenant)
        )
        raise PistonError(500, "the job did not finish in time")
    if execution.reason in (Reason.CANCELLED, Reason.INTERNAL_ERROR):
        raise PistonError(500, execution.error_message or str(execution.reason))
    return JSONResponse(result_json(execution, job.runtime))


async def list_packages(request: Request) -> Response:
    auth.tenant(request)
    return JSONResponse(
        [
            {
                "language": runtime.runtime or runtime.language,
                "language_version": runtime.version,
                "installed": True,
            }
            for runtime in runtimes_of(_services(request).languages)
        ]
    )


async def change_package(request: Request) -> Response:
    """Install or uninstall: livecode's runtimes are built in, so neither is possible."""
    auth.tenant(request)
    body = await _json(request)
    body = body if isinstance(body, dict) else {}
    language, version = body.get("language"), body.get("version")
    for runtime in runtimes_of(_services(request).languages):
        named = language in (runtime.runtime, runtime.language)
        if named and isinstance(version, str) and satisfies(runtime.version, version):
            raise PistonError(
                400, f"{language}-{runtime.version} is built into livecode: nothing to change"
            )
    raise PistonError(404, f"Requested package {language}-{version} does not exist")


async def not_found(request: Request) -> Response:
    raise PistonError(404, "Not Found")


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def _json(request: Request) -> Any:
    body = await read_capped_body(request, body_cap(_services(request)))
    try:
        return json.loads(body) if body.strip() else {}
    except (ValueError, RecursionError) as exc:
        raise PistonError(400, f"invalid JSON: {exc}") from None


def _piston_errors(endpoint: Endpoint) -> Endpoint:
    """The endpoint, answering every error as Piston does: {"message": ...}."""

    @functools.wraps(endpoint)
    async def answer(request: Request) -> Response:
        try:
            return await endpoint(request)
        except PistonError as exc:
            return JSONResponse({"message": exc.message}, status_code=exc.status)
        except JobInvalid as exc:
            return JSONResponse({"message": exc.message}, status_code=400)
        except LivecodeError as exc:
            headers = {}
            if exc.retry_after is not None:
                headers["Retry-After"] = str(max(1, round(exc.retry_after)))
            status = 400 if exc.http_status == 422 else exc.http_status
            return JSONResponse({"message": exc.message}, status_code=status, headers=headers)
        except Exception:
            logger.exception("%s %s failed", request.method, request.url.path)
            return JSONResponse({"message": "internal error"}, status_code=500)

    return answer


def _route(path: str, endpoint: Endpoint, methods: list[str]) -> Route:
    return Route(path, _piston_errors(endpoint), methods=methods)


routes: list[BaseRoute] = [
    _route("/runtimes", list_runtimes, ["GET"]),
    _route("/execute", execute, ["POST"]),
    _route("/piston/runtimes", list_runtimes, ["GET"]),
    _route("/piston/execute", execute, ["POST"]),
    _route("/packages", list_packages, ["GET"]),
    _route("/packages", change_package, ["POST", "DELETE"]),
    WebSocketRoute("/connect", connect),
    _route("/{path:path}", not_found, ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]),
]
