"""Everything the server sends: the response bodies, the events, and their one JSON encoding.

Bodies are pydantic models: REST sends what they dump, the WebSocket's replies carry them, and
openapi.py describes them from the same fields. The session and the execution are the store's
records themselves (store/records.py); the others are here. Each is built with validation, in
Rust: 2-3 us a body, where ``model_construct`` (pure Python) takes more, and the dict literals
they replaced 1.4.

Events are TypedDicts, one per type: on the bus, in the relay and on their way to a socket they
stay plain dicts, so typing them costs nothing (the relay hands one SharedEvent, a dict encoded
once, to all the followers of a channel). Who gets which:

    every follower of an execution     status, output (seq 1, 2, ... without gaps), finished
    the other followers of a session   session.updated
    the socket that asked              created, opened, saved, queued, unsubscribed, pong,
                                       authenticated, error (also a follow's last event when
                                       it breaks)

A reply's ``ref`` echoes the message's; a None ref is not sent (websocket.py).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from typing import Any, Literal, NotRequired, TypedDict, cast, overload

from pydantic import BaseModel, ConfigDict, Field

from livecode.errors import LivecodeError
from livecode.store import Execution, Session, SessionStatus
from livecode.store.records import STREAM_FIELDS, CaseResult, Id, Mark, marked
from runners import ExecutionStatus, Language as RunnersLanguage, Reason, Stream

# -- bodies --------------------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(frozen=True)


class SavedSession(_Body):
    """The session's new version, once the save is committed."""

    session_id: Id
    status: SessionStatus
    version: int
    updated_at: dt.datetime


class Queued(_Body):
    """Where an execution is, right after it was queued (or asked to stop)."""

    execution_id: Id
    status: ExecutionStatus
    warning: str | None = Field(
        default=None, description="why it may stay QUEUED a while (e.g. no worker is alive)"
    )


class Language(_Body):
    """A language, with the version detected at start; an unavailable one cannot run."""

    id: str
    name: str
    version: str | None
    aliases: list[str]
    available: bool


class Health(_Body):
    """What a health check found: its status, why it failed, and what it measured."""

    model_config = ConfigDict(frozen=True, extra="allow")

    status: str
    reason: str | None = None
    timestamp: dt.datetime | None = None


class ErrorDetail(_Body):
    """What went wrong: a code a program can act on, a message a person can."""

    code: str
    message: str


class Error(_Body):
    """Every error answer (400, 401, 404, 409, 413, 422, 429, 503)."""

    error: ErrorDetail


# The bodies openapi.py describes, in the order of its components.
BODIES: tuple[type[BaseModel], ...] = (
    Session,
    SavedSession,
    Queued,
    Execution,
    Language,
    Health,
    Error,
)

# The bodies (and parts of them) whose fields are left out rather than sent as null when they
# have no value.
LEAVES_OUT_NONE: frozenset[type[BaseModel]] = frozenset({Execution, CaseResult, Health, Queued})

_SENT_WHEN_FINAL = marked(Execution, Mark.SENT_WHEN_FINAL)
_SENT_WHEN_TRUE = marked(Execution, Mark.SENT_WHEN_TRUE)
_STATUS_TIMES = {"queued_at", "started_at", "finished_at"}


def session_json(session: Session) -> dict[str, Any]:
    """A session as REST and the `created` / `opened` events send it."""
    # The reference's order: its id first, then the same id as session_id, then the rest.
    return {"id": session.id, "session_id": session.id, **session.model_dump(mode="json")}


def execution_json(execution: Execution) -> dict[str, Any]:
    """An execution as REST and the `finished` event send it; a None is left out."""
    hidden = {name for name in _SENT_WHEN_TRUE if not getattr(execution, name)}
    if not execution.is_final:
        hidden |= _SENT_WHEN_FINAL
    return execution.model_dump(
        mode="json", by_alias=True, exclude_none=True, exclude=hidden or None
    )


def saved_json(session: Session) -> dict[str, Any]:
    """The answer to an autosave over REST."""
    return SavedSession.model_validate(session, from_attributes=True).model_dump(mode="json")


def queued_json(execution: Execution, warning: str | None = None) -> dict[str, Any]:
    """The answer to a run (202) or a cancel."""
    return Queued(execution_id=execution.id, status=execution.status, warning=warning).model_dump(
        mode="json", exclude_none=True
    )


def languages_json(languages: Iterable[RunnersLanguage]) -> list[dict[str, Any]]:
    """GET /languages."""
    return [
        Language.model_validate(language, from_attributes=True).model_dump(mode="json")
        for language in languages
    ]


def health_json(status: str, **found: Any) -> dict[str, Any]:
    """A health check's answer: its status, then what it found (a reason, measures...)."""
    return Health(status=status, **found).model_dump(mode="json", exclude_unset=True)


def error_json(code: str, message: str) -> dict[str, Any]:
    """A REST error body."""
    return Error(error=ErrorDetail(code=code, message=message)).model_dump(mode="json")


