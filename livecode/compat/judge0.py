"""Judge0 CE 1.13.1, served under LIVECODE_JUDGE0_PREFIX (/judge0) for its unchanged clients.

A submission is a livecode execution: its token is the execution id, and it is stored in the
same table, with the Judge0 request fields livecode has no column for in ``judge0``. Routes, as
Judge0's ``config/routes.rb`` has them::

    POST /submissions?base64_encoded=&wait=&fields=   201 {token}, or with wait=true the submission
    GET  /submissions/{token}?base64_encoded=&fields=  the submission; 404 when unknown
    POST /submissions/batch?base64_encoded=            201 [{token} or that item's errors]
    GET  /submissions/batch?tokens=a,b&fields=         {submissions: [submission or null, ...]}
    GET  /submissions, DELETE /submissions/{token}     403: admin only, and no admin exists
    GET  /languages, /languages/all, /languages/{id}   the ids livecode runs (judge0_languages)
    GET  /statuses, /about, /version, /config_info     Judge0's, with livecode's real limits
    POST /authenticate, /authorize                     200 / 403

Errors are Judge0's own bodies: 422 ``{field: [message]}``, 400 ``{"error": ...}``, 404
``{"status": 404, "error": "Not Found"}``, 503 ``{"error": "queue is full"}``, 401 empty.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from livecode import __version__
from livecode.compat import auth
from livecode.compat.judge0_answer import (
    STATUSES,
    FieldsInvalid,
    requested_fields,
    submission_json,
)
from livecode.compat.judge0_languages import Catalog
from livecode.compat.judge0_request import (
    MAX_BATCH_SIZE,
    SubmissionInvalid,
    SubmissionRequest,
    config_info,
    parse_submission,
)
from livecode.compat.runs import body_cap, wait_final
from livecode.errors import LivecodeError, NotFound, RateLimited, Unauthorized, Unavailable
from livecode.rest import read_capped_body
from livecode.services import Services
from livecode.store import Execution
from livecode.tenants import Tenant
from runners import Language

__all__ = ["VERSION", "routes"]

logger = logging.getLogger(__name__)

VERSION = "1.13.1"  # the official SDK maps its language names to ids by this exact string
Endpoint = Callable[[Request], Awaitable[Response]]


class Judge0Error(Exception):
    """An answer in Judge0's own words: a status and its body (None: no body)."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(status, body)
        self.status = status
        self.body = body


# submissions


async def create_submission(request: Request) -> Response:
    services, tenant = _services(request), auth.tenant(request)
    wait = request.query_params.get("wait") == "true"
    fields = requested_fields(request.query_params.get("fields"))
    base64_encoded = request.query_params.get("base64_encoded") == "true"
    body = await _json_or_form(request, runs=1)
    # Rails' params: the query's, then the body's over them.
    params = {**request.query_params, **(body if isinstance(body, dict) else {})}
    submission = _parse(services, params, base64_encoded)
    execution = await run_in_threadpool(_submit, services, submission, tenant)
    if not wait:
        return JSONResponse({"token": execution.id}, status_code=201)
    execution = await wait_final(
        services, execution.id, services.settings.wait_cap_s, tenant=tenant
    )
    return JSONResponse(_answer(services, execution, fields, base64_encoded), status_code=201)


async def get_submission(request: Request) -> Response:
    services, tenant = _services(request), auth.tenant(request)
    fields = requested_fields(request.query_params.get("fields"))
    base64_encoded = request.query_params.get("base64_encoded") == "true"
    execution = await run_in_threadpool(
        functools.partial(
            services.commands.get_execution, request.path_params["token"], tenant=tenant
        )
    )
    return JSONResponse(_answer(services, execution, fields, base64_encoded))


