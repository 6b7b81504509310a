"""The executor with a real store, bus and sandbox: the events an execution publishes, in order."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from livecode.bus import BusUnavailable, execution_channel
from livecode.bus.local import LocalBus
from livecode.executor import Executor
from livecode.store import Store
from runners import ExecutionStatus, Limits, Sandbox
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
    """Followers see RUNNING before the first output, and finished last."""
    bus = LocalBus()
    execution_id = _queue(store, "print('hi')")
    Executor(store, bus, sandbox).execute(execution_id)
    published = _published(bus, execution_id)
    assert published[0] == ("status", "RUNNING")
    # python -u writes 'hi' and '\n' apart: one chunk or two, as the reads fall
    assert set(published[1:-1]) == {("output", "stdout")}
    assert published[-1] == ("finished", "COMPLETED")


def test_a_run_that_cannot_start_is_still_announced_running(store: Store, sandbox: Sandbox) -> None:
    """RUNNING was stored by the claim, so followers get its status before the failure."""
    bus = LocalBus()
    execution_id = _queue(store, "print('hi')")
    sandbox.close()  # run() now raises RunnerError: the program never starts
    Executor(store, bus, sandbox).execute(execution_id)
    assert _published(bus, execution_id) == [("status", "RUNNING"), ("finished", "FAILED")]
    stored = store.get_execution(execution_id)
    assert (stored.status, stored.reason) == (ExecutionStatus.FAILED, "internal_error")


class _BusAwayAfterFirstOutput(LocalBus):
    """A bus whose publishes fail from the first output on until `back` is set, as Redis's do
    while it restarts."""

    def __init__(self) -> None:
        super().__init__()
        self.away = False
        self.back = threading.Event()
        self.refused = threading.Semaphore(0)

    def publish(self, channel: str, event: dict[str, Any], **options: Any) -> None:
        if self.away and not self.back.is_set():
            self.refused.release()
            raise BusUnavailable()
        super().publish(channel, event, **options)
        self.away = self.away or event["type"] == "output"


def test_a_bus_outage_during_a_run_neither_kills_it_nor_loses_events(
    store: Store, sandbox: Sandbox
) -> None:
    """A bus outage mid-run neither stops the program nor loses events: they come late, in order."""
    bus = _BusAwayAfterFirstOutput()
    source = "import time\nfor line in 'abc':\n    print(line, flush=True)\n    time.sleep(0.8)\n"
    execution_id = _queue(store, source)

    def come_back() -> None:  # once 'b' was refused
        if bus.refused.acquire(timeout=30):
            bus.back.set()

    threading.Thread(target=come_back, daemon=True).start()
    Executor(store, bus, sandbox).execute(execution_id)
    assert bus.back.is_set()  # the outage did hit a publish
    stored = store.get_execution(execution_id)
    assert (stored.status, stored.stdout) == (ExecutionStatus.COMPLETED, "a\nb\nc\n")
    history = bus.history(execution_channel(execution_id))
    outputs = [event for event in history if event["type"] == "output"]
    # Each line is one chunk on a quiet machine; under load a line and its newline may be two.
    assert [event["seq"] for event in outputs] == list(range(1, len(outputs) + 1))
    assert "".join(event["data"] for event in outputs) == stored.stdout
    assert [history[0]["type"], history[-1]["type"]] == ["status", "finished"]