# -- events --------------------------------------------------------------------------------


class StatusEvent(TypedDict):
    """Where an execution is now: one per move (QUEUED, RUNNING per attempt).

    From the second attempt on, `seq` is the last seq before this attempt's output: its
    output events are numbered seq + 1, seq + 2, ... (`seq_base`).
    """

    type: Literal["status"]
    execution_id: str
    status: str
    attempt: int
    seq: NotRequired[int]
    queued_at: NotRequired[str]
    started_at: NotRequired[str]
    finished_at: NotRequired[str]


class OutputEvent(TypedDict):
    """One chunk of one stream (stdout, stderr, compile), numbered by seq; a test case's chunk
    says which case (its index)."""

    type: Literal["output"]
    execution_id: str
    stream: str
    seq: int
    data: str
    case: NotRequired[int]


class FinishedEvent(TypedDict):
    """The last event of an execution; beside these, every field of `execution_json`."""

    type: Literal["finished"]
    execution_id: str
    status: str


class SessionUpdated(TypedDict):
    """A save, for the other followers of the session."""

    type: Literal["session.updated"]
    session_id: str
    version: int
    source_code: str
    origin: NotRequired[str | None]  # the saving socket, which gets `saved` instead; not sent


class ErrorEvent(TypedDict):
    """A refused message, or the end of a follow that broke (with what it followed)."""

    type: Literal["error"]
    code: str
    message: str
    ref: NotRequired[str]
    retry_after: NotRequired[float]
    execution_id: NotRequired[str]
    session_id: NotRequired[str]


class SessionReply(TypedDict):
    """`created` or `opened`: the session, which the socket now follows."""

    type: Literal["created", "opened"]
    ref: str | None
    session: dict[str, Any]


class SavedReply(TypedDict):
    """An autosave is committed."""

    type: Literal["saved"]
    ref: str | None
    session_id: str
    version: int
    updated_at: str


class QueuedReply(TypedDict):
    """A run is queued, and the socket follows it; beside these, the fields of `Queued`."""

    type: Literal["queued"]
    ref: str | None


class Unsubscribed(TypedDict):
    """The socket no longer follows the execution."""

    type: Literal["unsubscribed"]
    ref: str | None
    execution_id: str


class Pong(TypedDict):
    """The answer to a ping."""

    type: Literal["pong"]
    ref: str | None


class Authenticated(TypedDict):
    """The answer to an `auth` message: the socket acts for that key from now on."""

    type: Literal["authenticated"]
    ref: str | None


# The events every follower of an execution gets.
ExecutionEvent = StatusEvent | OutputEvent | FinishedEvent
Event = (
    StatusEvent
    | OutputEvent
    | FinishedEvent
    | SessionUpdated
    | ErrorEvent
    | SessionReply
    | SavedReply
    | QueuedReply
    | Unsubscribed
    | Pong
    | Authenticated
)


def encode(event: Mapping[str, Any] | list[Any]) -> str:
    """The one JSON encoding of events and bodies (compact, UTF-8 kept as is).

    A SharedEvent is encoded once, however many followers send it.
    """
    if type(event) is SharedEvent:
        return event.text
    return _encode(event)


def _encode(event: Mapping[str, Any] | list[Any]) -> str:
    return _ENCODER.encode(event)


# Built once: json.dumps() builds an encoder per call when given options.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


class SharedEvent(dict[str, Any]):
    """An event the relay hands to every follower of a channel: encoded at most once.

    With 1,000 followers, json.dumps per follower was 12 % of a server's CPU per chunk (issue
    14). Never changed once shared: whoever needs another event builds a new dict from it.
    """

    __slots__ = ("_text",)

    def __init__(self, event: Mapping[str, Any], text: str | None = None) -> None:
        """`text`, when given, is the event's encoding already (encode() of it)."""
        super().__init__(event)
        self._text: str | None = text

    @property
    def text(self) -> str:
        """The event's encoding, the same as encode() gives a plain dict of it."""
        if self._text is None:
            self._text = _encode(self)
        return self._text


@overload
def timestamp(moment: dt.datetime) -> str: ...
@overload
def timestamp(moment: None) -> None: ...
def timestamp(moment: dt.datetime | None) -> str | None:
    """ISO 8601 in UTC with a Z, as the reference API writes them."""
    if moment is None:
        return None
    if moment.tzinfo is None:  # SQLite hands back naive datetimes; we only ever store UTC
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def status_event(execution: Execution) -> StatusEvent:
    """`status`: where an execution is now, with the times known so far."""
    times = execution.model_dump(mode="json", include=_STATUS_TIMES, exclude_none=True)
    event = cast(
        StatusEvent,
        {
            "type": "status",
            "execution_id": execution.id,
            "status": execution.status.value,
            "attempt": execution.attempt,
            **times,
        },
    )
    base = seq_base(execution)
    if base:
        event["seq"] = base
    return event


