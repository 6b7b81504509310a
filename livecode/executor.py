"""The executor: what a worker thread does with one `execute` message.

claim (RUNNING, attempt+1, this worker's lease) -> runners sandbox run (its `status` published
once the program has started), each chunk published with its seq -> store.finish() of that
attempt -> only after that commit, `finished` is published.
Cancel, interactive stdin and a tty run's resizes arrive on the execution's control channel.
A worker shutting down past its grace hands its runs back (`hand_back`): QUEUED again, for
another worker.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from livecode import events, logs, metrics
from livecode.bus import HISTORY_AFTER_FINAL_S, Bus, control_channel, execution_channel
from livecode.errors import NotFound, Unavailable
from livecode.lease import Leases
from livecode.store import Execution, Store, utc_now
from livecode.store.records import OUTCOME_FIELDS, STREAM_FIELDS, CaseResult
from runners import (
    Case,
    Control,
    ExecutionStatus,
    Limits,
    Program,
    Reason,
    Result,
    RunnerError,
    Sandbox,
    Stream,
)

logger = logging.getLogger(__name__)

# A database or bus that is briefly away at the end of a run: retry storing the result, and
# publishing its events, for ~15 s.
FINISH_RETRY_DELAYS_S = (0.2, 0.5, 1.0, 2.0, 4.0, 8.0)
# While the bus is away, events wait; a new one tries again after this long, not at once.
PUBLISH_RETRY_AFTER_S = 0.5
# A claim that finds the database away is retried as long; then a sweeper enqueues the
# execution again once the database is back (its message is acknowledged: never lost).
CLAIM_RETRY_DELAYS_S = (0.2, 0.5, 1.0, 2.0, 4.0)
# What one attempt's enqueue gets: (execution id, attempt it starts).
Enqueue = Callable[..., None]
_T = TypeVar("_T")
# The Outcome fields that runners.Result names its own way (the SPEC's names are the store's);
# tty_cols and tty_rows come from its terminal_size (_outcome).
_RESULT_NAMES = {"execution_time_ms": "wall_time_ms", "error_message": "message"}
_RESULT_FIELDS = frozenset(field.name for field in dataclasses.fields(Result))


class Executor:
    """Runs executions from the store in the sandbox. Thread-safe: one call per worker thread.

    With `leases`, each claimed execution is held under this worker's lease; with `enqueue`
    (``enqueue(execution_id, attempt=n)``), `hand_back` can queue runs again.
    """

    def __init__(
        self,
        store: Store,
        bus: Bus,
        sandbox: Sandbox,
        *,
        leases: Leases | None = None,
        enqueue: Enqueue | None = None,
    ) -> None:
        self.store = store
        self.bus = bus
        self.sandbox = sandbox
        self.leases = leases
        self._enqueue = enqueue
        self._running: dict[str, Control] = {}
        self._lock = threading.Lock()
        self._is_handing_back = False

    @property
    def running(self) -> int:
        """How many executions this executor runs now."""
        with self._lock:
            return len(self._running)

    def hand_back(self) -> None:
        """Stop every run under way and queue it again as a new attempt (a shutdown whose
        grace is over). Runs that start after this are handed back at once."""
        with self._lock:
            self._is_handing_back = True
            controls = list(self._running.values())
        for control in controls:
            control.cancel()

    def execute(self, execution_id: str) -> None:
        """Run one execution to its final state.

        Idempotent: a redelivered message for an execution that is already running or final
        does nothing.
        """
        with logs.about(execution_id=execution_id):
            try:
                self._execute(execution_id)
            except Unavailable as exc:
                # The result could not be stored: the lease runs out and a sweeper retries it.
                logger.error("execution %s: the store is unavailable (%s)", execution_id, exc)

    def _execute(self, execution_id: str) -> None:
        log = logging.LoggerAdapter(logger, {"execution_id": execution_id})
        events_out = _Publisher(self.bus, execution_channel(execution_id))
        inbox = _ControlInbox()
        # Listen before claiming: a cancel sent once the execution is RUNNING must not be lost.
        with self.bus.listen(control_channel(execution_id), inbox.receive):
            execution = self._claim(execution_id, log)
            if execution is None:
                return
            if execution.interactive or execution.attempt > 1:
                try:
                    inbox.replay(self.bus.history(control_channel(execution_id)))
                except Unavailable as exc:
                    log.warning("control history of %s unreadable: %s", execution_id, exc)
                    inbox.replay([])
            else:
                # Nothing can be in the history yet, so one Redis round trip a run less: stdin
                # and resize go to interactive runs only, and a cancel goes through the control
                # channel only once the execution is RUNNING, which this claim made it, after
                # the listen began (earlier attempts' cancels are read above).
                inbox.replay([])
            self._count_claim(execution)
            if self.leases is not None:
                self.leases.hold(execution.id, inbox.control.cancel)
            with self._lock:
                self._running[execution.id] = inbox.control
                if self._is_handing_back:
                    inbox.control.cancel()
            try:
                finished = self._attempt(execution, inbox.control, events_out, log)
            finally:
                with self._lock:
                    del self._running[execution.id]
                if self.leases is not None:
                    self.leases.release(execution.id)
            if finished is not None:
                events_out.publish(finished, keep_for_s=HISTORY_AFTER_FINAL_S)
            try:
                _with_retries(events_out.flush, "publishing the last events")
            except Unavailable:
                log.error("execution %s: its events could not be published", execution_id)
        if inbox.received_any:  # else it has no history to drop
            self.bus.expire(control_channel(execution_id), HISTORY_AFTER_FINAL_S)
        if finished is not None:
            log.info(
                "execution %s finished: %s/%s",
                execution_id,
                finished["status"],
                finished.get("reason"),
            )

    def _claim(self, execution_id: str, log: logging.LoggerAdapter[Any]) -> Execution | None:
        """Claim with retries through a short database outage; None when not ours to run."""
        for delay_s in (*CLAIM_RETRY_DELAYS_S, None):
            try:
                execution = self.store.claim(
                    execution_id,
                    worker=self.leases.worker if self.leases is not None else None,
                    lease_expires_at=self.leases.expires_at() if self.leases is not None else None,
                )
            except Unavailable as exc:
                if delay_s is None:
                    log.error(
                        "execution %s could not be claimed (%s); a sweeper will enqueue it "
                        "again once the database is back",
                        execution_id,
                        exc,
                    )
                    return None
                log.warning(
                    "claiming %s failed (%s); retrying in %.1f s", execution_id, exc, delay_s
                )
                time.sleep(delay_s)
                continue
            if execution is None:
                log.info("execution %s is not queued any more; skipped", execution_id)
            return execution
        return None

    def _attempt(
        self,
        execution: Execution,
        control: Control,
        events_out: _Publisher,
        log: logging.LoggerAdapter[Any],
    ) -> events.FinishedEvent | None:
        """Run one attempt: announce it, run, store; the `finished` event, or None when the
        attempt's end is not the execution's (handed back, or taken over)."""
        announced = False

        def announce_running() -> None:
            nonlocal announced
            if not announced:
                events_out.publish(events.status_event(execution))
                announced = True

        # Announced once the program has started: sent before, the event woke the server's
        # loop to compete with the start for the GIL.
        control.on_start(announce_running)
        outcome = self._run(execution, control, events_out, log)
        announce_running()  # a run that never started (no slot, a sandbox failure) too
        if self._is_handing_back and outcome.result.status == ExecutionStatus.CANCELLED:
            self._requeue(execution, events_out, log)
            return None
        if self.leases is not None:
            self.leases.release(execution.id)  # ended: a renewal now would call it lost
        return self._finish(execution, outcome, log)

    def _run(
        self,
        execution: Execution,
        control: Control,
        events_out: _Publisher,
        log: logging.LoggerAdapter[Any],
    ) -> _Outcome:
        """Run in the sandbox; return what to store."""
        streamed = _Streamed(events.seq_base(execution))

        def on_case_output(case: int | None, stream: Stream, text: str) -> None:
            # PostgreSQL text cannot hold NUL; replace it alike in what is sent and stored.
            text = text.replace("\x00", "\ufffd")
            seq = streamed.add(str(stream), text, case)
            events_out.publish(events.output_event(execution.id, str(stream), seq, text, case))

        def on_output(stream: Stream, text: str) -> None:
            on_case_output(None, stream, text)

        program = Program(
            language=execution.language,
            source=execution.source_code,
            stdin=execution.stdin,
            args=tuple(execution.args),
            interactive=execution.interactive,
            tty=execution.tty,
            terminal_size=_terminal_size(execution),
            cases=_cases(execution),
        )
        limits = Limits(**execution.limits)
        started = time.perf_counter()
        try:
            result = self.sandbox.run(
                program, limits, on_output, control, on_case_output=on_case_output
            )
        except RunnerError as exc:
            log.error("execution %s could not run: %s", execution.id, exc)
            return _Outcome(streamed, _internal_error(str(exc)))
        except Exception:
            log.exception("execution %s failed inside the executor", execution.id)
            return _Outcome(streamed, _internal_error("internal error"))
        elapsed_s = time.perf_counter() - started
        metrics.RUN_DURATION.labels(execution.language).observe(result.wall_time_ms / 1000)
        metrics.SANDBOX_OVERHEAD.labels(execution.language).observe(
            max(0.0, elapsed_s - result.wall_time_ms / 1000)
        )
        if result.reason == Reason.TIMEOUT and not result.stderr_truncated and not result.cases:
            # The reference API reports a timeout in stderr; send it as a chunk too, so the
            # streamed output and the stored one stay byte-equal. A terminal has one stream:
            # there it is the terminal's last line. (A test case that timed out says it in its
            # own `error`: its stderr is the program's alone.)
            notice = f"Execution exceeded {limits.wall_timeout_s:g} second timeout"
            stream, text, newline = Stream.STDERR, result.stderr, "\n"
            if execution.tty:
                stream, text, newline = Stream.STDOUT, result.stdout, "\r\n"
            if text and not text.endswith("\n"):
                notice = newline + notice
            on_output(stream, notice)
        return _Outcome(streamed, result)

    def _finish(
        self, execution: Execution, outcome: _Outcome, log: logging.LoggerAdapter[Any]
    ) -> events.FinishedEvent | None:
        result = outcome.result
        final = _with_retries(
            lambda: self.store.finish(
                execution.id,
                status=result.status,
                attempt=execution.attempt,
                **_outcome(result, outcome.streamed),
            )
        )
        if final is not None:
            metrics.count_final(final)
            return events.finished_event(final)
        try:  # someone else ended it first: report what is stored
            stored = self.store.get_execution(execution.id, owner=execution.owner)
        except NotFound:  # deleted with its session while it ran
            return events.deleted_event(execution.id)
        if stored.is_final:
            return events.finished_event(stored)
        log.warning(
            "attempt %d of execution %s was taken over by a sweeper; its result is dropped",
            execution.attempt,
            execution.id,
        )
        return None

    def _requeue(
        self, execution: Execution, events_out: _Publisher, log: logging.LoggerAdapter[Any]
    ) -> None:
        """Hand an attempt stopped by a shutdown back: QUEUED again, and enqueued."""
        if self.leases is not None:
            self.leases.release(execution.id)
        queued = _with_retries(
            lambda: self.store.recovery.requeue(
                execution.id, attempt=execution.attempt, not_before=utc_now()
            ),
            "handing an execution back",
        )
        if queued is None:
            return
        metrics.SWEEPER_ACTIONS.labels("handed_back").inc()
        log.info("execution %s handed back (attempt %d)", execution.id, execution.attempt)
        events_out.publish(events.status_event(queued))
        if self._enqueue is not None:
            try:
                self._enqueue(execution.id, attempt=execution.attempt + 1)
            except Unavailable as exc:  # a sweeper enqueues it once Redis is back
                log.warning("execution %s handed back but not enqueued: %s", execution.id, exc)

    def _count_claim(self, execution: Execution) -> None:
        metrics.ATTEMPTS.labels(str(execution.attempt)).inc()
        if execution.attempt == 1 and execution.started_at is not None:
            waited = execution.started_at - execution.queued_at
            metrics.QUEUE_WAIT.observe(max(0.0, waited.total_seconds()))


@dataclasses.dataclass(frozen=True, slots=True)
class _Outcome:
    """What one attempt produced: its output as streamed, and the runner's result."""

    streamed: _Streamed
    result: Result


