"""The REST API over a real server, in embedded and distributed mode (reference README flow)."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from typing import Any

import httpx
import openapi_spec_validator
import pytest
import sqlalchemy as sa
from openapi_schema_validator import OAS30Validator

from tests.utils import (
    LiveServer,
    embedded_settings,
    free_port,
    run_server,
    wait_final,
    wait_status,
    wait_until,
)

HELLO = "print('Hello World')"
SLEEPER = "import time\nprint('started', flush=True)\ntime.sleep(60)"


def test_a_one_shot_tty_run(server: LiveServer) -> None:
    """POST /executions with tty: true runs in a terminal: its stdin is typed in (and echoed),
    its output is one stream, and the execution says tty."""
    source = "import os\nline = input()\nprint(os.isatty(0), os.isatty(1), line)"
    body = {"language": "python", "source_code": source, "stdin": "abc\n", "tty": True}
    with server.client() as client:
        answer = client.post("/executions?wait=true", json=body)
    assert answer.status_code == 200, answer.text
    execution = answer.json()
    assert (execution["status"], execution["tty"]) == ("COMPLETED", True)
    assert execution["stdout"] == "abc\r\nTrue True abc\r\n" and execution["stderr"] == ""


def test_a_tty_run_starts_at_the_size_it_asked_for(server: LiveServer) -> None:
    """cols and rows of a tty run are its terminal's size when the program starts; a size out
    of bounds is a 400, one without the other or without tty a 422, and those run nothing."""
    source = "import os\nprint(tuple(os.get_terminal_size()))"
    body = {"language": "python", "source_code": source, "tty": True, "cols": 132, "rows": 43}
    with server.client() as client:
        answer = client.post("/executions?wait=true", json=body)
        assert answer.status_code == 200, answer.text
        assert answer.json()["stdout"] == "(132, 43)\r\n"
        session = client.post("/code-sessions", json={"language": "python", "source_code": source})
        session_id = session.json()["session_id"]
        run_url = f"/code-sessions/{session_id}/run"
        answer = client.post(run_url, json={"tty": True, "cols": 50, "rows": 10})
        assert answer.status_code == 202, answer.text
        execution = wait_final(client, answer.json()["execution_id"])
        assert execution["stdout"] == "(50, 10)\r\n"
        for refused, status in [
            ({"tty": True, "cols": 1001, "rows": 24}, 400),
            ({"tty": True, "cols": 80, "rows": 0}, 400),
            ({"tty": True, "cols": 80}, 422),
            ({"cols": 80, "rows": 24}, 422),
        ]:
            answer = client.post(run_url, json=refused)
            assert answer.status_code == status, (refused, answer.text)
            assert answer.json()["error"]["message"].startswith(("cols", "rows")), answer.text
        listed = client.get(f"/executions/session/{session_id}").json()
        assert [e["execution_id"] for e in listed] == [execution["execution_id"]]


def test_a_tty_runs_execution_says_its_starting_size(server: LiveServer) -> None:
    """A tty run's execution says the size its terminal started with, as `cols` and `rows`:
    the size asked, or 80x24 when none was; a run without tty has neither. Each such
    execution is what the OpenAPI document says an Execution is."""
    source = "import os\nprint(tuple(os.get_terminal_size()) if os.isatty(1) else 'no tty')"
    run = {"language": "python", "source_code": source}
    with server.client() as client:
        schema = client.get("/openapi.json").json()["components"]
        execution_schema = OAS30Validator({**schema["schemas"]["Execution"], "components": schema})
        asked = client.post(
            "/executions?wait=true", json={**run, "tty": True, "cols": 100, "rows": 30}
        )
        assert asked.status_code == 200, asked.text
        assert asked.json()["stdout"] == "(100, 30)\r\n"
        got = client.get(f"/executions/{asked.json()['execution_id']}").json()
        assert (got["tty"], got["cols"], got["rows"]) == (True, 100, 30)
        assert asked.json()["cols"] == 100 and asked.json()["rows"] == 30
        session = client.post("/code-sessions", json=run).json()
        queued = client.post(f"/code-sessions/{session['session_id']}/run", json={"tty": True})
        by_default = wait_final(client, queued.json()["execution_id"])
        assert by_default["stdout"] == "(80, 24)\r\n"
        assert (by_default["cols"], by_default["rows"]) == (80, 24)
        queued = client.post(f"/code-sessions/{session['session_id']}/run", json={})
        without_tty = wait_final(client, queued.json()["execution_id"])
        assert without_tty["stdout"] == "no tty\n", without_tty
        assert {"tty", "cols", "rows"}.isdisjoint(without_tty), without_tty
        listed = client.get(f"/executions/session/{session['session_id']}").json()
        assert [(e.get("cols"), e.get("rows")) for e in listed] == [(None, None), (80, 24)]
        described = set(schema["schemas"]["Execution"]["properties"])
        for execution in (got, by_default, without_tty, *listed):
            assert set(execution) <= described, set(execution) - described
            assert not list(execution_schema.iter_errors(execution)), execution


def test_a_one_shot_run_with_cases(server: LiveServer) -> None:
    """POST /executions with cases answers (wait=true) with one result per case; past
    LIVECODE_MAX_CASES it is a 422, and cases whose stdin adds up to more than the stdin
    limit a 413."""
    run = {"language": "python", "source_code": "print(input()[::-1])"}
    cases = [{"stdin": "abc", "expected_output": "cba"}, {"stdin": "xy", "expected_output": "x"}]
    with server.client() as client:
        answer = client.post("/executions?wait=true", json={**run, "cases": cases})
        assert answer.status_code == 200, answer.text
        execution = answer.json()
        assert [(c["stdout"], c["verdict"]) for c in execution["cases"]] == [
            ("cba\n", "accepted"),
            ("yx\n", "wrong_answer"),
        ]
        assert execution["status"] == "COMPLETED" and execution["stdout"] == "cba\nyx\n"
        too_many = [{"stdin": "a"}] * (server.settings.max_cases + 1)
        refused = client.post("/executions", json={**run, "cases": too_many})
        assert refused.status_code == 422 and refused.json()["error"]["code"] == "bad_request"
        assert str(server.settings.max_cases) in refused.json()["error"]["message"]
        half = "a" * (server.settings.max_stdin_bytes // 2 + 1)
        too_large = client.post("/executions", json={**run, "cases": [{"stdin": half}] * 2})
        assert too_large.status_code == 413, too_large.text


def test_reference_flow(server: LiveServer) -> None:
    """Create, autosave, read, run, poll, list and delete, with the reference's JSON shapes."""
    with server.client() as client:
        created = client.post(
            "/code-sessions", json={"language": "python", "source_code": "print(1)"}
        )
        assert created.status_code == 201
        session = created.json()
        assert session["status"] == "ACTIVE" and session["version"] == 1
        session_id = session["session_id"]

        saved = client.patch(f"/code-sessions/{session_id}", json={"source_code": HELLO})
        assert saved.status_code == 200
        assert saved.json() == {
            **saved.json(),
            "session_id": session_id,
            "status": "ACTIVE",
            "version": 2,
        }

        read = client.get(f"/code-sessions/{session_id}").json()
        assert {k: read[k] for k in ("id", "language", "source_code", "status")} == {
            "id": session_id,
            "language": "python",
            "source_code": HELLO,
            "status": "ACTIVE",
        }
        assert read["created_at"].endswith("Z") and read["updated_at"] >= read["created_at"]

        queued = client.post(f"/code-sessions/{session_id}/run")
        assert queued.status_code == 202
        assert queued.json()["status"] == "QUEUED"
        execution_id = queued.json()["execution_id"]

        execution = wait_final(client, execution_id)
        assert execution["status"] == "COMPLETED" and execution["reason"] == "exit"
        assert execution["stdout"] == "Hello World\n" and execution["stderr"] == ""
        assert execution["exit_code"] == 0 and execution["execution_time_ms"] >= 0
        assert execution["queued_at"] <= execution["started_at"] <= execution["finished_at"]

        listed = client.get(f"/executions/session/{session_id}").json()
        assert [item["execution_id"] for item in listed] == [execution_id]
        assert listed[0]["status"] == "COMPLETED"

        assert client.delete(f"/code-sessions/{session_id}").status_code == 204
        assert client.get(f"/code-sessions/{session_id}").status_code == 404
        gone = client.get(f"/executions/{execution_id}")
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "not_found"