def seq_base(execution: Execution) -> int:
    """The last seq before the output of the execution's current attempt.

    Attempt n numbers its output events from (n - 1) * block + 1, where no attempt can publish
    a block's worth (each chunk holds at least one byte of a stream capped at
    output_limit_bytes): so seq keeps rising across attempts, attempts never share a seq (not
    even with a worker that lost its lease and has not noticed yet), and no attempt needs to
    know how far the one before it got (its history may be gone with Redis).
    """
    if execution.attempt <= 1:
        return 0
    output_limit = int(execution.limits.get("output_limit_bytes") or 0)
    return (execution.attempt - 1) * seq_block(output_limit)


def seq_block(output_limit_bytes: int) -> int:
    """A power of ten, at least a million, above what one attempt can publish."""
    most = len(STREAM_FIELDS) * output_limit_bytes + 16  # three streams; the timeout notice
    return int(10 ** max(6, len(str(most))))


def output_event(
    execution_id: str, stream: str, seq: int, data: str, case: int | None = None
) -> OutputEvent:
    """`output`: one chunk of one stream, numbered by seq (and of a test case: its index)."""
    event: OutputEvent = {
        "type": "output",
        "execution_id": execution_id,
        "stream": stream,
        "seq": seq,
        "data": data,
    }
    if case is not None:
        event["case"] = case
    return event


def finished_event(execution: Execution) -> FinishedEvent:
    """`finished`: the final execution, as REST returns it."""
    return cast(FinishedEvent, {"type": "finished", **execution_json(execution)})


def deleted_event(execution_id: str) -> FinishedEvent:
    """`finished` for an execution deleted with its session: nothing of it is stored any more."""
    return cast(
        FinishedEvent,
        {
            "type": "finished",
            "execution_id": execution_id,
            "status": ExecutionStatus.CANCELLED.value,
            "reason": Reason.CANCELLED.value,
            "error": "the session was deleted",
        },
    )


def session_updated(session: Session, origin: str | None) -> SessionUpdated:
    """`session.updated`, published for every follower of the session but `origin`."""
    return {
        "type": "session.updated",
        "session_id": session.id,
        "version": session.version,
        "source_code": session.source_code,
        "origin": origin,
    }


def error_event(
    error: LivecodeError,
    *,
    ref: str | None = None,
    execution_id: str | None = None,
    session_id: str | None = None,
) -> ErrorEvent:
    """`error`: the one builder of error events (code from the error's class, errors.py)."""
    event: ErrorEvent = {"type": "error", "code": error.code, "message": error.message}
    if ref is not None:
        event["ref"] = ref
    if error.retry_after is not None:
        event["retry_after"] = error.retry_after
    if execution_id is not None:
        event["execution_id"] = execution_id
    if session_id is not None:
        event["session_id"] = session_id
    return event


def session_reply(
    kind: Literal["created", "opened"], ref: str | None, session: Session
) -> SessionReply:
    """`created` / `opened`."""
    return {"type": kind, "ref": ref, "session": session_json(session)}


def saved_reply(ref: str | None, session: Session) -> SavedReply:
    """`saved`, sent once the save is committed."""
    return {
        "type": "saved",
        "ref": ref,
        "session_id": session.id,
        "version": session.version,
        "updated_at": timestamp(session.updated_at),
    }


def queued_reply(ref: str | None, execution: Execution) -> QueuedReply:
    """`queued`."""
    return cast(QueuedReply, {"type": "queued", "ref": ref, **queued_json(execution)})


def unsubscribed_reply(ref: str | None, execution_id: str) -> Unsubscribed:
    """`unsubscribed`: no more events of that execution reach the socket."""
    return {"type": "unsubscribed", "ref": ref, "execution_id": execution_id}


def pong(ref: str | None) -> Pong:
    """`pong`, the answer to a ping."""
    return {"type": "pong", "ref": ref}


def authenticated(ref: str | None) -> Authenticated:
    """`authenticated`, the answer to an `auth` message."""
    return {"type": "authenticated", "ref": ref}


def replay_events(execution: Execution) -> list[ExecutionEvent]:
    """Every event of a final execution rebuilt from the store, with the seq each chunk had live.

    The stored `chunks` index ([stream, n_chars] per seq, [stream, n_chars, case] for a test
    case's) cuts the stored outputs back into the chunks that were published, so late followers
    see the same events as live ones.
    """
    events: list[ExecutionEvent] = [status_event(execution)]
    offsets = dict.fromkeys(STREAM_FIELDS, 0)
    first_seq = seq_base(execution) + 1
    for seq, (name, length, *case) in enumerate(execution.chunks or (), start=first_seq):
        stream = Stream(name)
        text = getattr(execution, STREAM_FIELDS[stream]) or ""
        start = offsets[stream]
        offsets[stream] = start + length
        data = text[start : start + length]
        events.append(output_event(execution.id, name, seq, data, *case))
    events.append(finished_event(execution))
    return events