class _Publisher:
    """An execution's events, published on its channel in order. While the bus is away they
    wait here and go out, still in order, once it is back: a Redis blip neither kills the
    program (a publish that raised in on_output would) nor leaves a hole in the history.
    What waits is bounded by the run's output limit."""

    def __init__(self, bus: Bus, channel: str) -> None:
        self._bus = bus
        self._channel = channel
        self._waiting: collections.deque[tuple[Mapping[str, Any], dict[str, Any]]] = (
            collections.deque()
        )
        self._quiet_until = 0.0  # after a failure, no new attempt before this (monotonic)

    def publish(self, event: Mapping[str, Any], **options: Any) -> None:
        self._waiting.append((event, options))
        if time.monotonic() >= self._quiet_until:
            with contextlib.suppress(Unavailable):  # it waits for the next try
                self.flush()

    def flush(self) -> None:
        """Publish what waits, in order; Unavailable (the rest still waiting) while the bus
        is away."""
        while self._waiting:
            event, options = self._waiting[0]
            try:
                self._bus.publish(self._channel, event, **options)
            except Unavailable:
                self._quiet_until = time.monotonic() + PUBLISH_RETRY_AFTER_S
                raise
            self._waiting.popleft()


class _ControlInbox:
    """Applies an execution's control messages (cancel, stdin, resize) to its run, each once, in
    order.

    Live messages may arrive from the bus's thread before the history read that precedes
    them is replayed; they wait until it is, so stdin keeps the order it was sent in.
    """

    def __init__(self) -> None:
        self.control = Control()
        self._lock = threading.Lock()
        self._seen: set[str] = set()
        self._waiting: list[dict[str, Any]] | None = []
        self.received_any = False

    def receive(self, message: dict[str, Any]) -> None:
        """A live message (called by the bus from any thread)."""
        with self._lock:
            if self._waiting is not None:
                self._waiting.append(message)
            else:
                self._apply(message)

    def replay(self, history: list[dict[str, Any]]) -> None:
        """The messages sent before listening began, then those that arrived meanwhile."""
        with self._lock:
            waiting, self._waiting = self._waiting or [], None
            for message in [*history, *waiting]:
                self._apply(message)

    def _apply(self, message: dict[str, Any]) -> None:
        self.received_any = True
        message_id = message.get("id")
        if message_id in self._seen:
            return
        if message_id:
            self._seen.add(message_id)
        if message.get("type") == "cancel":
            self.control.cancel()
        elif message.get("type") == "stdin":
            data = message.get("data") or ""
            if data:
                self.control.write(data.encode())
            if message.get("eof"):
                self.control.close_stdin()
        elif message.get("type") == "resize":
            try:
                self.control.resize(message["cols"], message["rows"])
            except (KeyError, ValueError):  # checked by the protocol before it was published
                pass