def test_execution_keeps_the_source_it_ran(server: LiveServer) -> None:
    """Autosaving after a run does not change what the run executed."""
    with server.client() as client:
        session_id = client.post(
            "/code-sessions", json={"language": "py", "source_code": HELLO}
        ).json()["session_id"]
        first = client.post(f"/code-sessions/{session_id}/run?wait=true").json()
        client.patch(f"/code-sessions/{session_id}", json={"source_code": "print('changed')"})
        assert (
            client.get(f"/executions/{first['execution_id']}").json()["stdout"] == "Hello World\n"
        )
        second = client.post(f"/code-sessions/{session_id}/run?wait=true").json()
        assert second["stdout"] == "changed\n"
        listed = client.get(f"/executions/session/{session_id}").json()
        assert [e["execution_id"] for e in listed] == [
            second["execution_id"],
            first["execution_id"],
        ]
        page = client.get(
            f"/executions/session/{session_id}?limit=1&before={second['execution_id']}"
        ).json()
        assert [e["execution_id"] for e in page] == [first["execution_id"]]


@pytest.mark.parametrize(
    ("language", "source", "stdout"),
    [
        ("python", "import sys\nprint(sys.stdin.read().upper(), sys.argv[1:])", "HI ['a', 'b']\n"),
        (
            "javascript",
            "const fs=require('fs');console.log(fs.readFileSync(0,'utf8').toUpperCase(), process.argv.slice(2))",
            "HI [ 'a', 'b' ]\n",
        ),
        (
            "c++",
            "#include <iostream>\n#include <string>\nint main(int c,char**v){std::string s;std::cin>>s;for(auto&ch:s)ch=toupper(ch);std::cout<<s<<' '<<v[1]<<v[2]<<'\\n';}",
            "HI ab\n",
        ),
    ],
)
def test_one_shot_run_with_stdin_and_args(
    server: LiveServer, language: str, source: str, stdout: str
) -> None:
    """POST /executions?wait=true runs without a session and answers with the final execution."""
    with server.client() as client:
        answer = client.post(
            "/executions?wait=true",
            json={"language": language, "source_code": source, "stdin": "hi", "args": ["a", "b"]},
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "COMPLETED", answer.json()
        assert answer.json()["stdout"] == stdout


def test_compile_error_and_runtime_error(server: LiveServer) -> None:
    """A C++ compile error and a Python crash end FAILED, with the reason and the message."""
    with server.client() as client:
        broken = client.post(
            "/executions?wait=true",
            json={"language": "cpp", "source_code": "int main() { return x; }"},
        ).json()
        assert (broken["status"], broken["reason"]) == ("FAILED", "compile_error")
        assert "x" in broken["compile_output"] and "error" in broken["compile_output"]
        crash = client.post(
            "/executions?wait=true", json={"language": "python", "source_code": "1/0"}
        ).json()
        assert (crash["status"], crash["reason"], crash["exit_code"]) == (
            "FAILED",
            "runtime_error",
            1,
        )
        assert "ZeroDivisionError" in crash["stderr"]


def timed_out_run(client: httpx.Client) -> dict[str, Any]:
    """The final execution of a program that outlives its one-second limit."""
    answer: dict[str, Any] = client.post(
        "/executions?wait=true",
        json={"language": "python", "source_code": "while True: pass", "limits": {"timeout_s": 1}},
    ).json()
    return answer


def test_timeout_is_reported_like_the_reference(server: LiveServer) -> None:
    """A program over its time limit ends as TIMEOUT, its stderr saying which limit."""
    with server.client() as client:
        answer = timed_out_run(client)
        assert (answer["status"], answer["reason"]) == ("TIMEOUT", "timeout")
        assert answer["stderr"].endswith("Execution exceeded 1 second timeout")


def test_cancel_a_running_execution(server: LiveServer) -> None:
    """Cancelling a running execution over REST ends it as CANCELLED."""
    with server.client() as client:
        execution_id = client.post(
            "/executions", json={"language": "python", "source_code": SLEEPER}
        ).json()["execution_id"]
        wait_status(client, execution_id, "RUNNING")
        answer = client.post(f"/executions/{execution_id}/cancel")
        assert answer.status_code == 202
        final = wait_final(client, execution_id)
        assert (final["status"], final["reason"]) == ("CANCELLED", "cancelled")


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("POST", "/code-sessions", b"{not json", 400, "bad_request"),
        ("POST", "/code-sessions", {"source_code": "x"}, 400, "bad_request"),
        ("POST", "/code-sessions", {"language": "cobol", "source_code": "x"}, 422, "bad_request"),
        (
            "POST",
            "/code-sessions",
            {"language": "python", "source_code": "x" * 262145},
            413,
            "too_large",
        ),
        (
            "POST",
            "/executions",
            {"language": "python", "source_code": "", "stdin": "x" * 1048577},
            413,
            "too_large",
        ),
        (
            "POST",
            "/executions",
            {"language": "python", "source_code": "", "limits": {"timeout_s": -1}},
            400,
            "bad_request",
        ),
        (
            "POST",
            "/executions",
            {"language": "python", "source_code": "", "limits": {"cpu": 1}},
            400,
            "bad_request",
        ),
        ("GET", "/code-sessions/00000000-0000-0000-0000-000000000000", None, 404, "not_found"),
        ("GET", "/executions/not-a-uuid", None, 404, "not_found"),
        ("POST", "/code-sessions/00000000-0000-0000-0000-000000000000/run", None, 404, "not_found"),
        ("GET", "/nowhere", None, 404, "not_found"),
    ],
)
def test_bad_requests_get_clear_errors(
    server: LiveServer, method: str, path: str, body: Any, status: int, code: str
) -> None:
    """A bad request gets its status, an error code and a message, never a traceback."""
    with server.client() as client:
        content = body if isinstance(body, bytes) else None
        answer = client.request(method, path, content=content, json=None if content else body)
        assert answer.status_code == status, answer.text
        assert answer.json()["error"]["code"] == code
        assert answer.json()["error"]["message"]
        assert "Traceback" not in answer.text