async def create_batch(request: Request) -> Response:
    services, tenant = _services(request), auth.tenant(request)
    base64_encoded = request.query_params.get("base64_encoded") == "true"
    body = await _json_or_form(request, runs=MAX_BATCH_SIZE)
    items = body.get("submissions") if isinstance(body, dict) else None
    count = len(items) if isinstance(items, list) else 0
    _check_batch_size(count)
    assert isinstance(items, list)
    queued = await run_in_threadpool(services.store.count_queued)
    if queued + count > services.settings.queue_cap:
        raise Judge0Error(503, {"error": "queue is full"})
    parsed: list[SubmissionRequest | dict[str, list[str]]] = []
    for item in items:
        try:
            parsed.append(_parse(services, item if isinstance(item, dict) else {}, base64_encoded))
        except SubmissionInvalid as exc:
            parsed.append(exc.errors)
    answers = await run_in_threadpool(_submit_batch, services, parsed, tenant)
    is_any_valid = any("token" in answer for answer in answers)
    return JSONResponse(answers, status_code=201 if is_any_valid else 422)


async def get_batch(request: Request) -> Response:
    services, tenant = _services(request), auth.tenant(request)
    fields = requested_fields(request.query_params.get("fields"))
    base64_encoded = request.query_params.get("base64_encoded") == "true"
    raw = request.headers.get("tokens") or request.query_params.get("tokens") or ""
    tokens = raw.strip().split(",") if raw.strip() else []
    while tokens and not tokens[-1]:
        tokens.pop()  # Ruby's split drops trailing empty strings
    _check_batch_size(len(tokens))
    executions = await run_in_threadpool(_get_many, services, tokens, tenant)
    answers = [
        _answer(services, execution, fields, base64_encoded) if execution is not None else None
        for execution in executions
    ]
    return JSONResponse({"submissions": answers})


# languages and information


async def list_languages(request: Request) -> Response:
    auth.tenant(request)
    catalog = _catalog(_services(request).languages)
    return JSONResponse([{"id": language.id, "name": language.name} for language in catalog.listed])


async def list_all_languages(request: Request) -> Response:
    auth.tenant(request)
    catalog = _catalog(_services(request).languages)
    return JSONResponse(
        [
            {"id": language.id, "name": language.name, "is_archived": False}
            for language in catalog.every()
        ]
    )


async def get_language(request: Request) -> Response:
    auth.tenant(request)
    raw = request.path_params["language_id"]
    language = _catalog(_services(request).languages).get(int(raw)) if raw.isdigit() else None
    if language is None:
        raise NotFound()
    return JSONResponse(language.as_json())


async def list_statuses(request: Request) -> Response:
    auth.tenant(request)
    return JSONResponse([{"id": id_, "description": name} for id_, name in STATUSES.items()])


async def about(request: Request) -> Response:
    auth.tenant(request)
    return JSONResponse(
        {
            "version": VERSION,
            "homepage": None,
            "source_code": None,
            "maintainer": f"livecode {__version__}, serving the Judge0 CE {VERSION} API",
        }
    )


async def version(request: Request) -> Response:
    auth.tenant(request)
    return PlainTextResponse(VERSION)


async def get_config_info(request: Request) -> Response:
    auth.tenant(request)
    return JSONResponse(config_info(_services(request).settings))


async def authenticate(request: Request) -> Response:
    auth.tenant(request)
    return Response(status_code=200)


async def forbidden(request: Request) -> Response:
    """Judge0's admin routes: allowed with its authorization token, which livecode has none of."""
    return Response(status_code=403)


async def not_found(request: Request) -> Response:
    raise NotFound()


# helpers


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


@functools.cache
def _catalog(languages: tuple[Language, ...]) -> Catalog:
    return Catalog(languages)


def _parse(services: Services, params: dict[str, Any], base64_encoded: bool) -> SubmissionRequest:
    return parse_submission(
        params,
        base64_encoded=base64_encoded,
        settings=services.settings,
        catalog=_catalog(services.languages),
    )


def _submit(services: Services, submission: SubmissionRequest, tenant: Tenant) -> Execution:
    return services.commands.run_once(
        language=submission.language.language.id,
        source_code=submission.source_code,
        options=submission.options,
        tenant=tenant,
        judge0=submission.fields,
    )


def _submit_batch(
    services: Services, parsed: list[SubmissionRequest | dict[str, list[str]]], tenant: Tenant
) -> list[dict[str, Any]]:
    answers: list[dict[str, Any]] = []
    for item in parsed:
        if isinstance(item, SubmissionRequest):
            answers.append({"token": _submit(services, item, tenant).id})
        else:
            answers.append(item)
    return answers


