"""The slot pool: the sandbox's slots, claimed host-unique at start and lent one run at a time."""

from __future__ import annotations

import os
import queue

from runners import host
from runners.control import Control
from runners.errors import RunnerError
from runners.slot import Slot, SlotSetup


class SlotPool:
    """Claims ``count`` slot indexes on this host (flock on lock files) and starts a slot on
    each. Thread-safe."""

    def __init__(self, count: int, setup: SlotSetup, work_root: str) -> None:
        self.slots: list[Slot] = []
        self._free: queue.Queue[Slot] = queue.Queue()
        self.is_closed = False
        claimed = iter(host.claim_slot_indexes(count, setup.is_root, work_root))
        try:
            for index, lock in claimed:
                slot = Slot(index, lock, setup)  # owns the lock, also when it fails to start
                self.slots.append(slot)
                self._free.put(slot)
        except BaseException:
            for _index, lock in claimed:  # the indexes no slot was started on
                os.close(lock)
            self.close()
            raise

    def acquire(self, control: Control | None) -> Slot | None:
        """Wait for a free slot; None once `control` is cancelled. Give it back with release()."""
        while True:
            if control is not None and control.is_cancelled:
                return None
            try:
                return self._free.get(timeout=0.05 if control is not None else 1.0)
            except queue.Empty:
                if self.is_closed:
                    raise RunnerError("the sandbox is closed") from None

    def release(self, slot: Slot) -> None:
        """Settle the slot after its run and lend it again."""
        slot.settle()
        self._free.put(slot)

    def close(self) -> None:
        """Stop lending, close every slot. Idempotent."""
        self.is_closed = True
        for slot in self.slots:
            slot.close()
        self.slots.clear()
