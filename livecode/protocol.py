"""Wire schemas: every client message and request body, parsed once at the edge.

WebSocket client messages (SPEC.md, "WebSocket /ws"), each with an optional `ref`:

    create       {language, source_code}
    open         {session_id}
    autosave     {session_id, source_code, base_version?}
    run          {session_id, stdin?, args?, limits?, interactive?, tty?, cols?, rows?, cases?}
    subscribe    {execution_id, since?}
    unsubscribe  {execution_id}
    stdin        {execution_id, data, eof?}
    resize       {execution_id, cols, rows}
    cancel       {execution_id}
    ping         {}
    auth         {token}        (the first message of a socket that needs a key and sent none)

REST bodies reuse the same fields: CreateSession, SaveSource, RunOptions, OneShotRun.
Past this module nothing handles raw dicts.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    TypeAdapter,
    ValidationError,
)

from livecode.errors import BadRequest
from runners import MAX_TERMINAL_COLS, MAX_TERMINAL_ROWS

# Within what the store's BIGINT columns hold: a bigger version is a 400, not a driver error.
MAX_INT = 2**63 - 1


def _json_number(value: Any) -> Any:
    # JSON's numbers only: "1" is no version and true no timeout. A whole float (128.0, as
    # clients that compute their numbers send) is still an integer.
    if isinstance(value, str | bool):
        raise ValueError("must be a JSON number")
    return value


Number = BeforeValidator(_json_number)
PositiveInt = Annotated[int, Field(gt=0, le=MAX_INT), Number]
PositiveFloat = Annotated[float, Field(gt=0), Number]


def _utf8(text: str) -> str:
    # JSON may carry lone surrogates ("\ud800"), which no UTF-8 program text can hold.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (no lone surrogates)") from None
    return text


def _no_nul(text: str) -> str:
    if "\x00" in text:
        raise ValueError("must not contain NUL characters")
    return _utf8(text)


# Stdin may hold any character; source and arguments cannot hold NUL (the store and exec),
# which their JSON Schema says too (a pattern ECMA-262 and Python read alike).
Text = Annotated[str, AfterValidator(_utf8)]
Code = Annotated[
    str, AfterValidator(_no_nul), Field(json_schema_extra={"pattern": "^[^\\u0000]*$"})
]


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


def _example(body: dict[str, Any]) -> ConfigDict:
    """A request body's config with the example OpenAPI shows (Swagger's "Try it out" sends it;
    tests/test_openapi.py sends each one and expects a 2xx)."""
    return ConfigDict(json_schema_extra={"example": body})  # merged with the base's config


class RequestedLimits(_Message):
    """Limits of one run: each at most the server's (more is refused with 422); unset, the
    server's."""

    timeout_s: PositiveFloat | None = None
    memory_mb: PositiveInt | None = None
    max_processes: PositiveInt | None = None
    output_limit_bytes: PositiveInt | None = None


Args = Annotated[list[Annotated[Code, Field(max_length=4096)]], Field(max_length=64)]
# A terminal's size, in a run (its size when the program starts) or a resize.
Cols = Annotated[int, Field(ge=1, le=MAX_TERMINAL_COLS), Number]
Rows = Annotated[int, Field(ge=1, le=MAX_TERMINAL_ROWS), Number]


class CaseInput(_Message):
    """One test case of a run: its stdin, its arguments (unset: the run's), and the output it
    should print (unset: no verdict)."""

    stdin: Text = ""
    args: Args | None = None
    expected_output: Text | None = None


class RunOptions(_Message):
    """Body of POST /code-sessions/{id}/run (optional) and the options of a WS run."""

    model_config = _example({"stdin": "world", "limits": {"timeout_s": 5}})

    stdin: Text | None = None
    args: Args = Field(default_factory=list)
    limits: RequestedLimits | None = None
    interactive: StrictBool = False
    # a terminal of its own: one output stream, stdin typed into it
    tty: StrictBool = False
    cols: Cols | None = Field(
        default=None,
        description="tty: the terminal's columns when the program starts (with rows; unset: 80)",
    )
    rows: Rows | None = Field(
        default=None,
        description="tty: the terminal's rows when the program starts (with cols; unset: 24)",
    )
    # compiled once, each case run in a fresh sandbox (at most LIVECODE_MAX_CASES)
    cases: list[CaseInput] | None = None


class CreateSession(_Message):
    """Body of POST /code-sessions."""

    model_config = _example({"language": "python", "source_code": "print('hello')"})

    language: Annotated[str, Field(min_length=1, max_length=32)]
    source_code: Code = ""