# A request's limit, and the setting that is its maximum.
LIMIT_SETTINGS = [
    ("timeout_s", "wall_timeout_s"),
    ("memory_mb", "memory_mb"),
    ("max_processes", "max_processes"),
    ("output_limit_bytes", "output_limit_bytes"),
]


@pytest.mark.parametrize(("limit", "setting"), LIMIT_SETTINGS)
def test_a_limit_above_the_maximum_is_refused(server: LiveServer, limit: str, setting: str) -> None:
    """More than the server's maximum is a 422 naming the limit and the maximum, not a cut."""
    maximum = getattr(server.settings, setting)
    run = {"language": "python", "source_code": "pass"}
    with server.client() as client:
        refused = client.post("/executions", json={**run, "limits": {limit: maximum + 1}})
        assert refused.status_code == 422, refused.text
        error = refused.json()["error"]
        assert error["code"] == "bad_request"
        assert f"limits.{limit}" in error["message"] and f"{maximum:g}" in error["message"]
        assert client.post("/executions", json={**run, "limits": {limit: maximum}}).is_success


@pytest.mark.parametrize("base_version", [2**63, 10**30, "1", True, 0])
def test_a_version_that_is_no_version_is_refused_and_changes_nothing(
    server: LiveServer, base_version: Any
) -> None:
    """A base_version that is no version is a 400 and saves nothing; a whole float still counts."""
    with server.client() as client:  # one connection: it must stay usable after the refusal
        session_id = client.post(
            "/code-sessions", json={"language": "python", "source_code": "a"}
        ).json()["session_id"]
        answer = client.patch(
            f"/code-sessions/{session_id}", json={"source_code": "b", "base_version": base_version}
        )
        assert answer.status_code == 400 and answer.json()["error"]["code"] == "bad_request"
        assert "base_version" in answer.json()["error"]["message"]
        session = client.get(f"/code-sessions/{session_id}").json()
        assert (session["source_code"], session["version"]) == ("a", 1)
        whole = client.patch(  # a whole float is a number a client computed: still a version
            f"/code-sessions/{session_id}", json={"source_code": "b", "base_version": 1.0}
        )
        assert whole.status_code == 200 and whole.json()["version"] == 2


