"""The client's protocol state without sockets: answers, follows, reconnects, errors."""

from __future__ import annotations

import copy
import json
import pickle
from concurrent.futures import Future
from queue import SimpleQueue
from typing import Any

import pytest

from livecode.client import (
    BadRequest,
    Conflict,
    ConnectionLost,
    Execution,
    Forbidden,
    InternalError,
    InvalidValue,
    Limits,
    NotFound,
    Output,
    RateLimited,
    Status,
    Unavailable,
)
from livecode.client.errors import error_from, error_from_http
from livecode.client.models import Event
from livecode.client.state import ClientState, Transcript, is_for_good

Inbox = SimpleQueue[Event | BaseException]


def sent(frames: list[str]) -> list[dict[str, Any]]:
    return [json.loads(frame) for frame in frames]


def output(seq: int, data: str = "x", execution_id: str = "e1") -> str:
    event = {"type": "output", "execution_id": execution_id, "stream": "stdout", "seq": seq}
    return json.dumps({**event, "data": data})


def status(name: str, attempt: int, execution_id: str = "e1") -> str:
    return json.dumps(
        {"type": "status", "execution_id": execution_id, "status": name, "attempt": attempt}
    )


def drain(inbox: Inbox) -> list[Event | BaseException]:
    items = []
    while not inbox.empty():
        items.append(inbox.get_nowait())
    return items


def connected_state() -> ClientState:
    state = ClientState()
    state.connected()
    return state


def test_a_run_is_followed_from_its_queued_answer() -> None:
    """The execution's events go to the run's inbox from the `queued` answer on, in order."""
    state = connected_state()
    waiter: Future[dict[str, Any]] = Future()
    inbox: Inbox = SimpleQueue()
    [frame] = state.request(
        {"type": "run", "session_id": "s"}, waiter, is_idempotent=False, inbox=inbox
    )
    ref = json.loads(frame)["ref"]
    state.receive(
        json.dumps({"type": "queued", "ref": ref, "execution_id": "e1", "status": "QUEUED"})
    )
    for text in (status("QUEUED", 0), status("RUNNING", 1), output(1, "a"), output(2, "b")):
        state.receive(text)
    assert waiter.result(0)["execution_id"] == "e1"
    events = drain(inbox)
    assert [type(e).__name__ for e in events] == ["Status", "Status", "Output", "Output"]
    assert [e.data for e in events if isinstance(e, Output)] == ["a", "b"]


def test_repeats_after_a_resubscribe_are_dropped() -> None:
    """A replay from `since` repeats statuses and maybe outputs: each reaches the caller once."""
    state = connected_state()
    inbox: Inbox = SimpleQueue()
    state.follow("e1", inbox)
    for text in (status("QUEUED", 0), status("RUNNING", 1), output(1), output(2)):
        state.receive(text)
    state.disconnected()
    frames = sent(state.connected())
    assert frames[0] == {
        "type": "subscribe",
        "execution_id": "e1",
        "since": 2,
        "ref": frames[0]["ref"],
    }
    assert frames[1] == {"type": "ping", "ref": frames[0]["ref"]}
    for text in (status("QUEUED", 0), status("RUNNING", 1), output(2), output(3, "new")):
        state.receive(text)
    state.receive(json.dumps({"type": "finished", "execution_id": "e1", "status": "COMPLETED"}))
    state.receive(json.dumps({"type": "finished", "execution_id": "e1", "status": "COMPLETED"}))
    events = drain(inbox)
    assert [(type(e).__name__, getattr(e, "seq", None)) for e in events] == [
        ("Status", None),
        ("Status", None),
        ("Output", 1),
        ("Output", 2),
        ("Output", 3),
        ("Finished", None),
    ]
    assert sent(state.connected()) == []  # finished: nothing to resubscribe


