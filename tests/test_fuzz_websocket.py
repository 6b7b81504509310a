"""Hypothesis against /ws: random JSON, messages with fields of the wrong type, huge and deeply
nested values, binary frames. Each bad message gets its one `error` (with its ref when it has
one), the socket stays open, the server does not fall over, and nothing changes state.

Cases: EXAMPLES frames per strategy (4 strategies), each followed by a ping that marks the end
of its answers, on one authenticated socket of a keyed server.
"""

from __future__ import annotations

import json
import string
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, assume, given, settings, strategies as st
from websockets.sync.client import ClientConnection, connect

from livecode import protocol
from livecode.errors import BadRequest
from tests.utils import TIMEOUT, LiveServer, bearer, create_key, embedded_settings, run_server

EXAMPLES = 150
_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# Field names the messages have, so that random messages come near the real ones.
FIELDS = sorted(
    {name for model in protocol.MESSAGE_MODELS for name in model.model_fields} - {"type"}
)
# A valid message of each type, as templates to put a wrong value into.
TEMPLATES: dict[str, dict[str, Any]] = {
    "create": {"language": "python", "source_code": "print(1)"},
    "open": {"session_id": "SESSION"},
    "autosave": {"session_id": "SESSION", "source_code": "x", "base_version": 1},
    "run": {"session_id": "SESSION", "stdin": "", "args": [], "limits": {"timeout_s": 1}},
    "subscribe": {"execution_id": "EXECUTION", "since": 0},
    "unsubscribe": {"execution_id": "EXECUTION"},
    "stdin": {"execution_id": "EXECUTION", "data": "x", "eof": False},
    "cancel": {"execution_id": "EXECUTION"},
    "ping": {},
    "auth": {"token": "lc_x"},
}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=25,
)


class Fuzzed:
    """The server, the socket's key, a session of that key, and what the store holds."""

    def __init__(self, server: LiveServer, key: str, socket: ClientConnection) -> None:
        self.server, self.key = server, key
        with server.client(key) as client:
            self.session = client.post(
                "/code-sessions", json={"language": "python", "source_code": "print(1)"}
            ).json()
            self.execution = client.post(
                f"/code-sessions/{self.session['id']}/run?wait=true"
            ).json()
        self.socket = socket
        self.pings = 0

    def real_id(self, name: str) -> str:
        return self.session["id"] if name == "SESSION" else self.execution["execution_id"]

    def answers(self, frame: str | bytes) -> list[dict[str, Any]]:
        """Send a frame, then a ping; return what came back before the pong."""
        self.pings += 1
        mark = f"sync-{self.pings}"
        self.socket.send(frame)
        self.socket.send(json.dumps({"type": "ping", "ref": mark}))
        seen = []
        while (event := json.loads(self.socket.recv(timeout=TIMEOUT))).get("ref") != mark:
            seen.append(event)
        return seen

    def state(self) -> list[Any]:
        """Every row the store holds (sessions and executions, all columns)."""
        engine = sa.create_engine(self.server.settings.database_url)
        try:
            with engine.connect() as conn:
                return [
                    sorted(map(tuple, conn.execute(sa.text(f"SELECT * FROM {table}")).all()))
                    for table in ("code_sessions", "executions")
                ]
        finally:
            engine.dispose()


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    """A keyed embedded server whose flood limit the fuzzer's pace stays under."""
    settings_ = embedded_settings(tmp_path_factory, ws_messages_per_s=100_000)
    key = create_key(settings_.database_url, "fuzzer")
    with (
        run_server(settings_) as server,
        connect(
            server.ws_url, additional_headers=bearer(key), open_timeout=TIMEOUT, max_size=None
        ) as socket,
    ):
        found = Fuzzed(server, key, socket)
        before = found.state()
        yield found
        assert found.pings >= 3 * EXAMPLES
        assert found.state() == before, "a bad message changed the store"
        with server.client(key) as client:  # still serving
            assert client.get("/health").status_code == 200
            again = client.post(f"/code-sessions/{found.session['id']}/run?wait=true").json()
            assert again["stdout"] == "1\n"


def _is_bad(frame: str | bytes) -> bool:
    try:
        protocol.parse_message(frame)
    except BadRequest:
        return True
    return False


def _expect_one_error(fuzzed: Fuzzed, frame: str | bytes, *, parses: bool = False) -> None:
    """One error answers the frame (with its ref), and it is the client's fault. Unless the
    frame `parses` (a command refuses it), only frames the protocol refuses are tried: any
    other could be a valid command that changes state."""
    if not parses:
        assume(_is_bad(frame))
    answers = fuzzed.answers(frame)
    assert len(answers) == 1 and answers[0]["type"] == "error", (frame[:300], answers)
    assert answers[0]["code"] not in ("internal", "unauthorized"), answers
    ref = protocol.ref_of(frame)
    if ref is not None:
        assert answers[0]["ref"] == ref


@given(value=json_values)
@_SETTINGS
def test_random_json(fuzzed: Fuzzed, value: Any) -> None:
    """Any JSON value at all."""
    _expect_one_error(fuzzed, json.dumps(value))


@given(
    kind=st.sampled_from(sorted(TEMPLATES)),
    extra=st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=4),
    ref=st.none() | st.text(max_size=8) | json_values,
)
@_SETTINGS
def test_messages_with_fields_of_the_wrong_type(
    fuzzed: Fuzzed, kind: str, extra: dict[str, Any], ref: Any
) -> None:
    """A real message type with real ids, some fields replaced or added with random values."""
    template = {
        name: fuzzed.real_id(value) if value in ("SESSION", "EXECUTION") else value
        for name, value in TEMPLATES[kind].items()
    }
    message = {"type": kind, **template, **extra}
    if ref is not None:
        message["ref"] = ref
    _expect_one_error(fuzzed, json.dumps(message))


@given(
    kind=st.sampled_from(sorted(TEMPLATES)),
    depth=st.integers(min_value=1, max_value=100_000),
    # Past both limits: source (256 KiB) and stdin (1 MiB).
    size=st.sampled_from([1_100_000, 3_000_000]),
    huge=st.booleans(),
)
@settings(_SETTINGS, max_examples=EXAMPLES // 5)
def test_huge_and_deep_values(fuzzed: Fuzzed, kind: str, depth: int, size: int, huge: bool) -> None:
    """Source and stdin past their limits, and values nested deeper than any parser goes."""
    if huge:
        field = {"create": "source_code", "autosave": "source_code", "run": "stdin"}.get(kind)
        message = {
            "type": kind,
            **{
                k: fuzzed.real_id(v) if v.__class__ is str and v.isupper() else v
                for k, v in TEMPLATES[kind].items()
            },
            field or "data": "x" * size,
            "ref": "big",
        }
        _expect_one_error(fuzzed, json.dumps(message), parses=field is not None)
    else:
        nested = "[" * depth + "1" + "]" * depth
        _expect_one_error(fuzzed, f'{{"type": "{kind}", "ref": "deep", "limits": {nested}}}')


@given(frame=st.binary(max_size=512) | st.text(alphabet=string.printable, max_size=200))
@_SETTINGS
def test_binary_frames_and_text_that_is_no_json(fuzzed: Fuzzed, frame: bytes | str) -> None:
    """Binary frames (read as UTF-8 text, with U+FFFD for what is not) and plain text."""
    _expect_one_error(fuzzed, frame)
