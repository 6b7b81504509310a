"""Leases: a worker process holds each execution it runs for `lease_s`, renewed in the background.

The claim writes the worker's id and the lease's end; a thread renews every lease of the
process in one UPDATE each third of `lease_s`. A worker that dies stops renewing, and a sweeper
(sweeper.py) moves its executions on once their leases ran out. A worker that finds it no
longer holds an execution (a sweeper took it over while this process could not reach the
database) cancels that run: its output could not be stored anyway, and its later events are
numbered below the next attempt's (events.seq_base), so followers drop them.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable

from livecode import logs
from livecode.errors import Unavailable
from livecode.store import Store

__all__ = ["Leases", "worker_id"]

logger = logging.getLogger(__name__)

# While the database does not answer, renew again this often (it may be a short restart).
RETRY_S = 1.0


def worker_id() -> str:
    """This process's name in the store: host, pid and a random part (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Leases:
    """The executions this process runs, kept alive in the store. Thread-safe."""

    def __init__(self, store: Store, lease_s: float, *, worker: str | None = None) -> None:
        self.store = store
        self.lease_s = lease_s
        self.worker = worker or worker_id()
        self._held: dict[str, Callable[[], None]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def expires_at(self) -> dt.datetime:
        """The end of a lease taken now."""
        return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self.lease_s)

    def hold(self, execution_id: str, on_lost: Callable[[], None]) -> None:
        """Renew the execution's lease until `release`; `on_lost` runs (in the renewing
        thread) if the store says this process no longer holds it."""
        with self._lock:
            self._held[execution_id] = on_lost
            if self._thread is None:  # the claim took the lease: no renewal due yet
                self._thread = threading.Thread(target=self._renew, name="leases", daemon=True)
                self._thread.start()

    def release(self, execution_id: str) -> None:
        """Stop renewing the execution's lease (it is final, or handed back)."""
        with self._lock:
            self._held.pop(execution_id, None)

    @property
    def held(self) -> list[str]:
        """The ids of the executions held now."""
        with self._lock:
            return list(self._held)

    def stop(self) -> None:
        """End the renewing thread; leases still held run out on their own."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5)

    def _renew(self) -> None:
        interval_s = self.lease_s / 3
        while not self._stop.is_set():
            wait_s = interval_s
            with self._lock:
                before = dict(self._held)
            if before:
                try:
                    still = self.store.recovery.renew_leases(self.worker, self.expires_at())
                except Unavailable as exc:
                    logger.warning("could not renew %d leases: %s", len(before), exc)
                    wait_s = min(RETRY_S, interval_s)
                else:
                    self._notice_lost(before, still)
            self._wake.wait(wait_s)
            self._wake.clear()

    def _notice_lost(self, before: dict[str, Callable[[], None]], still: set[str]) -> None:
        for execution_id, on_lost in before.items():
            with self._lock:
                if execution_id in still or execution_id not in self._held:
                    continue  # renewed, or it ended meanwhile
                del self._held[execution_id]
            with logs.about(execution_id=execution_id):
                logger.warning(
                    "execution %s is no longer this worker's (its lease ran out); stopping it",
                    execution_id,
                )
                on_lost()