def test_a_method_a_path_does_not_serve_lists_the_ones_it_does(server: LiveServer) -> None:
    """A method a path does not serve is a 405 listing the methods it does serve."""
    with server.client() as client:
        answer = client.put("/code-sessions/00000000-0000-0000-0000-000000000000", json={})
        assert answer.status_code == 405 and answer.json()["error"]["code"] == "bad_request"
        allowed = {method.strip() for method in answer.headers["Allow"].split(",")}
        assert {"GET", "PATCH", "DELETE"} <= allowed


def test_json_nested_too_deeply_is_a_bad_request(server: LiveServer) -> None:
    """JSON nested too deeply is a 400, and the connection keeps working."""
    with server.client() as client:
        answer = client.post("/code-sessions", content=b"[" * 100_000)
        assert answer.status_code == 400 and answer.json()["error"]["code"] == "bad_request"
        assert client.get("/health").status_code == 200  # the connection is still served


def test_stale_base_version_is_a_conflict_and_changes_nothing(server: LiveServer) -> None:
    """Saving over a newer version is a 409 conflict, and the newer source stays."""
    with server.client() as client:
        session_id = client.post(
            "/code-sessions", json={"language": "python", "source_code": "a"}
        ).json()["session_id"]
        assert (
            client.patch(
                f"/code-sessions/{session_id}", json={"source_code": "b", "base_version": 1}
            ).json()["version"]
            == 2
        )
        stale = client.patch(
            f"/code-sessions/{session_id}", json={"source_code": "c", "base_version": 1}
        )
        assert stale.status_code == 409 and stale.json()["error"]["code"] == "conflict"
        session = client.get(f"/code-sessions/{session_id}").json()
        assert (session["source_code"], session["version"]) == ("b", 2)


