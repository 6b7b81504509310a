"""The executor's control inbox: stdin and cancel reach the run once each, in the order sent."""

from __future__ import annotations

from livecode.executor import _ControlInbox


def stdin(message_id: str, data: str, eof: bool = False) -> dict[str, object]:
    return {"type": "stdin", "id": message_id, "data": data, "eof": eof}


def test_live_messages_wait_for_the_history_before_them() -> None:
    """Typed before the worker listened (history) and while it read the history (live, and in
    the history too): the program reads each line once, in typing order."""
    inbox = _ControlInbox()
    inbox.receive(stdin("3", "third\n"))
    inbox.replay([stdin("1", "first\n"), stdin("2", "second\n"), stdin("3", "third\n")])
    inbox.receive(stdin("4", "fourth\n", eof=True))
    data, eof, cancelled = inbox.control._take()
    assert data == b"first\nsecond\nthird\nfourth\n"
    assert eof and not cancelled


def test_cancel_from_the_history_or_live_cancels() -> None:
    """A cancel sent before the worker listened, or while the program runs, cancels it."""
    before = _ControlInbox()
    before.replay([{"type": "cancel", "id": "c1"}])
    assert before.control.is_cancelled
    live = _ControlInbox()
    live.replay([])
    assert not live.control.is_cancelled
    live.receive({"type": "cancel", "id": "c2"})
    assert live.control.is_cancelled
