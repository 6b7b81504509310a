"""/openapi.json (every endpoint and schema) and /docs (Swagger UI served from the package)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import swagger_ui_bundle
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from livecode import __version__, browser, events, protocol, sse
from livecode.config import Settings
from livecode.rest import MAX_PAGE
from runners import Language, detect_languages

_ERRORS = {
    "400": "bad JSON or field",
    "401": "no API key, or a wrong one (with keys configured; without, from beyond loopback)",
    "404": "unknown session or execution (or another tenant's)",
    "413": "source or stdin too large",
    "422": "invalid value: an unknown language, a limit above the maximum, a malformed id",
    "429": "rate limited: a session's or a tenant's quota (Retry-After)",
    "503": "a dependency is down or the queue is full (Retry-After)",
}
# UTF-8 takes up to 4 bytes a character: this many characters always fit a byte limit.
UTF8_MAX_BYTES_PER_CHAR = 4


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _body(model: type[BaseModel], required: bool = True) -> dict[str, Any]:
    return {
        "required": required,
        "content": {"application/json": {"schema": _ref(model.__name__)}},
    }


def _answer(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    if schema is None:
        return {"description": description}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _operation(
    operation_id: str, summary: str, answers: dict[str, Any], errors: str = "", **extra: Any
) -> dict[str, Any]:
    """An operation that needs a key (401 is among its errors)."""
    responses = dict(answers)
    for status in ("401 " + errors).split():
        responses[status] = _answer(_ERRORS[status], _ref("Error"))
    return {"operationId": operation_id, "summary": summary, "responses": responses, **extra}


def _public(operation_id: str, summary: str, answers: dict[str, Any]) -> dict[str, Any]:
    """An operation that needs no key (SPEC.md: /health*, /docs, /openapi.json)."""
    return {"operationId": operation_id, "summary": summary, "responses": answers, "security": []}


def _links(**operations: str) -> dict[str, Any]:
    """OpenAPI links: the id in this answer is the parameter of those operations."""
    return {
        operation_id: {
            "operationId": operation_id,
            "parameters": {parameter: f"$response.body#/{parameter}"},
        }
        for operation_id, parameter in operations.items()
    }


_ID = {"type": "string", "format": "uuid"}
_SESSION_ID = {"name": "session_id", "in": "path", "required": True, "schema": _ID}
_EXECUTION_ID = {"name": "execution_id", "in": "path", "required": True, "schema": _ID}
_WAIT = {
    "name": "wait",
    "in": "query",
    "schema": {"type": "boolean"},
    "description": "wait (up to the wait cap) for the final execution",
}
# One Server-Sent Event (schemathesis checks each event of a stream against it).
_SSE_EVENT = {
    "type": "object",
    "properties": {
        "event": {"type": "string", "enum": ["status", "output", "finished", "error"]},
        "id": {"type": "string", "pattern": "^[0-9]+(-finished)?$"},
        "data": {"type": "string"},
    },
    "required": ["event", "data"],
}
_SESSION_LINKS = {
    "getSession": "session_id",
    "saveSession": "session_id",
    "runSession": "session_id",
    "listExecutions": "session_id",
    "deleteSession": "session_id",
}
_EXECUTION_LINKS = {
    "getExecution": "execution_id",
    "executionEvents": "execution_id",
    "cancelExecution": "execution_id",
}


def document(
    settings: Settings | None = None, languages: Iterable[Language] | None = None
) -> dict[str, Any]:
    """The OpenAPI 3 document of every endpoint, with this server's languages and limits (by
    default: SPEC.md's limits, and the languages found on this machine)."""
    settings = settings if settings is not None else Settings()
    languages = detect_languages() if languages is None else languages
    schemas: dict[str, Any] = {}
    for body in events.BODIES:
        _add_component(schemas, body, "serialization")
    for request in (
        protocol.CreateSession,
        protocol.SaveSource,
        protocol.RunOptions,
        protocol.OneShotRun,
    ):
        _add_component(schemas, request, "validation")
    _describe_limits(schemas, settings, languages)
    queued = _answer("queued", _ref("Queued"))
    run_answers = {
        "202": {**queued, "links": _links(**_EXECUTION_LINKS)},
        "200": _answer("with ?wait=true: the final execution", _ref("Execution")),
    }
    health = {
        "200": _answer("works", _ref("Health")),
        "503": _answer("does not work", _ref("Health")),
    }
    paths: dict[str, Any] = {
        "/code-sessions": {
            "post": _operation(
                "createSession",
                "Create a session",
                {
                    "201": {
                        **_answer("created", _ref("Session")),
                        "links": _links(**_SESSION_LINKS),
                    }
                },
                "400 413 422 429",
                requestBody=_body(protocol.CreateSession),
            ),
        },
        "/code-sessions/{session_id}": {
            "parameters": [_SESSION_ID],
            "get": _operation(
                "getSession",
                "Get a session",
                {"200": _answer("the session", _ref("Session"))},
                "404",
            ),
            "patch": _operation(
                "saveSession",
                "Autosave the source",
                {
                    "200": _answer("saved", _ref("SavedSession")),
                    "409": _answer("base_version is stale", _ref("Error")),
                },
                "400 404 413",
                requestBody=_body(protocol.SaveSource),
            ),
            "delete": _operation(
                "deleteSession",
                "Delete a session and its executions",
                {"204": _answer("deleted")},
                "404",
            ),
        },
        "/code-sessions/{session_id}/run": {
            "parameters": [_SESSION_ID, _WAIT],
            "post": _operation(
                "runSession",
                "Run the session's source",
                run_answers,
                "400 404 413 422 429 503",
                requestBody=_body(protocol.RunOptions, required=False),
            ),
        },
        "/executions": {
            "post": _operation(
                "runOnce",
                "Run source without a session",
                run_answers,
                "400 413 422 429 503",
                parameters=[_WAIT],
                requestBody=_body(protocol.OneShotRun),
            ),
        },
        "/executions/{execution_id}": {
            "parameters": [_EXECUTION_ID],
            "get": _operation(
                "getExecution",
                "Get an execution",
                {"200": _answer("the execution", _ref("Execution"))},
                "404",
            ),
        },
        "/executions/{execution_id}/events": {
            "parameters": [
                _EXECUTION_ID,
                {
                    "name": "since",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 0, "maximum": sse.MAX_SEQ},
                },
                {
                    "name": "Last-Event-ID",
                    "in": "header",
                    "schema": {"type": "string", "pattern": "^([0-9]{1,18}(-finished)?)?$"},
                    "description": "the id of the last event seen (a seq; `N-finished` at the "
                    "end); empty is none",
                },
            ],
            "get": _operation(
                "executionEvents",
                "Server-Sent Events of an execution (status, output, finished), resumable",
                {
                    "200": {
                        "description": "an event stream: each event's data is the JSON of the "
                        "WebSocket's event of that type",
                        "content": {"text/event-stream": {"schema": _SSE_EVENT}},
                    },
                    "204": _answer("resumed after the last event: nothing more will come"),
                },
                "400 404",
            ),
        },
        "/executions/{execution_id}/cancel": {
            "parameters": [_EXECUTION_ID],
            "post": _operation(
                "cancelExecution",
                "Cancel an execution",
                {"202": _answer("cancelling", _ref("Queued"))},
                "404",
            ),
        },
        "/executions/session/{session_id}": {
            "parameters": [
                _SESSION_ID,
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 50},
                },
                {
                    "name": "before",
                    "in": "query",
                    "schema": _ID,
                    "description": "an execution of this session: list those created before it",
                },
            ],
            "get": _operation(
                "listExecutions",
                "List a session's executions, newest first",
                {"200": _answer("executions", {"type": "array", "items": _ref("Execution")})},
                "400 404 422",
            ),
        },
        "/languages": {
            "get": _operation(
                "listLanguages",
                "Languages and their versions",
                {"200": _answer("languages", {"type": "array", "items": _ref("Language")})},
            ),
        },
        "/health": {
            "get": _public("health", "Liveness", {"200": _answer("alive", _ref("Health"))})
        },
    }
    for part in ("ready", "db", "redis", "workers", "celery", "sandbox"):
        paths[f"/health/{part}"] = {"get": _public(f"health_{part}", f"Health of {part}", health)}
    # the operator's, never a tenant's: LIVECODE_METRICS_TOKEN, or without it this machine only
    paths["/metrics"] = {
        "get": {
            **_operation(
                "metrics",
                "Prometheus metrics of this server (README, Metrics): the operator's",
                {
                    "200": {"description": "Prometheus text", "content": {"text/plain": {}}},
                    "403": _answer("a tenant's API key: /metrics is the operator's", _ref("Error")),
                },
            ),
            "security": [{"metricsToken": []}] if settings.metrics_token else [{}],
        }
    }
    paths["/openapi.json"] = {
        "get": _public(
            "openapi", "This document", {"200": _answer("OpenAPI 3.0", {"type": "object"})}
        )
    }
    paths["/docs"] = {
        "get": _public(
            "docs",
            "Swagger UI of this document",
            {"200": {"description": "a page", "content": {"text/html": {}}}},
        )
    }
    paths["/"] = {
        "get": _public(
            "playground",
            "The playground: an editor and a live console on /ws",
            {"200": {"description": "a page", "content": {"text/html": {}}}},
        )
    }
    paths["/static/playground/{name}"] = {
        "get": {
            **_public(
                "playgroundFile",
                "A file of the playground (script, style, icon)",
                {"200": {"description": "the file"}, "404": {"description": "no such file"}},
            ),
            "parameters": [
                {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
        }
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "livecode",
            "version": __version__,
            "description": (
                "Real-time code execution; the WebSocket protocol is at /ws (README). With API "
                "keys configured, every operation but /health*, /docs, /openapi.json and /metrics "
                "needs Authorization: Bearer <key>; /metrics is the operator's "
                "(LIVECODE_METRICS_TOKEN, or without it this machine only)."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer"},
                "metricsToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "LIVECODE_METRICS_TOKEN, the operator's (for /metrics)",
                },
            },
        },
        "security": [{"apiKey": []}],
    }