class _Streamed:
    """What this attempt has published so far: the chunk index ([stream, n_chars] per seq,
    and the case as a third item for a test case's chunk) and the texts, per stream and per
    case. Its seq numbers follow `base` (events.seq_base)."""

    def __init__(self, base: int = 0) -> None:
        self.base = base
        self.index: list[list[Any]] = []
        self._parts: dict[tuple[str, int | None], list[str]] = collections.defaultdict(list)

    def add(self, stream: str, text: str, case: int | None = None) -> int:
        self.index.append([stream, len(text)] if case is None else [stream, len(text), case])
        self._parts[stream, None].append(text)
        if case is not None:
            self._parts[stream, case].append(text)
        return self.base + len(self.index)

    def text(self, stream: str, case: int | None = None) -> str:
        """All of a stream (case None), or a test case's part of it."""
        return "".join(self._parts[stream, case])


def _outcome(result: Result, streamed: _Streamed) -> dict[str, Any]:
    """The execution's Outcome fields from the run's Result, each from the attribute of its name."""
    outcome = {
        name: getattr(result, _RESULT_NAMES.get(name, name))
        for name in OUTCOME_FIELDS
        if _RESULT_NAMES.get(name, name) in _RESULT_FIELDS
    }
    # Store exactly what was streamed: the runner's texts equal the joined chunks, and an
    # internal error keeps whatever reached followers before it.
    for stream, name in STREAM_FIELDS.items():
        outcome[name] = streamed.text(stream)
    outcome["chunks"] = streamed.index
    # The size a tty run's program started with: a resize that reached the worker before the
    # start replaced the one asked. A run whose program never started keeps the size asked.
    if result.terminal_size is not None:
        outcome["tty_cols"], outcome["tty_rows"] = result.terminal_size
    # one per test case (Result names them alike, but they are runners' Results), else none
    outcome["cases"] = [
        _case_result(index, case, streamed) for index, case in enumerate(result.cases)
    ] or None
    return outcome


