"""The sweeper: nothing stays QUEUED or RUNNING forever (SPEC.md, Reliability).

Every server and worker process runs one; a pass runs every LIVECODE_SWEEP_INTERVAL_S in
whichever process holds the store's sweeper lock (a PostgreSQL advisory lock; embedded mode
is one process). A pass:

1. RUNNING executions whose lease ran out (their worker died, or lost the database for
   longer than a lease): attempt n < LIVECODE_MAX_ATTEMPTS is moved back to QUEUED, to be
   enqueued after a backoff of LIVECODE_RETRY_BACKOFF_S * 2**(n-1) (step 3), and announced
   with a `status` event; the last attempt ends FAILED / `internal_error`, with a message
   saying why and the output its followers kept (read back from the bus history);
2. Dramatiq's queue maintenance: messages fetched by a worker that died go back to the queue;
3. QUEUED executions whose message should exist by now (queued LIVECODE_MESSAGE_GRACE_S ago,
   or retried and past their backoff) but does not (a Redis restarted without its data, a
   claim that could not reach the database): enqueued again.

Each step is a guarded UPDATE or an idempotent enqueue, so two passes at once (a lock lost
with its connection) do no harm beyond a message too many, which finds nothing to claim.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from livecode import events, logs, metrics
from livecode.bus import HISTORY_AFTER_FINAL_S, Bus, execution_channel
from livecode.config import Settings
from livecode.errors import Unavailable
from livecode.queue import Queue
from livecode.store import Execution, Store, utc_now
from livecode.store.records import STREAM_FIELDS
from runners import ExecutionStatus, Reason, Stream

__all__ = ["Sweep", "Sweeper"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(slots=True)
class Sweep:
    """What one pass did (for tests and the log)."""

    retried: list[str] = dataclasses.field(default_factory=list)
    failed: list[str] = dataclasses.field(default_factory=list)
    enqueued: list[str] = dataclasses.field(default_factory=list)
    is_skipped: bool = False  # another process holds the lock

    def __bool__(self) -> bool:
        return bool(self.retried or self.failed or self.enqueued)


class Sweeper:
    """Runs a pass every `settings.sweep_interval_s` in a thread of its own. Thread-safe."""

    def __init__(self, settings: Settings, store: Store, bus: Bus, queue: Queue) -> None:
        self.settings = settings
        self.store = store
        self.bus = bus
        self.queue = queue
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one pass at a time in this process

    def start(self) -> None:
        """Start passing in the background."""
        if self._thread is not None:
            raise RuntimeError("Sweeper.start() was called twice")
        self._thread = threading.Thread(target=self._loop, name="sweeper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the thread after the pass under way."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def sweep(self) -> Sweep:
        """One pass, now. Raises Unavailable when the store is down."""
        with self._lock, self.store.recovery.sweeper_lock() as held:
            if not held:
                return Sweep(is_skipped=True)
            done = Sweep()
            now = utc_now()
            # Runs claimed before leases existed (an upgrade): gone once they ran this long.
            longest = self.settings.wall_timeout_s + self.settings.compile_timeout_s + 60
            unleased_before = now - dt.timedelta(seconds=longest)
            for execution in self.store.recovery.expired_leases(
                now, unleased_before=unleased_before
            ):
                self.move_on(execution, done)
            try:
                self.queue.maintain()
                self._enqueue_lost(utc_now(), done)  # now: a retry without backoff is due
            except Unavailable as exc:  # Redis away: the next pass does it
                logger.warning("sweeper could not look at the queue: %s", exc)
        if done:
            logger.info(
                "sweeper: %d retried, %d failed, %d enqueued again",
                len(done.retried),
                len(done.failed),
                len(done.enqueued),
            )
        return done

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.sweep_interval_s):
            try:
                self.sweep()
            except Unavailable as exc:
                logger.warning("sweeper pass skipped: %s", exc)
            except Exception:
                logger.exception("sweeper pass failed")

    def move_on(self, execution: Execution, done: Sweep | None = None) -> None:
        """A RUNNING attempt whose worker is gone: retry it, or end it."""
        with logs.about(execution_id=execution.id, session_id=execution.session_id):
            self._move_on(execution, utc_now(), done if done is not None else Sweep())

    def _move_on(self, execution: Execution, now: dt.datetime, done: Sweep) -> None:
        attempt, most = execution.attempt, self.settings.max_attempts
        if attempt < most:
            backoff_s = self.settings.retry_backoff_s * 2 ** (attempt - 1)
            queued = self.store.recovery.requeue(
                execution.id, attempt=attempt, not_before=now + dt.timedelta(seconds=backoff_s)
            )
            if queued is None:
                return  # ended or renewed meanwhile
            logger.warning(
                "execution %s: the worker %s running attempt %d stopped renewing its lease; "
                "retrying in %.1f s",
                execution.id,
                execution.worker,
                attempt,
                backoff_s,
            )
            metrics.SWEEPER_ACTIONS.labels("retried").inc()
            done.retried.append(execution.id)
            self._publish(execution.id, events.status_event(queued))
            return
        output = self._kept_output(execution)
        why = (
            f"the worker running attempt {attempt} of {most} stopped (its lease ran out), "
            "and no attempt is left"
        )
        if output is None:
            why += "; its output was lost"
            output = _Output.nothing()
        final = self.store.finish(
            execution.id,
            status=ExecutionStatus.FAILED,
            attempt=attempt,
            reason=Reason.INTERNAL_ERROR,
            error_message=why,
            **output.columns(),
        )
        if final is None:
            return
        logger.error("execution %s failed: %s", execution.id, why)
        metrics.count_final(final)
        metrics.SWEEPER_ACTIONS.labels("failed").inc()
        done.failed.append(execution.id)
        self._publish(execution.id, events.finished_event(final), keep_for_s=HISTORY_AFTER_FINAL_S)

    def _kept_output(self, execution: Execution) -> _Output | None:
        """The output events of the execution's last attempt, as its followers kept them
        (those after its RUNNING status); None when the history lost some."""
        try:
            history = self.bus.history(execution_channel(execution.id))
        except Unavailable:
            return None
        start = None
        for index, event in enumerate(history):
            if (
                event.get("type") == "status"
                and event.get("status") == ExecutionStatus.RUNNING.value
                and event.get("attempt") == execution.attempt
            ):
                start = index + 1
        if start is None:  # it never started (or its status was lost with it): no output
            return _Output.nothing()
        outputs = [event for event in history[start:] if event.get("type") == "output"]
        first_seq = events.seq_base(execution) + 1
        if [event.get("seq") for event in outputs] != list(
            range(first_seq, first_seq + len(outputs))
        ):
            return None
        return _Output.of(outputs)

    def _enqueue_lost(self, now: dt.datetime, done: Sweep) -> None:
        grace = dt.timedelta(seconds=self.settings.message_grace_s)
        due = [
            (id_, attempt + 1) for id_, attempt in self.store.recovery.due_queued(now, now - grace)
        ]
        for execution_id, attempt in self.queue.missing(due):
            with logs.about(execution_id=execution_id):
                self.queue.enqueue(execution_id, attempt=attempt)
                logger.warning(
                    "execution %s was QUEUED without a message; enqueued again", execution_id
                )
            metrics.SWEEPER_ACTIONS.labels("enqueued").inc()
            done.enqueued.append(execution_id)

    def _publish(self, execution_id: str, event: Mapping[str, Any], **options: Any) -> None:
        """Publish, or leave it to the relays, which look up silent executions in the store."""
        try:
            self.bus.publish(execution_channel(execution_id), event, **options)
        except Unavailable as exc:
            logger.warning("sweeper could not publish on %s: %s", execution_id, exc)


@dataclasses.dataclass(frozen=True, slots=True)
class _Output:
    """An attempt's output as the store keeps it: the text of each stream and the chunk index."""

    texts: dict[str, str]
    chunks: list[list[Any]]

    @classmethod
    def nothing(cls) -> _Output:
        return cls({name: "" for name in STREAM_FIELDS.values()}, [])

    @classmethod
    def of(cls, outputs: Sequence[Mapping[str, Any]]) -> _Output:
        parts: dict[str, list[str]] = {name: [] for name in STREAM_FIELDS.values()}
        chunks: list[list[Any]] = []
        for event in outputs:
            stream, data = str(event["stream"]), str(event["data"])
            parts[STREAM_FIELDS[Stream(stream)]].append(data)
            case = event.get("case")  # a test case's chunk keeps its case (executor._Streamed)
            chunks.append([stream, len(data)] if case is None else [stream, len(data), case])
        return cls({name: "".join(texts) for name, texts in parts.items()}, chunks)

    def columns(self) -> dict[str, Any]:
        return {**self.texts, "chunks": self.chunks}