def _describe_limits(
    schemas: dict[str, Any], settings: Settings, languages: Iterable[Language]
) -> None:
    """What the models cannot know: the languages found here, and this server's limits."""
    names = [
        name
        for language in languages
        if language.available
        for name in (language.id, *language.aliases)
    ]
    source = {"maxLength": settings.max_source_bytes // UTF8_MAX_BYTES_PER_CHAR}
    stdin = {"maxLength": settings.max_stdin_bytes // UTF8_MAX_BYTES_PER_CHAR}
    for name in ("CreateSession", "OneShotRun"):
        properties = schemas[name]["properties"]
        properties["language"] = {**properties["language"], "enum": names}
        properties["source_code"].update(source)
    schemas["SaveSource"]["properties"]["source_code"].update(source)
    for name in ("RunOptions", "OneShotRun"):
        schemas[name]["properties"]["stdin"].update(stdin)
    # Cases: 1 to max_cases of them, whose stdin and expected outputs add up within the stdin
    # limit (each at most its share), and none beside a stdin, tty or interactive of the run's.
    share = {
        "maxLength": settings.max_stdin_bytes // (UTF8_MAX_BYTES_PER_CHAR * settings.max_cases)
    }
    for field in ("stdin", "expected_output"):
        schemas["CaseInput"]["properties"][field].update(share)
    no_cases = [
        {"properties": {"cases": {"nullable": True, "enum": [None]}}},
        {
            "properties": {
                "stdin": {"type": "string", "nullable": True, "enum": [None, ""]},
                "tty": {"enum": [False]},
                "interactive": {"enum": [False]},
            }
        },
    ]
    # A terminal's initial size: cols and rows both, with tty: true; or neither.
    null = {"nullable": True, "enum": [None]}
    size_with_tty = [
        {"properties": {"cols": null, "rows": null}},
        {
            "required": ["tty", "cols", "rows"],
            "properties": {
                "tty": {"enum": [True]},
                "cols": {"type": "integer"},
                "rows": {"type": "integer"},
            },
        },
    ]
    for name in ("RunOptions", "OneShotRun"):
        schema = schemas[name]
        schema["properties"]["cases"].update({"minItems": 1, "maxItems": settings.max_cases})
        schema["allOf"] = [{"anyOf": no_cases}, {"anyOf": size_with_tty}]
    maxima = {
        "timeout_s": settings.wall_timeout_s,
        "memory_mb": settings.memory_mb,
        "max_processes": settings.max_processes,
        "output_limit_bytes": settings.output_limit_bytes,
    }
    for name, maximum in maxima.items():
        schemas["RequestedLimits"]["properties"][name]["maximum"] = maximum


def _add_component(
    schemas: dict[str, Any], model: type[BaseModel], mode: Literal["validation", "serialization"]
) -> None:
    """The model's JSON Schema, and those of the models and enums it uses, as components."""
    schema = model.model_json_schema(
        mode=mode, by_alias=True, ref_template="#/components/schemas/{model}"
    )
    leave_out_none = {body.__name__ for body in events.LEAVES_OUT_NONE}
    for name, used in schema.pop("$defs", {}).items():
        schemas[name] = _openapi_30(_as_sent(used) if name in leave_out_none else used)
    if mode == "serialization" and schema.get("additionalProperties") is False:
        del schema["additionalProperties"]  # the records refuse unknown columns, not clients
    if model in events.LEAVES_OUT_NONE:
        schema = _as_sent(schema)
    schemas[model.__name__] = _openapi_30(schema)


def _as_sent(schema: dict[str, Any]) -> dict[str, Any]:
    """A body's schema as events.py sends it: a None is left out, never sent as null."""
    properties = schema["properties"]
    for name, field in list(properties.items()):
        options = field.get("anyOf")
        if isinstance(options, list) and {"type": "null"} in options:
            rest = [option for option in options if option != {"type": "null"}]
            field = {key: value for key, value in field.items() if key not in ("anyOf", "default")}
            properties[name] = {**(rest[0] if len(rest) == 1 else {"anyOf": rest}), **field}
            schema["required"] = [other for other in schema.get("required", ()) if other != name]
    return schema


def _openapi_30(schema: Any) -> Any:
    """A pydantic JSON Schema (draft 2020-12, as OpenAPI 3.1 has it) in OpenAPI 3.0's dialect,
    the one the bundled Swagger UI (4.x) reads."""
    if isinstance(schema, list):
        return [_openapi_30(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    converted = {key: _openapi_30(value) for key, value in schema.items()}
    options = converted.get("anyOf")
    if isinstance(options, list) and {"type": "null"} in options:
        rest = [option for option in options if option != {"type": "null"}]
        del converted["anyOf"]
        only = rest[0] if len(rest) == 1 else {"anyOf": rest}
        if "$ref" in only or "anyOf" in only:
            # 3.0 ignores `nullable` without a `type` beside it (and siblings of $ref)
            null = {"type": "object", "nullable": True, "enum": [None]}
            converted = {"anyOf": [*only.get("anyOf", [only]), null], **converted}
        else:
            converted = {**only, **converted, "nullable": True}
    for bound, inclusive in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        value = converted.get(bound)
        if isinstance(value, int | float) and not isinstance(value, bool):
            converted[inclusive], converted[bound] = value, True
    if "const" in converted:
        converted["enum"] = [converted.pop("const")]
    converted.pop("examples", None)
    return converted


_DOCS_SCRIPT = 'SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui"});'
_DOCS_PAGE = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>livecode API</title>
<link rel="stylesheet" href="/docs/static/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/static/swagger-ui-bundle.js"></script>
<script>{_DOCS_SCRIPT}</script>
</body></html>
"""
# Swagger UI's own files, its one inline script (by hash), the inline styles and data: images
# it makes, and requests to this server only ("Try it out").
_DOCS_HEADERS = {
    "Content-Security-Policy": "; ".join(
        [
            "default-src 'none'",
            f"script-src 'self' {browser.inline_script_csp(_DOCS_SCRIPT)}",
            "style-src 'self' 'unsafe-inline'",
            "img-src 'self' data:",
            "connect-src 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
            "form-action 'none'",
        ]
    ),
}


async def openapi_json(request: Request) -> Response:
    """The document as the server is now: without a key configured, none is needed."""
    document: dict[str, Any] = request.app.state.openapi
    if not await request.app.state.authenticator.keys_configured():
        document = {**document, "security": [{}, {"apiKey": []}]}
    return JSONResponse(document)


async def docs(request: Request) -> Response:
    return HTMLResponse(_DOCS_PAGE, headers=_DOCS_HEADERS)


routes = [
    Route("/openapi.json", openapi_json, methods=["GET"]),
    Route("/docs", docs, methods=["GET"]),
    Mount(
        "/docs/static",
        app=StaticFiles(directory=Path(swagger_ui_bundle.swagger_ui_path)),
        name="swagger-static",
    ),
]
