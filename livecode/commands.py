"""Commands shared by the WebSocket, REST and SSE edges.

Each validates (limits above the server's are refused), writes to the store, enqueues and
publishes. All are sync and thread-safe; the async edges call them with one thread hop
(`run_in_threadpool`; a socket's `websocket.in_thread`). Each acts for a `tenant` (auth.py
found it): the store answers another owner's sessions and executions with NotFound, and the
tenant's quotas apply.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Mapping
from typing import Any

from livecode import events, metrics
from livecode.bus import (
    HISTORY_AFTER_FINAL_S,
    Bus,
    control_channel,
    execution_channel,
    session_channel,
)
from livecode.config import Settings
from livecode.errors import Conflict, InvalidValue, NotFound, RateLimited, TooLarge, Unavailable
from livecode.protocol import RequestedLimits, RunOptions
from livecode.queue import Queue
from livecode.ratelimit import RateLimiter
from livecode.store import ANY_OWNER, Execution, Session, Store, parse_id
from livecode.tenants import LOCAL, Tenant
from runners import Language, Limits, UnknownLanguage, resolve_language

logger = logging.getLogger(__name__)

# How long an execution's stdin budget is remembered: longer than any run.
STDIN_BUDGET_TTL_S = 86400
_LIMIT_FIELDS = dataclasses.fields(Limits)


class Commands:
    """The things a client can ask for, whichever edge it came through."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        bus: Bus,
        queue: Queue,
        rate_limiter: RateLimiter,
        languages: tuple[Language, ...],
    ) -> None:
        self.settings = settings
        self.store = store
        self.bus = bus
        self.queue = queue
        self.rate_limiter = rate_limiter
        self.languages = languages
        self.ceiling = Limits(
            # Seconds are floats however they were given: a whole 2 must not make 0.5 "no
            # integer" (runners.Limits.clamp keeps each field's type).
            wall_timeout_s=float(settings.wall_timeout_s),
            compile_timeout_s=float(settings.compile_timeout_s),
            memory_mb=settings.memory_mb,
            max_processes=settings.max_processes,
            output_limit_bytes=settings.output_limit_bytes,
        )
        # The most a request's `limits` may ask for, by the names SPEC.md gives them.
        self.maxima = {
            "timeout_s": settings.wall_timeout_s,
            "memory_mb": settings.memory_mb,
            "max_processes": settings.max_processes,
            "output_limit_bytes": settings.output_limit_bytes,
        }
        self.refusal: str | None = None  # why runs are refused (no sandbox), if they are

    # sessions

    def create_session(self, language: str, source_code: str, *, tenant: Tenant = LOCAL) -> Session:
        """Create a session in the canonical id of `language` (aliases accepted)."""
        self._check_source(source_code)
        quotas = tenant.quotas
        return self.store.create_session(
            self._language(language).id,
            source_code,
            owner=tenant.owner,
            created_by=tenant.name,
            max_sessions=quotas.max_sessions if quotas is not None else None,
        )

    def open_session(self, session_id: str, *, tenant: Tenant = LOCAL) -> Session:
        """The session, for a socket that starts following it."""
        return self.store.get_session(session_id, owner=tenant.owner)

    def autosave(
        self,
        session_id: str,
        source_code: str,
        base_version: int | None,
        *,
        tenant: Tenant = LOCAL,
        origin: str | None = None,
    ) -> Session:
        """Save the source (committed on return) and tell every other follower of the session."""
        self._check_source(source_code)
        session = self.store.save_source(session_id, source_code, base_version, owner=tenant.owner)
        update = events.session_updated(session, origin)
        self._publish_quietly(session_channel(session.id), update, keep=False)
        return session

    def delete_session(self, session_id: str, *, tenant: Tenant = LOCAL) -> None:
        """Delete a session and its executions; running ones are cancelled, followers told."""
        for execution_id in self.store.delete_session(session_id, owner=tenant.owner):
            self._publish_quietly(control_channel(execution_id), _control("cancel"))
            self._publish_final(execution_id, events.deleted_event(execution_id))

    # executions

    def run(self, session_id: str, options: RunOptions, *, tenant: Tenant = LOCAL) -> Execution:
        """Queue a run of the session's current source."""
        # The session's language and source are read in the transaction that queues the run.
        return self._queue_run(None, None, options, session_id=session_id, tenant=tenant)

    def run_once(
        self,
        language: str,
        source_code: str,
        options: RunOptions,
        *,
        tenant: Tenant = LOCAL,
        judge0: Mapping[str, Any] | None = None,
    ) -> Execution:
        """Queue a run without a session (POST /executions, a Judge0 submission with its own
        request fields in `judge0`, a Piston job)."""
        self._check_source(source_code)
        return self._queue_run(
            self._language(language).id, source_code, options, tenant=tenant, judge0=judge0
        )

    def cancel(self, execution_id: str, *, tenant: Tenant = LOCAL) -> Execution:
        """End an execution as CANCELLED: at once when queued, through its worker when running."""
        execution = self.store.get_execution(execution_id, owner=tenant.owner)
        if execution.is_final:
            return execution
        cancelled = self.store.cancel_queued(execution_id)
        if cancelled is not None:
            metrics.count_final(cancelled)
            self._publish_final(execution_id, events.finished_event(cancelled))
            return cancelled
        self.bus.publish(control_channel(execution_id), _control("cancel"))
        return execution

    def send_stdin(
        self, execution_id: str, data: str, eof: bool, *, tenant: Tenant = LOCAL
    ) -> None:
        """Pass data (and EOF) to an interactive execution's stdin (a tty run's: keystrokes)."""
        execution = self.store.get_execution(execution_id, owner=tenant.owner)
        if execution.is_final:
            raise Conflict(f"execution {execution_id} has finished")
        if not execution.interactive:
            raise Conflict(
                "stdin can only be sent to an execution started with interactive: true or tty: true"
            )
        # Everything written to one execution's stdin counts against one cap, initial stdin
        # included: it is kept in the control channel's history until the run ends.
        cap = self.settings.max_stdin_bytes
        budget = cap - len(execution.stdin or b"")
        if not self.rate_limiter.spend(
            f"stdin:{execution.id}", len(data.encode()), budget, STDIN_BUDGET_TTL_S
        ):
            raise TooLarge(f"stdin of one execution is capped at {cap} bytes")
        self.bus.publish(control_channel(execution_id), _control("stdin", data=data, eof=eof))

    def resize(self, execution_id: str, cols: int, rows: int, *, tenant: Tenant = LOCAL) -> None:
        """Resize a tty execution's terminal (its program gets SIGWINCH). One that reaches the
        worker before the program starts is the size it starts with instead of the run's
        `cols`/`rows` (and the execution says so once it has ended); whether it does is a race,
        so a size the program must read at its start goes in the run itself."""
        execution = self.store.get_execution(execution_id, owner=tenant.owner)
        if execution.is_final:
            raise Conflict(f"execution {execution_id} has finished")
        if not execution.tty:
            raise Conflict("only an execution started with tty: true has a terminal to resize")
        self.bus.publish(control_channel(execution_id), _control("resize", cols=cols, rows=rows))

    def get_execution(self, execution_id: str, *, tenant: Tenant = LOCAL) -> Execution:
        """The execution, if it is the tenant's."""
        return self.store.get_execution(execution_id, owner=tenant.owner)

    def list_executions(
        self, session_id: str, limit: int, before: str | None, *, tenant: Tenant = LOCAL
    ) -> list[Execution]:
        """A session's executions, newest first, `limit` of them created before `before`."""
        return self.store.list_executions(
            session_id, owner=tenant.owner, limit=limit, before=before
        )

    def stored_events(self, execution_id: str) -> list[events.ExecutionEvent] | None:
        """Every event of a final execution from the store; before that, its status event.

        Whoever's it is: the relay asks, shared by every follower in the process, each of
        which an edge has already found to be the execution's owner (`get_execution`).
        """
        try:
            execution = self.store.get_execution(execution_id, owner=ANY_OWNER)
        except NotFound:
            return None
        if execution.is_final:
            return events.replay_events(execution)
        return [events.status_event(execution)]

    # helpers

    def _queue_run(
        self,
        language: str | None,
        source_code: str | None,
        options: RunOptions,
        *,
        session_id: str | None = None,
        tenant: Tenant,
        judge0: Mapping[str, Any] | None = None,
    ) -> Execution:
        if self.refusal is not None:
            raise Unavailable(self.refusal, retry_after=60.0)
        stdin = options.stdin.encode() if options.stdin is not None else None
        if stdin is not None and len(stdin) > self.settings.max_stdin_bytes:
            raise TooLarge(f"stdin is larger than {self.settings.max_stdin_bytes} bytes")
        case_inputs = self._case_inputs(options)
        tty_size = _tty_size(options)
        limits = self._limits(options.limits)
        if session_id is not None:
            session_id = parse_id(session_id, "session")  # one spelling, one rate counter
            retry_after = self.rate_limiter.hit(
                f"session:{session_id}", self.settings.runs_per_minute, 60
            )
            if retry_after is not None:
                raise RateLimited(
                    f"at most {self.settings.runs_per_minute} runs a minute per session",
                    retry_after=retry_after,
                )
        quotas = tenant.quotas
        if quotas is not None:
            retry_after = self.rate_limiter.hit(f"tenant:{tenant.name}", quotas.runs_per_minute, 60)
            if retry_after is not None:
                raise RateLimited(
                    f"at most {quotas.runs_per_minute} runs a minute for {tenant.name}",
                    retry_after=retry_after,
                )
        execution = self.store.create_execution(
            session_id=session_id,
            language=language,
            source_code=source_code,
            stdin=stdin,
            args=tuple(options.args),
            # Its fields are numbers: no need for asdict()'s deep copy (19 us).
            limits={field.name: getattr(limits, field.name) for field in _LIMIT_FIELDS},
            # a terminal's stdin is its keyboard: open while the program runs
            interactive=options.interactive or options.tty,
            tty=options.tty,
            tty_size=tty_size,
            case_inputs=case_inputs,
            owner=tenant.owner,
            created_by=tenant.name,
            max_running=quotas.max_running if quotas is not None else None,
            max_runs_per_session=self.settings.runs_per_session if session_id else None,
            max_queued=self.settings.queue_cap,
            judge0=judge0,
            max_queued_by_creator=quotas.max_queued if quotas is not None else None,
        )
        logger.info("execution %s queued by %s", execution.id, tenant.describe())
        try:
            self.bus.publish(execution_channel(execution.id), events.status_event(execution))
            self.queue.enqueue(execution.id)
        except Unavailable:
            # Not queued after all: end it now, or it would hold a place in the queue forever.
            self.store.fail(execution.id, "the queue was unavailable")
            raise
        metrics.QUEUED.labels(execution.language).inc()
        return execution

    def _case_inputs(self, options: RunOptions) -> list[dict[str, Any]] | None:
        """The run's test cases as stored, or None for a run without.

        Raises InvalidValue (422) past LIVECODE_MAX_CASES, for no case at all, and with what
        a batch of cases cannot have (tty, interactive stdin, a stdin of the run's own);
        TooLarge (413) when the cases' stdin, or their expected outputs, add up to more than
        LIVECODE_MAX_STDIN_BYTES.
        """
        if options.cases is None:
            return None
        most = self.settings.max_cases
        if not 1 <= len(options.cases) <= most:
            raise InvalidValue(f"cases: from 1 to {most} cases, got {len(options.cases)}")
        for name in ("tty", "interactive", "stdin"):
            if getattr(options, name):
                raise InvalidValue(f"cases: each case has its own stdin; {name} is not for them")
        cap = self.settings.max_stdin_bytes
        if sum(len(case.stdin.encode()) for case in options.cases) > cap:
            raise TooLarge(f"the stdin of all cases is larger than {cap} bytes")
        expected = (case.expected_output or "" for case in options.cases)
        if sum(len(text.encode()) for text in expected) > cap:
            raise TooLarge(f"the expected outputs of all cases are larger than {cap} bytes")
        return [case.model_dump() for case in options.cases]

    def _limits(self, requested: RequestedLimits | None) -> Limits:
        """The run's limits: the server's, lowered where the request asks.

        Raises InvalidValue (422) for a limit above the server's maximum: cutting it back
        quietly would run the program with less than it asked for, and hide why.
        """
        asked = requested.model_dump(exclude_none=True) if requested is not None else {}
        for name, value in asked.items():
            maximum = self.maxima[name]
            if value > maximum:
                raise InvalidValue(
                    f"limits.{name}: {value:.15g} is above this server's maximum of {maximum:.15g}"
                )
        try:
            return self.ceiling.clamp(asked)
        except ValueError as exc:
            raise InvalidValue(str(exc)) from None

    def _language(self, name: str) -> Language:
        try:
            language = resolve_language(name)
        except UnknownLanguage:
            known = ", ".join(language.id for language in self.languages)
            raise InvalidValue(f"unknown language {name!r}; expected one of {known}") from None
        if not language.available:
            raise InvalidValue(f"{language.name} is not available on this server")
        return language

    def _check_source(self, source_code: str) -> None:
        if len(source_code.encode()) > self.settings.max_source_bytes:
            raise TooLarge(f"source_code is larger than {self.settings.max_source_bytes} bytes")

    def _publish_final(self, execution_id: str, event: Mapping[str, Any]) -> None:
        """The last event of an execution; its history is kept only a little longer."""
        self._publish_quietly(
            execution_channel(execution_id), event, keep_for_s=HISTORY_AFTER_FINAL_S
        )

    def _publish_quietly(self, channel: str, event: Mapping[str, Any], **options: Any) -> None:
        """Bus.publish(), with its options; a failure is logged, not raised."""
        # The write is committed already; a bus hiccup must not turn it into an error reply.
        try:
            self.bus.publish(channel, event, **options)
        except Exception:
            logger.exception("could not publish on %s", channel)


def _tty_size(options: RunOptions) -> tuple[int, int] | None:
    """The terminal size a tty run asked to start with, or None (80x24).

    Raises InvalidValue (422) for one of cols and rows without the other, or either without
    tty: a size the run would silently not get.
    """
    if options.cols is None and options.rows is None:
        return None
    if options.cols is None or options.rows is None:
        raise InvalidValue("cols and rows: give both (the terminal's size) or neither")
    if not options.tty:
        raise InvalidValue("cols and rows: only a run with tty: true has a terminal")
    return options.cols, options.rows


def _control(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "id": uuid.uuid4().hex, **fields}
