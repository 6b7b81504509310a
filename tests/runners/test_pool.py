"""The slot pool: slot indexes claimed host-unique, and given back when a slot cannot start."""

from __future__ import annotations

import os
import pathlib

import pytest

from runners import RunnerError
from runners.pool import SlotPool
from runners.slot import SlotSetup


def _lock_files_held() -> set[str]:
    """The slot lock files this process holds an fd of (its other sandboxes' included)."""
    held = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the fd listing the directory, closed meanwhile
            continue
        if target.endswith(".lock") and "/slot-" in target:
            held.add(f"{fd} {target}")
    return held


def test_a_slot_that_cannot_start_gives_back_every_lock(tmp_path: pathlib.Path) -> None:
    """When a slot's spawner cannot start, the pool fails and holds no slot's lock fd."""
    # /usr/bin/true exits without saying "ready": the first slot fails, the second never starts
    setup = SlotSetup(
        spawner="/usr/bin/true",
        bwrap=None,
        runtime_dir=str(tmp_path),
        scratch_dir=str(tmp_path),
        is_root=os.geteuid() == 0,
    )
    before = _lock_files_held()
    with pytest.raises(RunnerError, match="failed to start"):
        SlotPool(2, setup, str(tmp_path))
    assert _lock_files_held() == before