def test_a_reconnect_resends_what_is_safe_and_fails_the_rest() -> None:
    """Requests on the lost socket: idempotent ones go again, others raise ConnectionLost;
    requests made while the socket was down go out for the first time."""
    state = connected_state()
    opened: Future[dict[str, Any]] = Future()
    created: Future[dict[str, Any]] = Future()
    state.request({"type": "open", "session_id": "s"}, opened, is_idempotent=True)
    state.request({"type": "create", "language": "python"}, created, is_idempotent=False)
    state.disconnected()
    later: Future[dict[str, Any]] = Future()
    assert state.request({"type": "create", "language": "c++"}, later, is_idempotent=False) == []
    frames = sent(state.connected())
    assert [(f["type"], f.get("language")) for f in frames] == [("open", None), ("create", "c++")]
    with pytest.raises(ConnectionLost, match="may or may not"):
        created.result(0)
    assert not opened.done() and not later.done()


def test_silent_requests_are_settled_by_an_error_or_the_ping() -> None:
    """stdin, cancel, subscribe: an `error` with the ref fails them, a `pong` with it confirms."""
    state = connected_state()
    failing: Future[dict[str, Any]] = Future()
    working: Future[dict[str, Any]] = Future()
    [message, ping] = sent(
        state.request(
            {"type": "stdin", "execution_id": "e1", "data": "x"},
            failing,
            is_idempotent=False,
            is_silent=True,
        )
    )
    assert ping == {"type": "ping", "ref": message["ref"]}
    [other, _] = sent(
        state.request(
            {"type": "cancel", "execution_id": "e1"}, working, is_idempotent=True, is_silent=True
        )
    )
    error = {"type": "error", "ref": message["ref"], "code": "conflict", "message": "finished"}
    for answer in (
        error,
        {"type": "pong", "ref": message["ref"]},
        {"type": "pong", "ref": other["ref"]},
    ):
        state.receive(json.dumps(answer))
    with pytest.raises(Conflict, match="finished"):
        failing.result(0)
    assert working.result(0)["type"] == "pong"


def test_an_ended_follow_is_resumed_then_given_up() -> None:
    """`unavailable` from the server's follow: subscribe again with since, pausing longer each
    time; after too many in a row the caller gets the error."""
    state = connected_state()
    inbox: Inbox = SimpleQueue()
    state.follow("e1", inbox)
    state.receive(output(1))
    lost = json.dumps(
        {"type": "error", "code": "unavailable", "message": "lost", "execution_id": "e1"}
    )
    delays = []
    while (resend := state.receive(lost)) is not None:
        assert sent(resend.frames)[0]["since"] == 1
        delays.append(resend.delay_s)
    assert delays == sorted(delays) and delays[0] == 0.0 and len(delays) > 3
    *_, last = drain(inbox)
    assert isinstance(last, Unavailable)


def test_output_lost_ends_the_follow_with_an_internal_error() -> None:
    state = connected_state()
    inbox: Inbox = SimpleQueue()
    state.follow("e1", inbox)
    resend = state.receive(
        json.dumps(
            {"type": "error", "code": "internal", "message": "output lost", "execution_id": "e1"}
        )
    )
    assert resend is None
    [error] = drain(inbox)
    assert isinstance(error, InternalError) and error.message == "output lost"


def test_a_gap_asks_again_from_the_last_seq() -> None:
    """Output beyond the next seq is not passed on: the follow asks again from where it is."""
    state = connected_state()
    inbox: Inbox = SimpleQueue()
    state.follow("e1", inbox)
    state.receive(output(1))
    resend = state.receive(output(3))
    assert resend is not None and sent(resend.frames)[0]["since"] == 1
    assert [e.seq for e in drain(inbox) if isinstance(e, Output)] == [1]


def test_a_retried_attempt_s_output_follows_its_status_seq() -> None:
    """Attempt 2 numbers its output after the seq its RUNNING status carries: no gap."""
    state = connected_state()
    inbox: Inbox = SimpleQueue()
    state.follow("e1", inbox)
    retry = {"type": "status", "execution_id": "e1", "status": "RUNNING", "attempt": 2}
    for text in (output(1), json.dumps({**retry, "seq": 10**6})):
        state.receive(text)
    assert state.receive(output(10**6 + 1)) is None  # nothing to ask again
    assert [e.seq for e in drain(inbox) if isinstance(e, Output)] == [1, 10**6 + 1]


