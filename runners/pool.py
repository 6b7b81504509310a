"""The slot pool: the sandbox's slots, claimed host-unique at start and lent one run at a time.

A run's test cases may also borrow slots that nothing else needs right then (lend()), each for
one case. What keeps that from starving other runs:

- nothing is lent while any run waits for a slot;
- LEND_RESERVE slots stay free for runs that arrive meanwhile (with the default two slots per
  core, a run with cases on a 2-core worker takes at most three of its four slots);
- a borrowed slot comes back after one case, and is lent again only under the same rules, so a
  run that arrives once the reserve is taken waits at most for one case to end (at most that
  case's wall time limit).
"""

from __future__ import annotations

import collections
import os
import threading

from runners import host
from runners.control import Control
from runners.errors import RunnerError
from runners.slot import Slot, SlotSetup

# Free slots a run's test cases leave for runs that arrive while they run.
LEND_RESERVE = 1
_POLL_S = 0.05  # how often a waiting acquire() looks at its Control (a cancel does not wake it)


class SlotPool:
    """Claims ``count`` slot indexes on this host (flock on lock files) and starts a slot on
    each. Thread-safe."""

    def __init__(self, count: int, setup: SlotSetup, work_root: str) -> None:
        self.slots: list[Slot] = []
        self._free: collections.deque[Slot] = collections.deque()
        self._changed = threading.Condition()
        self._waiting = 0  # acquire() calls waiting for a slot
        self.is_closed = False
        claimed = iter(host.claim_slot_indexes(count, setup.is_root, work_root))
        try:
            for index, lock in claimed:
                slot = Slot(index, lock, setup)  # owns the lock, also when it fails to start
                self.slots.append(slot)
                self._free.append(slot)
        except BaseException:
            for _index, lock in claimed:  # the indexes no slot was started on
                os.close(lock)
            self.close()
            raise

    def acquire(self, control: Control | None) -> Slot | None:
        """Wait for a free slot; None once `control` is cancelled. Give it back with release()."""
        with self._changed:
            self._waiting += 1
            try:
                while not self._free:
                    if control is not None and control.is_cancelled:
                        return None
                    if self.is_closed:
                        raise RunnerError("the sandbox is closed")
                    self._changed.wait(_POLL_S if control is not None else 1.0)
                if control is not None and control.is_cancelled:
                    return None
                return self._free.popleft()
            finally:
                self._waiting -= 1

    def lend(self) -> Slot | None:
        """A free slot for one test case of a run that holds a slot already, or None: only
        while no run waits for a slot and more than LEND_RESERVE stay free (module docstring).
        Never waits. Give it back with release() once the case has ended."""
        with self._changed:
            if self.is_closed or self._waiting or len(self._free) <= LEND_RESERVE:
                return None
            return self._free.popleft()

    def release(self, slot: Slot) -> None:
        """Settle the slot after its run and lend it again."""
        slot.settle()
        with self._changed:
            self._free.append(slot)
            self._changed.notify()

    def close(self) -> None:
        """Stop lending, close every slot. Idempotent."""
        with self._changed:
            self.is_closed = True
            self._changed.notify_all()
        for slot in self.slots:
            slot.close()
        self.slots.clear()