def _case_result(index: int, result: Result, streamed: _Streamed) -> CaseResult:
    """A test case's stored result: the Result of its run, its output what was published."""
    return CaseResult(
        status=result.status,
        reason=result.reason,
        exit_code=result.exit_code,
        signal=result.signal,
        stdout=streamed.text(Stream.STDOUT, index),
        stderr=streamed.text(Stream.STDERR, index),
        stdout_truncated=result.stdout_truncated,
        stderr_truncated=result.stderr_truncated,
        execution_time_ms=result.wall_time_ms,
        cpu_time_ms=result.cpu_time_ms,
        memory_kb=result.memory_kb,
        verdict=result.verdict,
        error_message=result.message,
    )


def _cases(execution: Execution) -> tuple[Case, ...]:
    """The execution's test cases for the runner; a case without args has the run's."""
    return tuple(
        Case(
            stdin=case["stdin"].encode(),
            args=tuple(execution.args if case.get("args") is None else case["args"]),
            expected_output=case.get("expected_output"),
        )
        for case in execution.case_inputs or ()
    )


def _terminal_size(execution: Execution) -> tuple[int, int] | None:
    """The (cols, rows) a tty run asked to start with; None: the runner's 80x24."""
    if execution.tty_cols is None or execution.tty_rows is None:
        return None
    return execution.tty_cols, execution.tty_rows


def _with_retries(write: Callable[[], _T], what: str = "storing a final state") -> _T:
    """A write at the end of a run, retried with backoff through a short outage."""
    for delay_s in FINISH_RETRY_DELAYS_S:
        try:
            return write()
        except Unavailable as exc:
            logger.warning("%s failed (%s); retrying in %.1f s", what, exc, delay_s)
            time.sleep(delay_s)
    return write()


def _internal_error(message: str) -> Result:
    return Result.without_output(ExecutionStatus.FAILED, Reason.INTERNAL_ERROR, message)
