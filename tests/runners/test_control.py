"""Control: another thread's cancel or stdin never reaches a pump that has let go of it."""

from __future__ import annotations

import threading

from runners.control import Control


def test_detaching_waits_for_a_wake_under_way() -> None:
    """The pump closes its wake pipe right after detaching: a wake still running then would
    write into whatever file now has that descriptor number."""
    control = Control()
    entered, release = threading.Event(), threading.Event()
    woken_after_detach: list[bool] = []
    detached = threading.Event()

    def slow_wake() -> None:
        entered.set()
        release.wait(5)
        woken_after_detach.append(detached.is_set())

    control._attach(slow_wake)
    canceller = threading.Thread(target=control.cancel)
    canceller.start()
    assert entered.wait(5)

    def detach() -> None:
        control._detach(slow_wake)
        detached.set()

    detacher = threading.Thread(target=detach)
    detacher.start()
    assert not detached.wait(0.2)  # held until the wake in progress is done
    release.set()
    canceller.join(5)
    detacher.join(5)
    assert woken_after_detach == [False] and detached.is_set()
    control.write(b"late")  # no wake attached any more: nothing is called
    assert control._take() == (b"late", False, True)