def test_runs_per_minute_are_limited(server: LiveServer) -> None:
    """The 11th run of a session within a minute is a 429 with Retry-After, and is not queued."""
    with server.client() as client:
        session_id = client.post(
            "/code-sessions", json={"language": "python", "source_code": "pass"}
        ).json()["session_id"]
        answers = [client.post(f"/code-sessions/{session_id}/run") for _ in range(11)]
        assert [a.status_code for a in answers] == [202] * 10 + [429]
        assert answers[-1].json()["error"]["code"] == "rate_limited"
        assert 1 <= int(answers[-1].headers["Retry-After"]) <= 60
        assert len(client.get(f"/executions/session/{session_id}").json()) == 10


def test_languages_report_real_versions(server: LiveServer) -> None:
    """GET /languages lists the three languages with the versions installed."""
    with server.client() as client:
        languages = {language["id"]: language for language in client.get("/languages").json()}
    assert set(languages) == {"python", "javascript", "c++"}
    assert languages["python"]["version"].startswith("3.")
    assert languages["javascript"]["version"].lstrip("v").startswith("20")
    assert "js" in languages["javascript"]["aliases"] and "cpp" in languages["c++"]["aliases"]
    assert all(language["available"] for language in languages.values())


def test_health_endpoints(server: LiveServer) -> None:
    """Every health endpoint answers 200 on a working server."""
    with server.client() as client:
        assert client.get("/health").json()["status"] == "healthy"
        for part in ("ready", "db", "redis", "workers", "celery", "sandbox"):
            answer = client.get(f"/health/{part}")
            assert answer.status_code == 200, (part, answer.text)
        assert client.get("/health/redis").json()["ping"] == "PONG"
        assert client.get("/health/celery").json()["active_workers"] >= 1
        assert client.get("/health/db").json()["status"] == "connected"


