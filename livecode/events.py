"""Events and JSON shapes: one encoding for WebSocket, SSE, REST and the bus.

Events of an execution, in order (SPEC.md): `status` (one per move), `output` (seq 1, 2, ...
with no gaps, across the compile, stdout and stderr streams), and last `finished`.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from livecode.store import Execution, Session

Event = dict[str, Any]

_OUTPUT_FIELDS = {"stdout": "stdout", "stderr": "stderr", "compile": "compile_output"}


def encode(event: Event) -> str:
    """The one JSON encoding of events and bodies (compact, UTF-8 kept as is)."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)


def timestamp(moment: dt.datetime | None) -> str | None:
    """ISO 8601 in UTC with a Z, as the reference API writes them."""
    if moment is None:
        return None
    if moment.tzinfo is None:  # SQLite hands back naive datetimes; we only ever store UTC
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def session_json(session: Session) -> dict[str, Any]:
    """GET /code-sessions/{id}: the reference's shape plus `session_id` and `version`."""
    return {
        "id": session.id,
        "session_id": session.id,
        "language": session.language,
        "source_code": session.source_code,
        "status": session.status,
        "version": session.version,
        "created_at": timestamp(session.created_at),
        "updated_at": timestamp(session.updated_at),
    }


def execution_json(execution: Execution) -> dict[str, Any]:
    """An execution as REST returns it; fields not yet known are omitted, as in the reference."""
    fields: dict[str, Any] = {
        "execution_id": execution.id,
        "session_id": execution.session_id,
        "language": execution.language,
        "status": str(execution.status),
        "reason": execution.reason,
        "exit_code": execution.exit_code,
        "signal": execution.signal,
        "stdout": execution.stdout,
        "stderr": execution.stderr,
        "compile_output": execution.compile_output,
        "stdout_truncated": execution.stdout_truncated if execution.is_final else None,
        "stderr_truncated": execution.stderr_truncated if execution.is_final else None,
        "execution_time_ms": execution.execution_time_ms,
        "cpu_time_ms": execution.cpu_time_ms,
        "memory_kb": execution.memory_kb,
        "attempt": execution.attempt,
        "interactive": execution.interactive or None,
        "error": execution.error_message,
        "queued_at": timestamp(execution.queued_at),
        "started_at": timestamp(execution.started_at),
        "finished_at": timestamp(execution.finished_at),
        "created_at": timestamp(execution.created_at),
    }
    return {name: value for name, value in fields.items() if value is not None}


def status_event(execution: Execution) -> Event:
    """`status` event announcing where an execution is now."""
    event: Event = {
        "type": "status",
        "execution_id": execution.id,
        "status": str(execution.status),
        "attempt": execution.attempt,
    }
    for name in ("queued_at", "started_at", "finished_at"):
        value = timestamp(getattr(execution, name))
        if value is not None:
            event[name] = value
    return event


def output_event(execution_id: str, stream: str, seq: int, data: str) -> Event:
    """`output` event: one chunk of one stream, numbered by seq."""
    return {
        "type": "output",
        "execution_id": execution_id,
        "stream": stream,
        "seq": seq,
        "data": data,
    }


def finished_event(execution: Execution) -> Event:
    """`finished` event: the final execution, as REST returns it."""
    return {"type": "finished", **execution_json(execution)}


def deleted_event(execution_id: str) -> Event:
    """`finished` for an execution deleted with its session: nothing of it is stored any more."""
    return {
        "type": "finished",
        "execution_id": execution_id,
        "status": "CANCELLED",
        "reason": "cancelled",
        "error": "the session was deleted",
    }


def replay_events(execution: Execution) -> list[Event]:
    """Every event of a final execution rebuilt from the store, with the seq each chunk had live.

    The stored `chunks` index ([stream, n_chars] per seq) cuts the stored outputs back into the
    chunks that were published, so late followers see the same events as live ones.
    """
    events = [status_event(execution)]
    offsets = dict.fromkeys(_OUTPUT_FIELDS, 0)
    for seq, (stream, length) in enumerate(execution.chunks or (), start=1):
        text = getattr(execution, _OUTPUT_FIELDS[stream]) or ""
        start = offsets[stream]
        offsets[stream] = start + length
        events.append(output_event(execution.id, stream, seq, text[start : start + length]))
    events.append(finished_event(execution))
    return events