def _get_many(services: Services, tokens: list[str], tenant: Tenant) -> list[Execution | None]:
    executions: list[Execution | None] = []
    for token in tokens:
        try:
            executions.append(services.commands.get_execution(token, tenant=tenant))
        except NotFound:
            executions.append(None)
    return executions


def _answer(
    services: Services, execution: Execution, fields: tuple[str, ...], base64_encoded: bool
) -> dict[str, Any]:
    return submission_json(
        execution,
        fields,
        base64_encoded=base64_encoded,
        settings=services.settings,
        catalog=_catalog(services.languages),
    )


def _check_batch_size(count: int) -> None:
    if count > MAX_BATCH_SIZE:
        raise Judge0Error(
            400,
            {
                "error": "number of submissions in a batch should be less than or equal to "
                f"{MAX_BATCH_SIZE}"
            },
        )
    if count == 0:
        raise Judge0Error(400, {"error": "there should be at least one submission in a batch"})


async def _json_or_form(request: Request, *, runs: int) -> Any:
    """The body as JSON whatever its Content-Type, or as a form when it is one."""
    body = await read_capped_body(request, body_cap(_services(request), runs=runs))
    if not body.strip():
        return {}
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("application/x-www-form-urlencoded"):
            return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        raise Judge0Error(400, {"status": 400, "error": "Bad Request"}) from None


def _judge0_errors(endpoint: Endpoint) -> Endpoint:
    """The endpoint, answering every error in Judge0's own words."""

    @functools.wraps(endpoint)
    async def answer(request: Request) -> Response:
        try:
            return await endpoint(request)
        except Judge0Error as exc:
            if exc.body is None:
                return Response(status_code=exc.status)
            return JSONResponse(exc.body, status_code=exc.status)
        except SubmissionInvalid as exc:
            return JSONResponse(exc.errors, status_code=422)
        except FieldsInvalid as exc:
            return JSONResponse(
                {"error": f"invalid fields: [{', '.join(exc.names)}]"}, status_code=400
            )
        except LivecodeError as exc:
            return _livecode_error(exc)
        except Exception:
            logger.exception("%s %s failed", request.method, request.url.path)
            return JSONResponse({"status": 500, "error": "Internal Server Error"}, status_code=500)

    return answer


def _livecode_error(exc: LivecodeError) -> Response:
    headers = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    if isinstance(exc, Unauthorized):
        return Response(status_code=401)  # Judge0's `head :unauthorized`
    if isinstance(exc, NotFound):
        return JSONResponse({"status": 404, "error": "Not Found"}, status_code=404)
    if isinstance(exc, Unavailable) and "queue is full" in exc.message:
        return JSONResponse({"error": "queue is full"}, status_code=503, headers=headers)
    if isinstance(exc, Unavailable | RateLimited) or exc.http_status < 500:
        return JSONResponse({"error": exc.message}, status_code=exc.http_status, headers=headers)
    logger.error("Judge0 request failed: %s", exc.message)
    return JSONResponse({"status": 500, "error": "Internal Server Error"}, status_code=500)


def _route(path: str, endpoint: Endpoint, methods: list[str]) -> Route:
    return Route(path, _judge0_errors(endpoint), methods=methods)


_ANY_METHOD = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]

routes: list[BaseRoute] = [
    _route("/submissions/batch", create_batch, ["POST"]),
    _route("/submissions/batch", get_batch, ["GET"]),
    _route("/submissions", create_submission, ["POST"]),
    _route("/submissions", forbidden, ["GET"]),
    _route("/submissions/{token}", get_submission, ["GET"]),
    _route("/submissions/{token}", forbidden, ["DELETE"]),
    _route("/languages", list_languages, ["GET"]),
    _route("/languages/all", list_all_languages, ["GET"]),
    _route("/languages/{language_id}", get_language, ["GET"]),
    _route("/statuses", list_statuses, ["GET"]),
    _route("/about", about, ["GET"]),
    _route("/version", version, ["GET"]),
    _route("/config_info", get_config_info, ["GET"]),
    _route("/authenticate", authenticate, ["POST"]),
    _route("/authorize", forbidden, ["POST"]),
    # Rails answers any other path and method with its JSON 404.
    _route("/{path:path}", not_found, _ANY_METHOD),
]
