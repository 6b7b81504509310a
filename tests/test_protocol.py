"""Wire schemas: every message parses into its type; bad ones give a BadRequest a person can act on."""

from __future__ import annotations

import json

import pytest

from livecode import protocol
from livecode.errors import BadRequest


def test_every_client_message_type_parses() -> None:
    """Every message type a client may send is understood, with all its fields."""
    messages = {
        "create": {"language": "python", "source_code": "x"},
        "open": {"session_id": "s"},
        "autosave": {"session_id": "s", "source_code": "x", "base_version": 3},
        "run": {
            "session_id": "s",
            "stdin": "in",
            "args": ["a"],
            "limits": {"timeout_s": 1},
            "interactive": True,
            "tty": True,
        },
        "subscribe": {"execution_id": "e", "since": 4},
        "unsubscribe": {"execution_id": "e"},
        "stdin": {"execution_id": "e", "data": "x", "eof": True},
        "resize": {"execution_id": "e", "cols": 120, "rows": 40},
        "cancel": {"execution_id": "e"},
        "ping": {},
        "auth": {"token": "lc_x"},
    }
    assert set(messages) == set(protocol.MESSAGE_TYPES)
    for kind, fields in messages.items():
        message = protocol.parse_message(json.dumps({"type": kind, "ref": "r", **fields}))
        assert message.type == kind and message.ref == "r"
        for name, value in fields.items():
            parsed = getattr(message, name)
            assert (
                parsed.model_dump(exclude_none=True) if hasattr(parsed, "model_dump") else parsed
            ) == value


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("{", "invalid JSON"),
        ("[]", "JSON object"),
        ('{"type": "jump"}', "unknown message type"),
        ('{"type": "open"}', "session_id"),
        (
            '{"type": "autosave", "session_id": "s", "source_code": "x", "base_version": 0}',
            "base_version",
        ),
        ('{"type": "subscribe", "execution_id": "e", "since": -1}', "since"),
        ('{"type": "run", "session_id": "s", "limits": {"memory_mb": "lots"}}', "memory_mb"),
        ('{"type": "run", "session_id": "s", "limits": {"gpu": 1}}', "gpu"),
        ('{"type": "ping", "extra": 1}', "extra"),
        ('{"type": "run", "session_id": "s", "tty": "yes"}', "tty"),
        ('{"type": "resize", "execution_id": "e", "cols": 0, "rows": 24}', "cols"),
        ('{"type": "resize", "execution_id": "e", "cols": 80, "rows": 1001}', "rows"),
        ('{"type": "resize", "execution_id": "e", "cols": "80", "rows": 24}', "cols"),
        ('{"type": "resize", "execution_id": "e", "cols": 80}', "rows"),
        ('{"type": "ping", "ref": 7}', "ref"),
    ],
)
def test_bad_messages_say_what_is_wrong(text: str, words: str) -> None:
    """A bad message is refused with a message naming what is wrong with it."""
    with pytest.raises(BadRequest) as error:
        protocol.parse_message(text)
    assert words in error.value.message


def test_ref_of_a_bad_message_is_still_found() -> None:
    """The error about a bad message still echoes its ref, when it has one."""
    assert protocol.ref_of('{"type": "nope", "ref": "abc"}') == "abc"
    assert protocol.ref_of("not json") is None


def test_optional_run_body() -> None:
    """A run may be posted without a body; a new session may not."""
    assert protocol.parse_body(protocol.RunOptions, b"", optional=True) == protocol.RunOptions()
    with pytest.raises(BadRequest):
        protocol.parse_body(protocol.CreateSession, b"")


def test_a_run_with_cases_parses_each_case() -> None:
    """A run's cases each have a stdin ("" when left out), maybe args, maybe an expected
    output; a case with a field of its own that is not one of these is a bad request."""
    message = protocol.parse_message(
        json.dumps(
            {
                "type": "run",
                "session_id": "s",
                "cases": [{"stdin": "1 2", "args": ["x"], "expected_output": "3"}, {}],
            }
        )
    )
    assert isinstance(message, protocol.RunMessage) and message.cases is not None
    assert [case.model_dump() for case in message.cases] == [
        {"stdin": "1 2", "args": ["x"], "expected_output": "3"},
        {"stdin": "", "args": None, "expected_output": None},
    ]
    for bad in ({"stdin": 1}, {"args": "x"}, {"args": ["\u0000"]}, {"expected": "3"}):
        with pytest.raises(BadRequest, match="cases.0"):
            protocol.parse_message(json.dumps({"type": "run", "session_id": "s", "cases": [bad]}))
