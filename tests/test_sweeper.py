"""The sweeper with a real store, bus and queue: what it does with expired leases and lost
messages, as followers and the store see it."""

from __future__ import annotations

import dataclasses
import datetime as dt

from livecode import events
from livecode.bus import execution_channel
from livecode.bus.local import LocalBus
from livecode.config import Settings
from livecode.queue import Queue
from livecode.store import Store
from livecode.sweeper import Sweeper
from runners import ExecutionStatus, Limits

PAST = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)


def _settings(**overrides: object) -> Settings:
    fast: dict[str, object] = {"retry_backoff_s": 0.0, "message_grace_s": 0.0, **overrides}
    return dataclasses.replace(Settings(), **fast)  # type: ignore[arg-type]


def _claimed(store: Store, *, lease_expires_at: dt.datetime = PAST) -> str:
    """A RUNNING execution (attempt 1) whose worker 'w' holds a lease until `lease_expires_at`."""
    execution = store.create_execution(
        session_id=None,
        language="python",
        source_code="print(1)",
        stdin=None,
        args=(),
        limits=dataclasses.asdict(Limits()),
        interactive=False,
    )
    claimed = store.claim(execution.id, worker="w", lease_expires_at=lease_expires_at)
    assert claimed is not None
    return claimed.id


def test_an_expired_lease_is_retried_and_announced(store: Store) -> None:
    """A dead worker's attempt goes back to QUEUED with a status event, and is enqueued again."""
    bus, queue = LocalBus(), Queue(Settings())
    execution_id = _claimed(store)
    done = Sweeper(_settings(), store, bus, queue).sweep()
    assert done.retried == [execution_id] and done.enqueued == [execution_id]
    stored = store.get_execution(execution_id)
    assert (stored.status, stored.attempt, stored.worker) == (ExecutionStatus.QUEUED, 1, None)
    assert bus.history(execution_channel(execution_id))[-1] == events.status_event(stored)
    assert queue.missing([(execution_id, 2)]) == []  # its message waits
    claimed = store.claim(execution_id, worker="w2", lease_expires_at=PAST)
    assert claimed is not None and claimed.attempt == 2
    assert events.status_event(claimed)["seq"] == events.seq_base(claimed) == 1_000_000


def test_a_renewed_lease_is_left_alone(store: Store) -> None:
    """A live worker renews its lease; the sweeper does not touch what it runs."""
    future = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)
    execution_id = _claimed(store, lease_expires_at=PAST)
    assert store.recovery.renew_leases("w", future) == {execution_id}
    assert not Sweeper(_settings(), store, LocalBus(), Queue(Settings())).sweep()
    assert store.get_execution(execution_id).status == ExecutionStatus.RUNNING


def test_the_last_attempt_ends_with_the_output_its_followers_kept(store: Store) -> None:
    """Out of attempts: FAILED / internal_error, saying why, storing the output published
    after the attempt's RUNNING status; late followers are replayed exactly that."""
    bus = LocalBus()
    execution_id = _claimed(store)
    channel = execution_channel(execution_id)
    bus.publish(channel, events.status_event(store.get_execution(execution_id)))
    for seq, (stream, data) in enumerate([("stdout", "a\n"), ("stderr", "é"), ("stdout", "b")]):
        bus.publish(channel, events.output_event(execution_id, stream, seq + 1, data))
    done = Sweeper(_settings(max_attempts=1), store, bus, Queue(Settings())).sweep()
    assert done.failed == [execution_id]
    stored = store.get_execution(execution_id)
    assert (stored.status, stored.reason) == (ExecutionStatus.FAILED, "internal_error")
    assert (stored.stdout, stored.stderr) == ("a\nb", "é")
    assert "lease ran out" in (stored.error_message or "")
    history = bus.history(channel)
    assert history[-1]["type"] == "finished" and history[-1]["error"] == stored.error_message
    replayed = [e for e in events.replay_events(stored) if e["type"] == "output"]
    assert replayed == [e for e in history if e["type"] == "output"]


def test_a_queued_execution_without_its_message_is_enqueued_again(store: Store) -> None:
    """Its message lost (a Redis restarted empty): enqueued again, once."""
    queue = Queue(Settings())
    execution = store.create_execution(
        session_id=None,
        language="python",
        source_code="print(1)",
        stdin=None,
        args=(),
        limits=dataclasses.asdict(Limits()),
        interactive=False,
    )
    sweeper = Sweeper(_settings(), store, LocalBus(), queue)
    assert sweeper.sweep().enqueued == [execution.id]
    assert not sweeper.sweep()  # its message now exists
    assert store.claim(execution.id) is not None


def test_a_queued_execution_is_given_its_grace(store: Store) -> None:
    """Just queued: its message may be on its way; the sweeper leaves it."""
    store.create_execution(
        session_id=None,
        language="python",
        source_code="print(1)",
        stdin=None,
        args=(),
        limits=dataclasses.asdict(Limits()),
        interactive=False,
    )
    sweeper = Sweeper(_settings(message_grace_s=60.0), store, LocalBus(), Queue(Settings()))
    assert not sweeper.sweep()


def test_a_run_claimed_without_a_lease_is_moved_on_once_it_ran_too_long(store: Store) -> None:
    """Claimed before leases existed (an upgrade): retried once no run could still be going."""
    execution = store.create_execution(
        session_id=None,
        language="python",
        source_code="print(1)",
        stdin=None,
        args=(),
        limits=dataclasses.asdict(Limits()),
        interactive=False,
    )
    assert store.claim(execution.id) is not None  # no worker, no lease
    assert not Sweeper(_settings(), store, LocalBus(), Queue(Settings())).sweep()
    long_ago = _settings(wall_timeout_s=-3600.0, compile_timeout_s=0.0)  # "started long ago"
    assert Sweeper(long_ago, store, LocalBus(), Queue(Settings())).sweep().retried == [execution.id]