def test_openapi_and_local_swagger_ui(embedded_server: LiveServer) -> None:
    """The OpenAPI document is valid and describes a real execution; /docs needs no CDN."""
    with embedded_server.client() as client:
        document = client.get("/openapi.json").json()
        for path in (
            "/code-sessions",
            "/code-sessions/{session_id}",
            "/code-sessions/{session_id}/run",
            "/executions",
            "/executions/{execution_id}",
            "/executions/{execution_id}/events",
            "/executions/{execution_id}/cancel",
            "/executions/session/{session_id}",
            "/languages",
            "/health",
            "/health/celery",
            "/health/sandbox",
        ):
            assert path in document["paths"], path
        assert {"Execution", "Session", "Error", "CreateSession", "OneShotRun"} <= set(
            document["components"]["schemas"]
        )
        openapi_spec_validator.validate(document)  # the dialect Swagger UI 4 reads: 3.0
        run_options = OAS30Validator(
            {
                **document["components"]["schemas"]["RunOptions"],
                "components": document["components"],
            }
        )
        for accepted in ({"limits": None, "stdin": None}, {"limits": {"memory_mb": 64}}):
            assert not list(run_options.iter_errors(accepted)), accepted
        assert list(run_options.iter_errors({"limits": {"memory_mb": 0}}))
        ran = timed_out_run(client)
        assert ran["status"] == "TIMEOUT" and ran["error"]
        described = document["components"]["schemas"]["Execution"]["properties"]
        assert set(ran) <= set(described), set(ran) - set(described)
        page = client.get("/docs")
        assert page.status_code == 200 and "/docs/static/swagger-ui-bundle.js" in page.text
        assert "://" not in page.text  # every asset from this server, no CDN
        bundle = client.get("/docs/static/swagger-ui-bundle.js")
        assert bundle.status_code == 200 and len(bundle.content) > 100_000


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One worker thread, a queue of one, three runs per session, ?wait=true waits 1 s."""
    settings = embedded_settings(tmp_path_factory, queue_cap=1, runs_per_session=3, wait_cap_s=1.0)
    settings = dataclasses.replace(settings, worker_threads=1)
    with run_server(settings) as server:
        yield server


def test_full_queue_answers_503(small_server: LiveServer) -> None:
    """A run beyond what the queue holds is a 503 with Retry-After."""
    with small_server.client() as client:
        running = client.post(
            "/executions", json={"language": "python", "source_code": SLEEPER}
        ).json()
        wait_status(client, running["execution_id"], "RUNNING")
        queued = client.post("/executions", json={"language": "python", "source_code": SLEEPER})
        assert queued.status_code == 202  # waits behind the running one: the queue holds one
        refused = client.post("/executions", json={"language": "python", "source_code": HELLO})
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "unavailable"
        assert int(refused.headers["Retry-After"]) >= 1
        for execution_id in (queued.json()["execution_id"], running["execution_id"]):
            client.post(f"/executions/{execution_id}/cancel")
            assert wait_final(client, execution_id)["status"] == "CANCELLED"


def test_runs_per_session_are_capped(small_server: LiveServer) -> None:
    """A session's runs beyond its cap are a 429, and are not stored."""
    with small_server.client() as client:
        session_id = client.post(
            "/code-sessions", json={"language": "python", "source_code": "pass"}
        ).json()["session_id"]
        for _ in range(3):
            answer = client.post(f"/code-sessions/{session_id}/run?wait=true")
            assert answer.status_code == 200 and answer.json()["status"] == "COMPLETED"
        refused = client.post(f"/code-sessions/{session_id}/run")
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limited"
        assert len(client.get(f"/executions/session/{session_id}").json()) == 3


