"""The executor with a real store, bus and sandbox: the events an execution publishes, in order."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from livecode.actors import Executor
from livecode.bus import execution_channel
from livecode.bus.local import LocalBus
from livecode.store import Status, Store
from runners import Limits, Sandbox
from tests.runners.conftest import private_sandbox, requires_bwrap

pytestmark = requires_bwrap


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    sqlite_store = Store.from_url(f"sqlite:///{tmp_path / 'executor.db'}")
    sqlite_store.create_tables()
    yield sqlite_store
    sqlite_store.close()


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    # its own: one test closes it
    with private_sandbox(slots=1) as opened:
        yield opened


def _queue(store: Store, source: str) -> str:
    execution = store.create_execution(
        session_id=None,
        language="python",
        source_code=source,
        stdin=None,
        args=(),
        limits=dataclasses.asdict(Limits()),
        interactive=False,
    )
    return execution.id


def _published(bus: LocalBus, execution_id: str) -> list[tuple[str, str | None]]:
    return [
        (event["type"], event.get("status") or event.get("stream"))
        for event in bus.history(execution_channel(execution_id))
    ]


def test_running_is_announced_before_the_output(store: Store, sandbox: Sandbox) -> None:
    bus = LocalBus()
    execution_id = _queue(store, "print('hi')")
    Executor(store, bus, sandbox).execute(execution_id)
    assert _published(bus, execution_id) == [
        ("status", "RUNNING"),
        ("output", "stdout"),
        ("finished", "COMPLETED"),
    ]


def test_a_run_that_cannot_start_is_still_announced_running(store: Store, sandbox: Sandbox) -> None:
    """RUNNING was stored by the claim, so followers get its status before the failure."""
    bus = LocalBus()
    execution_id = _queue(store, "print('hi')")
    sandbox.close()  # run() now raises RunnerError: the program never starts
    Executor(store, bus, sandbox).execute(execution_id)
    assert _published(bus, execution_id) == [("status", "RUNNING"), ("finished", "FAILED")]
    stored = store.get_execution(execution_id)
    assert (stored.status, stored.reason) == (Status.FAILED, "internal_error")
