"""schemathesis against the served /openapi.json, with and without keys: every operation with
schema-valid data (each must be accepted: no 5xx, every answer as documented) and with
schema-violating data (no 5xx, every answer as documented), then the stateful phase, which
follows the document's links from a created session to its runs and their executions.

Cases: EXAMPLES per operation and mode, STATEFUL_EXAMPLES scenarios of up to STATEFUL_STEPS
calls: 1,503 requests in one run here (544 schema-valid, 500 schema-violating, 459 stateful; the
authentication checks add their own), against real servers (embedded, the real sandbox), 51 s
on 2 cores.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from livecode import openapi
from tests.utils import LiveServer, bearer, create_key, embedded_settings, run_server

EXAMPLES = 25
STATEFUL_EXAMPLES = 25
STATEFUL_STEPS = 8
# A schema-violating request must still get no 5xx and an answer the document describes (the
# server is lenient in places, e.g. ?wait=maybe is "no", so "it must be refused" is not asked).
NEGATIVE_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
LABELS = sorted(
    result.ok().label
    for result in schemathesis.openapi.from_dict(openapi.document()).get_all_operations()
)
_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
    derandomize=False,
)


class Fuzzed:
    """A live server, the document it serves, and the headers its clients send."""

    def __init__(self, server: LiveServer, key: str | None) -> None:
        self.server = server
        document = httpx.get(f"{server.url}/openapi.json").json()
        self.schema = schemathesis.openapi.from_dict(document)
        self.schema.config.update(base_url=server.url)
        if key is not None:
            # Given as schemathesis's auth, so that its checks can also try without it, or with
            # a wrong one (each must be a 401).

            @self.schema.auth()
            class Key:
                def get(self, case: schemathesis.Case, context: Any) -> str:
                    return key

                def set(self, case: schemathesis.Case, data: str, context: Any) -> None:
                    case.headers = {**(case.headers or {}), **bearer(data)}

        self.operations = {r.ok().label: r.ok() for r in self.schema.get_all_operations()}


@pytest.fixture(scope="module", params=["no keys", "keys"])
def fuzzed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fuzzed]:
    """An embedded server (a short wall time and wait cap, so that no case waits long)."""
    settings_ = embedded_settings(
        tmp_path_factory, wall_timeout_s=2.0, wait_cap_s=1.0, tenant_runs_per_minute=10_000
    )
    key = create_key(settings_.database_url, "fuzzer") if request.param == "keys" else None
    with run_server(settings_) as server:
        yield Fuzzed(server, key)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("label", LABELS)
def test_every_operation(fuzzed: Fuzzed, label: str, mode: GenerationMode) -> None:
    """Each operation: schema-valid data is served as documented; invalid data is refused or
    served, never with a 5xx, always as documented."""
    operation = fuzzed.operations[label]
    checks = None if mode == GenerationMode.POSITIVE else NEGATIVE_CHECKS
    if mode == GenerationMode.NEGATIVE and not _takes_input(operation):
        pytest.skip("no parameter and no body: nothing to violate")

    @given(case=operation.as_strategy(generation_mode=mode))
    @_SETTINGS
    def check(case: schemathesis.Case) -> None:
        case.call_and_validate(checks=checks)

    try:
        check()
    except Unsatisfiable:
        if mode == GenerationMode.POSITIVE:
            raise
        pytest.skip("its schema takes any value: nothing to violate")  # e.g. a file's name


def test_stateful(fuzzed: Fuzzed) -> None:
    """Calls chained by the document's links reach real sessions and executions, and every
    answer is as documented."""
    reached: collections.Counter[tuple[str, int]] = collections.Counter()
    base = fuzzed.schema.as_state_machine()

    class Machine(base):  # type: ignore[valid-type, misc]
        def after_call(self, response: Any, case: schemathesis.Case) -> None:
            reached[(case.operation.label, response.status_code)] += 1

    Machine.run(
        settings=settings(
            max_examples=STATEFUL_EXAMPLES,
            stateful_step_count=STATEFUL_STEPS,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
    )
    # A real id is reached when a call on it succeeds: which call the walk makes is its own
    # choice (one walk cancelled and streamed executions but never GET one).
    for parameter in ("{session_id}", "{execution_id}"):
        with_a_real_id = [
            (label, status)
            for (label, status), count in reached.items()
            if parameter in label and 200 <= status < 300 and count
        ]
        assert with_a_real_id, (parameter, sorted(reached.items()))


def _takes_input(operation: Any) -> bool:
    definition = operation.definition.raw
    parameters = [*operation.definition.raw.get("parameters", ()), *operation.path_parameters]
    return bool(parameters) or "requestBody" in definition