def test_wait_gives_202_when_the_run_outlasts_the_wait_cap(small_server: LiveServer) -> None:
    """A ?wait=true run that outlasts the wait cap is answered 202, to be polled."""
    with small_server.client() as client:
        answer = client.post(
            "/executions?wait=true", json={"language": "python", "source_code": SLEEPER}
        )
        assert answer.status_code == 202 and answer.json()["status"] == "QUEUED"
        execution_id = answer.json()["execution_id"]
        client.post(f"/executions/{execution_id}/cancel")
        assert wait_final(client, execution_id)["status"] == "CANCELLED"


def test_deleting_a_session_cancels_its_running_execution(server: LiveServer) -> None:
    """Deleting a session kills its running program: nothing sleeps on in the sandbox."""
    with server.client() as client:
        session_id = client.post(
            "/code-sessions", json={"language": "python", "source_code": SLEEPER}
        ).json()["session_id"]
        execution_id = client.post(f"/code-sessions/{session_id}/run").json()["execution_id"]
        # RUNNING is stored just before the program starts: look for the program itself.
        wait_until(
            lambda: sandboxed_programs(client), "the sleeper runs in a sandbox", interval_s=0.05
        )
        assert client.delete(f"/code-sessions/{session_id}").status_code == 204
        assert client.get(f"/executions/{execution_id}").status_code == 404
        wait_until(  # killed, not left to sleep its 60 s
            lambda: not sandboxed_programs(client),
            "the sleeper is gone from the sandbox",
            interval_s=0.05,
        )


def sandboxed_programs(client: httpx.Client) -> list[str]:
    """Command lines of user programs running in this server's sandbox slots (by slot uid), and
    of Python programs forked from a slot's warm interpreter (by its uid and their name)."""
    measures = client.get("/health/sandbox").json()
    workers = measures.get("workers", [measures])
    uids = {uid for worker in workers for uid in worker["slot_uids"]}
    warm_uids = {uid for worker in workers for uid in worker.get("warm_uids", [])}
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            uid = os.stat(f"/proc/{pid}").st_uid
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                command = cmdline.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{pid}/comm") as comm:
                name = comm.read().strip()
        except OSError:
            continue
        if (uid in uids and "/box/main.py" in command) or (uid in warm_uids and name == "python3"):
            found.append(command)
    return found


def test_redis_down_gives_503_and_the_rest_keeps_working(server_without_redis: LiveServer) -> None:
    """With Redis down, a run is a 503 with Retry-After, while sessions still work."""
    with server_without_redis.client() as client:
        created = client.post("/code-sessions", json={"language": "python", "source_code": HELLO})
        assert created.status_code == 201  # the store does not need Redis
        session_id = created.json()["session_id"]
        refused = client.post(f"/code-sessions/{session_id}/run")
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "unavailable"
        assert int(refused.headers["Retry-After"]) >= 1
        assert "127.0.0.1" not in refused.text and "Traceback" not in refused.text
        health = client.get("/health/redis")
        assert health.status_code == 503 and health.json()["status"] == "unavailable"
        assert client.get("/health").status_code == 200
        assert client.get(f"/code-sessions/{session_id}").json()["source_code"] == HELLO


