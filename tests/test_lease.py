"""Leases: a worker keeps what it runs alive in the store, and stops a run it no longer holds."""

from __future__ import annotations

import dataclasses
import threading

from livecode.lease import Leases
from livecode.store import Store
from runners import Limits
from tests.utils import TIMEOUT, wait_until


def _claimed(store: Store, leases: Leases) -> str:
    execution = store.create_execution(
        session_id=None,
        language="python",
        source_code="print(1)",
        stdin=None,
        args=(),
        limits=dataclasses.asdict(Limits()),
        interactive=False,
    )
    claimed = store.claim(execution.id, worker=leases.worker, lease_expires_at=leases.expires_at())
    assert claimed is not None
    return claimed.id


def test_a_held_lease_keeps_being_renewed(store: Store) -> None:
    """While held, the lease's end moves forward; once released, it stays where it was."""
    leases = Leases(store, lease_s=0.3)
    execution_id = _claimed(store, leases)
    first_end = store.get_execution(execution_id).lease_expires_at
    leases.hold(execution_id, on_lost=lambda: None)
    try:
        wait_until(
            lambda: store.get_execution(execution_id).lease_expires_at != first_end,
            "the lease was renewed",
        )
    finally:
        leases.release(execution_id)
        leases.stop()
    assert leases.held == []


def test_a_lease_taken_over_stops_the_run(store: Store) -> None:
    """A sweeper moved the execution on (this worker lost the database too long): the worker
    learns it at its next renewal and stops the run."""
    leases = Leases(store, lease_s=0.3)
    execution_id = _claimed(store, leases)
    lost = threading.Event()
    leases.hold(execution_id, on_lost=lost.set)
    try:
        attempt = store.get_execution(execution_id).attempt
        assert store.recovery.requeue(execution_id, attempt=attempt, not_before=leases.expires_at())
        assert lost.wait(TIMEOUT)
    finally:
        leases.stop()
    assert leases.held == []