class SaveSource(_Message):
    """Body of PATCH /code-sessions/{id}."""

    model_config = _example({"source_code": "print('hello, ' + input())"})

    source_code: Code
    base_version: PositiveInt | None = None


class OneShotRun(RunOptions):
    """Body of POST /executions: a run without a session."""

    model_config = _example({"language": "python", "source_code": "print('hello')"})

    language: Annotated[str, Field(min_length=1, max_length=32)]
    source_code: Code


class _Client(_Message):
    ref: Annotated[str, Field(max_length=256)] | None = None


class CreateMessage(_Client):
    type: Literal["create"]
    language: Annotated[str, Field(min_length=1, max_length=32)]
    source_code: Code = ""


class OpenMessage(_Client):
    type: Literal["open"]
    session_id: str


class AutosaveMessage(_Client):
    type: Literal["autosave"]
    session_id: str
    source_code: Code
    base_version: PositiveInt | None = None


class RunMessage(_Client, RunOptions):
    type: Literal["run"]
    session_id: str


class SubscribeMessage(_Client):
    type: Literal["subscribe"]
    execution_id: str
    since: Annotated[int, Field(ge=0, le=MAX_INT), Number] = 0


class UnsubscribeMessage(_Client):
    type: Literal["unsubscribe"]
    execution_id: str


class StdinMessage(_Client):
    type: Literal["stdin"]
    execution_id: str
    data: Text = ""
    eof: StrictBool = False


class ResizeMessage(_Client):
    type: Literal["resize"]
    execution_id: str
    cols: Cols
    rows: Rows


class CancelMessage(_Client):
    type: Literal["cancel"]
    execution_id: str


class PingMessage(_Client):
    type: Literal["ping"]


class AuthMessage(_Client):
    type: Literal["auth"]
    token: Annotated[str, Field(min_length=1, max_length=256)]


ClientMessage = Annotated[
    CreateMessage
    | OpenMessage
    | AutosaveMessage
    | RunMessage
    | SubscribeMessage
    | UnsubscribeMessage
    | StdinMessage
    | ResizeMessage
    | CancelMessage
    | PingMessage
    | AuthMessage,
    Field(discriminator="type"),
]
MESSAGE_TYPES = (
    "create open autosave run subscribe unsubscribe stdin resize cancel ping auth".split()
)
MESSAGE_MODELS: tuple[type[_Client], ...] = (
    CreateMessage,
    OpenMessage,
    AutosaveMessage,
    RunMessage,
    SubscribeMessage,
    UnsubscribeMessage,
    StdinMessage,
    ResizeMessage,
    CancelMessage,
    PingMessage,
    AuthMessage,
)

_client_message = TypeAdapter[ClientMessage](ClientMessage)
_Body = TypeVar("_Body", bound=BaseModel)


def parse_message(text: str | bytes) -> ClientMessage:
    """Parse one WebSocket text frame; raises BadRequest with a message a person can act on."""
    data = _load_json(text)
    if not isinstance(data, dict):
        raise BadRequest("a message must be a JSON object")
    kind = data.get("type")
    if kind not in MESSAGE_TYPES:
        raise BadRequest(
            f"unknown message type {kind!r}; expected one of {', '.join(MESSAGE_TYPES)}"
        )
    try:
        return _client_message.validate_python(data)
    except ValidationError as exc:
        raise BadRequest(_describe(exc)) from None


def ref_of(text: str | bytes) -> str | None:
    """The `ref` of a message that failed to parse, so its error can still be matched."""
    try:
        data = _load_json(text)
    except BadRequest:
        return None
    ref = data.get("ref") if isinstance(data, dict) else None
    return ref if isinstance(ref, str) else None


def parse_body(model: type[_Body], body: bytes, *, optional: bool = False) -> _Body:
    """Parse a REST JSON body into `model`; an empty body is `{}` when `optional`."""
    if optional and not body.strip():
        return model()
    data = _load_json(body)
    if not isinstance(data, dict):
        raise BadRequest("the request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise BadRequest(_describe(exc)) from None


def _load_json(text: str | bytes) -> Any:
    try:
        return json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"invalid JSON: {exc}") from None
    except RecursionError:
        raise BadRequest("invalid JSON: nested too deeply") from None


def _describe(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False):
        parts = list(error["loc"])
        if len(parts) > 1 and parts[0] in MESSAGE_TYPES:  # the message's tag, not a field
            parts = parts[1:]
        location = ".".join(str(part) for part in parts)
        text = error["msg"].removeprefix("Value error, ")
        problems.append(f"{location}: {text}" if location else text)
    return "; ".join(problems)