def test_fail_reaches_every_waiter_and_follow() -> None:
    state = connected_state()
    waiter: Future[dict[str, Any]] = Future()
    inbox: Inbox = SimpleQueue()
    state.request({"type": "ping"}, waiter, is_idempotent=True)
    state.follow("e1", inbox)
    state.fail(ConnectionLost("gone"))
    with pytest.raises(ConnectionLost):
        waiter.result(0)
    assert isinstance(inbox.get_nowait(), ConnectionLost)
    with pytest.raises(ConnectionLost):
        state.request({"type": "ping"}, Future(), is_idempotent=True)


def test_transcript_keeps_the_last_attempt() -> None:
    """A retried run starts its outputs again, as the stored output is the last attempt's."""
    transcript = Transcript()
    for event in (
        Status("e1", "RUNNING", 1),
        Output("e1", "stdout", 1, "lost "),
        Status("e1", "RUNNING", 2),
        Output("e1", "stdout", 2, "kept"),
        Output("e1", "compile", 3, "warning"),
    ):
        transcript.add(event)
    assert (transcript.text("stdout"), transcript.text("compile")) == ("kept", "warning")


@pytest.mark.parametrize(
    ("code", "for_good"),
    [
        (1008, True),
        (1009, True),
        (1002, True),
        (4001, True),
        (1006, False),
        (1011, False),
        (1012, False),
        (1000, False),
        (None, False),
    ],
)
def test_which_closes_end_the_client(code: int | None, for_good: bool) -> None:
    """Closed for breaking a rule (flooding, a frame too large) the client would be again."""
    assert is_for_good(code) is for_good


def test_server_errors_map_to_their_classes() -> None:
    assert isinstance(error_from({"code": "not_found", "message": "m"}), NotFound)
    assert isinstance(error_from({"code": "bad_request", "message": "m"}, 422), InvalidValue)
    limited = error_from({"code": "rate_limited", "message": "m", "retry_after": 2})
    assert isinstance(limited, RateLimited) and limited.retry_after == 2.0
    unknown = error_from({"code": "teapot", "message": "short and stout"})
    assert unknown.message == "teapot: short and stout"
    assert isinstance(error_from_http(502, None), Unavailable)
    busy = error_from_http(503, {"error": {"code": "unavailable", "message": "m"}}, "7")
    assert isinstance(busy, Unavailable) and busy.retry_after == 7.0
    assert isinstance(error_from_http(418, "not json"), BadRequest)
    forbidden = {"error": {"code": "forbidden", "message": "the operator's"}}
    assert isinstance(error_from_http(403, forbidden), Forbidden)
    assert isinstance(error_from({"code": "forbidden", "message": "m"}), Forbidden)


def test_limits_send_only_what_is_given() -> None:
    assert Limits(timeout_s=2.5).to_json() == {"timeout_s": 2.5}
    assert Limits().to_json() == {}


def test_values_are_frozen_compared_by_their_fields_and_survive_copy_and_pickle() -> None:
    """An event or execution cannot be changed; two with the same fields are equal (the JSON
    they came from aside); a copy or a pickled one is equal to it, `raw` included."""
    event = Output("e1", "stdout", 1, "hi\n", raw={"type": "output", "seq": 1})
    assert event == Output("e1", "stdout", 1, "hi\n") and event != Output("e1", "stdout", 2, "hi\n")
    with pytest.raises(AttributeError, match="frozen"):
        event.data = "changed"  # type: ignore[misc]
    execution = Execution("e1", "COMPLETED", stdout="hi\n", exit_code=0)
    assert hash(execution) == hash(Execution("e1", "COMPLETED", stdout="hi\n", exit_code=0))
    for value in (event, execution):
        for again in (copy.copy(value), copy.deepcopy(value), pickle.loads(pickle.dumps(value))):
            assert again == value and getattr(again, "raw", None) == getattr(value, "raw", None)