def test_database_down_gives_503(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A PostgreSQL that is not there: clear 503s, liveness still answers, nothing crashes."""
    settings = embedded_settings(tmp_path_factory)
    settings = dataclasses.replace(
        settings, database_url=f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nowhere"
    )
    with run_server(settings) as server, server.client() as client:
        refused = client.post("/code-sessions", json={"language": "python", "source_code": HELLO})
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "unavailable"
        assert int(refused.headers["Retry-After"]) >= 1
        assert "Traceback" not in refused.text and "psycopg" not in refused.text
        assert client.get("/health/db").status_code == 503
        assert client.get("/health").status_code == 200


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"language": "python", "source_code": "print('\ud800')"}, "bad_request"),
        ({"language": "python", "source_code": "print(1)\x00"}, "bad_request"),
        ({"language": "python", "source_code": "print(1)", "args": ["a\x00b"]}, "bad_request"),
        ({"language": "python", "source_code": "print(1)", "stdin": "\udfff"}, "bad_request"),
    ],
)
def test_text_that_cannot_be_program_text_is_refused(
    server: LiveServer, body: dict[str, Any], code: str
) -> None:
    """Source, arguments or stdin with a lone surrogate or a NUL byte are a 400."""
    with server.client() as client:
        content = json.dumps(body)  # json.dumps escapes the lone surrogates, as a client would
        answer = client.post(
            "/executions", content=content, headers={"content-type": "application/json"}
        )
        assert answer.status_code == 400 and answer.json()["error"]["code"] == code
        assert client.get("/health").status_code == 200  # the connection is still good


def test_huge_body_is_refused_before_it_is_read(embedded_server: LiveServer) -> None:
    """A request body of 9 MiB is refused with 413."""
    with embedded_server.client() as client:
        huge = b'{"language": "python", "source_code": "' + b"x" * (9 << 20) + b'"}'
        answer = client.post("/executions", content=huge)
        assert answer.status_code == 413 and answer.json()["error"]["code"] == "too_large"


def test_a_session_id_spelled_differently_shares_its_rate_limit(
    embedded_server: LiveServer,
) -> None:
    """Another spelling of a session id (capitals, no dashes, braces) shares its rate limit."""
    with embedded_server.client() as client:
        session_id = client.post(
            "/code-sessions", json={"language": "python", "source_code": "pass"}
        ).json()["session_id"]
        spellings = [
            session_id,
            session_id.upper(),
            session_id.replace("-", ""),
            "{" + session_id + "}",
        ]
        answers = [
            client.post(f"/code-sessions/{spellings[n % 4]}/run").status_code for n in range(11)
        ]
        assert answers == [202] * 10 + [429]


def test_embedded_restart_runs_what_was_left_queued(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Embedded mode keeps its queue in memory: after a restart, QUEUED executions run."""
    settings = dataclasses.replace(embedded_settings(tmp_path_factory), worker_threads=1)
    sleeper = "import time\ntime.sleep(2)\nprint('slept')"
    with run_server(settings) as server, server.client() as client:
        first = client.post(
            "/executions", json={"language": "python", "source_code": sleeper}
        ).json()
        wait_status(client, first["execution_id"], "RUNNING")
        left = [
            client.post(
                "/executions", json={"language": "python", "source_code": f"print({n})"}
            ).json()
            for n in range(2)
        ]
        assert all(
            client.get(f"/executions/{e['execution_id']}").json()["status"] == "QUEUED"
            for e in left
        )
    # The server stopped after finishing the running one; the two queued ones were not run.
    engine = sa.create_engine(settings.database_url)
    with engine.connect() as connection:
        query = sa.text("SELECT status FROM executions WHERE id IN (:a, :b)")
        ids = {"a": left[0]["execution_id"], "b": left[1]["execution_id"]}
        assert [row.status for row in connection.execute(query, ids)] == ["QUEUED", "QUEUED"]
    engine.dispose()
    with run_server(settings) as server, server.client() as client:
        assert client.get(f"/executions/{first['execution_id']}").json()["stdout"] == "slept\n"
        for number, execution in enumerate(left):
            final = wait_final(client, execution["execution_id"])
            assert (final["status"], final["stdout"]) == ("COMPLETED", f"{number}\n")
