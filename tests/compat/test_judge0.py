"""The Judge0 CE 1.13.1 API under /judge0, as raw clients use it (httpx, plain JSON)."""

from __future__ import annotations

import base64
import re
import time
import uuid
from typing import Any

import httpx
import pytest

from livecode.compat.judge0_answer import ALL_FIELDS
from tests.utils import TIMEOUT, LiveServer, embedded_settings, run_server, wait_final

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
HELLO = "print('hello')"


def submit(client: httpx.Client, query: str = "?wait=true", **fields: Any) -> dict[str, Any]:
    """POST a submission (python unless language_id says otherwise); its answer, checked 201."""
    body = {"language_id": 71, **fields}
    response = client.post(f"/judge0/submissions{query}", json=body)
    assert response.status_code == 201, response.text
    answer: dict[str, Any] = response.json()
    return answer


def poll(client: httpx.Client, token: str, query: str = "") -> dict[str, Any]:
    """GET a submission until its status is neither In Queue nor Processing."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        answer: dict[str, Any] = client.get(f"/judge0/submissions/{token}{query}").json()
        if answer["status"]["id"] not in (1, 2):
            return answer
        assert time.monotonic() < deadline, f"submission {token} still {answer['status']}"
        time.sleep(0.05)


def test_languages_list_the_sdk_ids_with_real_versions(embedded_server: LiveServer) -> None:
    """/languages lists 71, 63, 52 and 54, sorted by name, named with the versions run here."""
    with embedded_server.client() as client:
        languages = client.get("/judge0/languages").json()
        livecode = {item["id"]: item for item in client.get("/languages").json()}
    assert [language["id"] for language in languages] == [52, 54, 63, 71]
    names = {language["id"]: language["name"] for language in languages}
    assert names[71] == f"Python ({livecode['python']['version']})"
    assert names[63] == f"JavaScript (Node.js {livecode['javascript']['version']})"
    assert names[52] == names[54] == f"C++ (GCC {livecode['c++']['version']})"
    assert all(set(language) == {"id", "name"} for language in languages)


def test_one_language_has_its_commands(embedded_server: LiveServer) -> None:
    """/languages/{id} answers listed and accepted ids; others are Judge0's 404."""
    with embedded_server.client() as client:
        cpp = client.get("/judge0/languages/54").json()
        python = client.get("/judge0/languages/113").json()  # Judge0 1.14.0's Python
        missing = client.get("/judge0/languages/70")
        everything = client.get("/judge0/languages/all").json()
    assert cpp["source_file"] == "main.cpp" and cpp["is_archived"] is False
    assert cpp["compile_cmd"].startswith("/usr/bin/g++") and cpp["run_cmd"] == "./main"
    assert python["name"].startswith("Python (") and python["compile_cmd"] is None
    assert python["run_cmd"].startswith("/usr/bin/python3")
    assert missing.status_code == 404 and missing.json() == {"status": 404, "error": "Not Found"}
    assert {53, 92, 93, 97, 100, 102, 105, 113} <= {language["id"] for language in everything}


def test_statuses_about_version_and_config_info(embedded_server: LiveServer) -> None:
    """The SDK's start-up calls answer as Judge0 1.13.1, with livecode's real limits."""
    settings = embedded_server.settings
    with embedded_server.client() as client:
        statuses = client.get("/judge0/statuses").json()
        about = client.get("/judge0/about").json()
        version = client.get("/judge0/version")
        config = client.get("/judge0/config_info").json()
    assert [status["id"] for status in statuses] == list(range(1, 15))
    assert statuses[2] == {"id": 3, "description": "Accepted"}
    assert about["version"] == "1.13.1" and version.text == "1.13.1"
    assert len(config) == 39
    assert config["max_memory_limit"] == config["memory_limit"] == settings.memory_mb * 1024
    assert config["max_wall_time_limit"] == config["wall_time_limit"] == settings.wall_timeout_s
    assert config["max_queue_size"] == settings.queue_cap
    assert config["enable_callbacks"] is False and config["allow_enable_network"] is False
    assert config["allowed_languages_for_compile_options"] == []
    assert isinstance(config["cpu_time_limit"], float) and isinstance(config["stack_limit"], int)


def test_create_then_get_by_token(embedded_server: LiveServer) -> None:
    """Without wait the answer is only the token (the execution id); polling it gives the
    default fields, empty outputs null and times as decimal strings."""
    with embedded_server.client() as client:
        created = submit(client, "", source_code=HELLO)
        assert list(created) == ["token"]
        assert uuid.UUID(created["token"]).version == 4
        answer = poll(client, created["token"])
        execution = client.get(f"/executions/{created['token']}").json()
    assert list(answer) == [
        "stdout", "time", "memory", "stderr", "token", "compile_output", "message", "status"
    ]  # fmt: skip
    assert answer["stdout"] == "hello\n" and answer["stderr"] is None
    assert answer["compile_output"] is None and answer["message"] is None
    assert answer["status"] == {"id": 3, "description": "Accepted"}
    assert answer["time"] == _decimal(execution["cpu_time_ms"])
    assert answer["memory"] == execution["memory_kb"]
    assert "judge0" not in execution  # livecode's own API keeps its shape


def test_wait_answers_the_finished_submission(embedded_server: LiveServer) -> None:
    """wait=true answers 201 and the submission once it ran, with the fields asked for."""
    with embedded_server.client() as client:
        answer = submit(
            client, "?wait=true&fields=stdout,exit_code,status_id", source_code="print(6 * 7)"
        )
    assert answer == {"stdout": "42\n", "status_id": 3, "exit_code": 0}


def test_all_fields_are_judge0s_and_no_more(embedded_server: LiveServer) -> None:
    """fields=* answers the 35 attributes of a Judge0 submission, with its formats."""
    with embedded_server.client() as client:
        answer = submit(
            client,
            "?wait=true&fields=*",
            source_code="import sys\nprint(input())\nprint('oops', file=sys.stderr)",
            stdin="hi",
            command_line_arguments="a 'b c'",
        )
    assert list(answer) == ALL_FIELDS
    assert answer["language"] == {"id": 71, "name": answer["language"]["name"]}
    assert answer["language_id"] == 71 and answer["stdin"] == "hi"
    assert answer["stdout"] == "hi\n" and answer["stderr"] == "oops\n"
    assert TIMESTAMP.fullmatch(answer["created_at"]) and TIMESTAMP.fullmatch(answer["finished_at"])
    assert answer["created_at"] <= answer["finished_at"]
    assert re.fullmatch(r"\d+\.\d+", answer["time"]) and re.fullmatch(
        r"\d+\.\d+", answer["wall_time"]
    )
    assert answer["exit_code"] == 0 and answer["exit_signal"] is None
    assert answer["command_line_arguments"] == "a 'b c'"
    assert answer["callback_url"] is None and answer["additional_files"] is None
    assert answer["enable_network"] is False and answer["number_of_runs"] == 1
    assert answer["wall_time_limit"] == "30.0" and answer["cpu_extra_time"] == "0.0"


def test_unknown_fields_are_refused(embedded_server: LiveServer) -> None:
    """A field Judge0 does not have is a 400 naming it, before the submission is looked at."""
    with embedded_server.client() as client:
        response = client.post("/judge0/submissions?fields=stdout,nope,bad", json={})
    assert response.status_code == 400
    assert response.json() == {"error": "invalid fields: [nope, bad]"}


def test_base64_both_ways(embedded_server: LiveServer) -> None:
    """base64_encoded=true decodes source, stdin and expected_output, and encodes the texts
    and message as Ruby's encode64 does: a newline every 60 characters and at the end."""
    source = "import sys\nprint(input() * 30)\nsys.exit(1)"
    with embedded_server.client() as client:
        answer = submit(
            client,
            "?wait=true&base64_encoded=true&fields=token,stdout,stdin,message,source_code",
            source_code=base64.b64encode(source.encode()).decode(),
            stdin=base64.b64encode("héllo".encode())
            .decode()
            .rstrip("="),  # Ruby: no padding needed
        )
        plain = client.get(f"/judge0/submissions/{answer['token']}?fields=stdout").json()
    stdout = answer["stdout"]
    assert all(len(line) == 60 for line in stdout.split("\n")[:-2]) and stdout.endswith("\n")
    assert base64.b64decode(stdout).decode() == "héllo" * 30 + "\n"
    assert base64.b64decode(answer["stdin"]).decode() == "héllo"
    assert base64.b64decode(answer["source_code"]).decode() == source
    assert base64.b64decode(answer["message"]).decode() == "Exited with error status 1"
    assert plain == {"stdout": "héllo" * 30 + "\n"}


@pytest.mark.parametrize(
    ("stdout", "expected", "status"),
    [
        ("4\n", "4", 3),
        ("4  \n\n\n", "4\n", 3),  # trailing whitespace of lines and of the end is ignored
        ("a \nb\n", "a\nb", 3),
        ("4\n", "5", 4),
        ("", "", 4),  # Judge0: an empty stdout is null, and null is not ""
        ("", None, 3),
    ],
)
def test_expected_output_gives_accepted_or_wrong_answer(
    embedded_server: LiveServer, stdout: str, expected: str | None, status: int
) -> None:
    """expected_output is compared as Judge0 compares it."""
    fields = {} if expected is None else {"expected_output": expected}
    with embedded_server.client() as client:
        answer = submit(client, source_code=f"print({stdout!r}, end='')", **fields)
    assert answer["status"]["id"] == status


def test_batch_create_and_get(embedded_server: LiveServer) -> None:
    """A batch creates the valid items and answers each invalid one's errors; a batch get
    answers every token in order, null for unknown ones."""
    with embedded_server.client() as client:
        created = client.post(
            "/judge0/submissions/batch",
            json={
                "submissions": [
                    {"language_id": 71, "source_code": "print(1)"},
                    {"language_id": 70, "source_code": "print(2)"},
                    {"language_id": 63, "source_code": "console.log(3)"},
                ]
            },
        )
        assert created.status_code == 201
        first, invalid, third = created.json()
        assert invalid == {"language_id": ["language with id 70 doesn't exist"]}
        tokens = [first["token"], str(uuid.uuid4()), third["token"], "not-a-token"]
        for token in (first["token"], third["token"]):
            poll(client, token)
        got = client.get(
            "/judge0/submissions/batch", params={"tokens": ",".join(tokens), "fields": "stdout"}
        )
        by_header = client.get("/judge0/submissions/batch", headers={"tokens": third["token"]})
    assert got.json() == {"submissions": [{"stdout": "1\n"}, None, {"stdout": "3\n"}, None]}
    assert by_header.json()["submissions"][0]["status"]["id"] == 3


def test_batch_limits(embedded_server: LiveServer) -> None:
    """A batch holds 1 to 20 submissions, and one with no valid item is a 422."""
    item = {"language_id": 71, "source_code": "print(1)"}
    with embedded_server.client() as client:
        empty = client.post("/judge0/submissions/batch", json={"submissions": []})
        big = client.post("/judge0/submissions/batch", json={"submissions": [item] * 21})
        none_valid = client.post("/judge0/submissions/batch", json={"submissions": [{}]})
        too_many = client.get("/judge0/submissions/batch", params={"tokens": ",".join("a" * 21)})
    assert empty.status_code == 400
    assert empty.json() == {"error": "there should be at least one submission in a batch"}
    assert big.status_code == too_many.status_code == 400
    assert big.json() == {
        "error": "number of submissions in a batch should be less than or equal to 20"
    }
    assert none_valid.status_code == 422
    assert none_valid.json()[0]["source_code"] == ["can't be blank"]


def test_command_line_arguments_are_split_like_bash(embedded_server: LiveServer) -> None:
    """Arguments are shell words, less the characters Judge0 strips before bash reads them."""
    with embedded_server.client() as client:
        answer = submit(
            client,
            source_code="import sys; print(sys.argv[1:])",
            command_line_arguments="one 'two three' \"four\" $five;",
        )
    assert answer["stdout"] == "['one', 'two three', 'four', 'five']\n"


def test_limits_apply_and_are_checked_against_livecodes(embedded_server: LiveServer) -> None:
    """A wall time limit ends the run as Time Limit Exceeded; limits above livecode's are
    Judge0's 422, in its words."""
    memory_kb = embedded_server.settings.memory_mb * 1024
    with embedded_server.client() as client:
        slow = submit(client, source_code="while True: pass", wall_time_limit=1)
        above = client.post(
            "/judge0/submissions",
            json={
                "language_id": 71,
                "source_code": HELLO,
                "memory_limit": memory_kb + 1,
                "cpu_time_limit": "abc",
                "max_processes_and_or_threads": 0,
                "number_of_runs": 2,
            },
        )
    assert slow["status"] == {"id": 5, "description": "Time Limit Exceeded"}
    assert slow["message"] == "Time limit exceeded" and slow["stderr"] is None
    assert above.status_code == 422
    assert above.json() == {
        "memory_limit": [f"must be less than or equal to {memory_kb}"],
        "cpu_time_limit": ["is not a number"],
        "max_processes_and_or_threads": ["must be greater than 0"],
        "number_of_runs": ["must be less than or equal to 1"],
    }


def test_a_smaller_file_size_limit_is_runtime_error_sigxfsz(embedded_server: LiveServer) -> None:
    """max_file_size (KB) is the output limit per stream: past it, status 8."""
    with embedded_server.client() as client:
        answer = submit(
            client, "?wait=true&fields=status,exit_signal,stdout", source_code="print('x' * 5000)",
            max_file_size=1,
        )  # fmt: skip
    assert answer["status"] == {"id": 8, "description": "Runtime Error (SIGXFSZ)"}
    assert answer["exit_signal"] == 25 and len(answer["stdout"]) == 1024


def test_runtime_errors_by_exit_code_and_by_signal(embedded_server: LiveServer) -> None:
    """An exit code is NZEC (11); a signal picks Judge0's status by its number."""
    with embedded_server.client() as client:
        nzec = submit(client, "?wait=true&fields=*", source_code="raise SystemExit(3)")
        segv = submit(
            client,
            "?wait=true&fields=*",
            source_code="import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)",
        )
        syntax = submit(client, source_code="print(")
    assert (nzec["status_id"], nzec["exit_code"], nzec["exit_signal"]) == (11, 3, None)
    assert nzec["message"] == "Exited with error status 3"
    assert segv["status"] == {"id": 7, "description": "Runtime Error (SIGSEGV)"}
    assert (segv["exit_code"], segv["exit_signal"]) == (0, 11)
    assert segv["message"] == "Caught fatal signal 11"
    # Python has no compile step in Judge0 either: a syntax error is NZEC, told on stderr.
    assert syntax["status"]["id"] == 11 and "SyntaxError" in syntax["stderr"]


def test_cpp_compile_error_and_success(embedded_server: LiveServer) -> None:
    """C++ (52) compiles: a compile error is status 6 with compile_output and null run
    fields; a program reads its stdin and arguments."""
    program = (
        "#include <iostream>\nint main(int argc, char** argv) {"
        " int n; std::cin >> n; std::cout << n * 2 << ' ' << argv[1] << std::endl; }"
    )
    with embedded_server.client() as client:
        failed = submit(client, "?wait=true&fields=*", language_id=52, source_code="int main( {")
        ran = submit(
            client, language_id=54, source_code=program, stdin="21", command_line_arguments="x"
        )
    assert failed["status"] == {"id": 6, "description": "Compilation Error"}
    assert "error" in failed["compile_output"]
    for name in ("stdout", "stderr", "time", "wall_time", "memory", "exit_code", "message"):
        assert failed[name] is None, name
    assert ran["status"]["id"] == 3 and ran["stdout"] == "42 x\n"


def test_redirect_stderr_to_stdout(embedded_server: LiveServer) -> None:
    """redirect_stderr_to_stdout merges both streams, in the order they were written."""
    # Apart in time: each stream's pipe is read on its own, so only time orders them.
    source = (
        "import sys, time\nprint('a')\ntime.sleep(0.1)\nprint('b', file=sys.stderr)\n"
        "time.sleep(0.1)\nprint('c')"
    )
    with embedded_server.client() as client:
        answer = submit(client, source_code=source, redirect_stderr_to_stdout=True)
    assert answer["stdout"] == "a\nb\nc\n" and answer["stderr"] is None


def test_not_allowed_features_answer_in_judge0s_words(embedded_server: LiveServer) -> None:
    """Callbacks, additional files, the network, compiler options and per-process limits are
    refused with Judge0's own messages; nothing runs."""
    with embedded_server.client() as client:
        response = client.post(
            "/judge0/submissions",
            json={
                "language_id": 54,
                "source_code": "int main() {}",
                "callback_url": "http://127.0.0.1:9/",
                "additional_files": "UEsFBgAAAAAAAAAAAAAAAAAAAAAAAA==",
                "enable_network": True,
                "compiler_options": "-O3",
                "enable_per_process_and_thread_time_limit": True,
            },
        )
        harmless = submit(client, "", source_code=HELLO, enable_network=False, callback_url="")
    assert response.status_code == 422
    assert response.json() == {
        "enable_per_process_and_thread_time_limit": ["this option cannot be enabled"],
        "compiler_options": ["setting compiler options is not allowed"],
        "callback_url": ["setting callback is not allowed"],
        "additional_files": ["setting additional files is not allowed"],
        "enable_network": ["enabling network is not allowed"],
    }
    assert "token" in harmless


def test_bad_requests(embedded_server: LiveServer) -> None:
    """Missing fields, unknown languages, unknown tokens and paths, broken JSON: Judge0's
    bodies and statuses."""
    with embedded_server.client() as client:
        blank = client.post("/judge0/submissions", json={"source_code": "  "})
        python2 = client.post("/judge0/submissions", json={"source_code": "1", "language_id": 70})
        unknown = client.get(f"/judge0/submissions/{uuid.uuid4()}")
        not_a_token = client.get("/judge0/submissions/123")
        nowhere = client.delete("/judge0/nowhere")
        broken = client.post(
            "/judge0/submissions", content=b"{", headers={"content-type": "application/json"}
        )
        index = client.get("/judge0/submissions")
    assert blank.status_code == 422
    assert blank.json() == {
        "source_code": ["can't be blank"],
        "language_id": ["can't be blank", "language with id  doesn't exist"],
    }
    assert python2.json() == {"language_id": ["language with id 70 doesn't exist"]}
    for response in (unknown, not_a_token, nowhere):
        assert response.status_code == 404
        assert response.json() == {"status": 404, "error": "Not Found"}
    assert broken.status_code == 400 and broken.json() == {"status": 400, "error": "Bad Request"}
    assert index.status_code == 403 and index.content == b""


def test_forms_and_query_parameters_are_params_too(embedded_server: LiveServer) -> None:
    """As in Rails, a form body or the query string carries a submission's fields."""
    with embedded_server.client() as client:
        form = client.post(
            "/judge0/submissions?wait=true", data={"language_id": "71", "source_code": HELLO}
        )
        query = client.post(
            "/judge0/submissions/",  # a trailing slash routes as without one
            params={"wait": "true", "language_id": "63", "source_code": "console.log(1)"},
        )
    assert form.status_code == 201 and form.json()["stdout"] == "hello\n"
    assert query.status_code == 201 and query.json()["stdout"] == "1\n"


def test_auth_headers_are_accepted(embedded_server: LiveServer) -> None:
    """X-Auth-Token (header or query) and Bearer are accepted; no keys exist to check yet."""
    with embedded_server.client() as client:
        for headers, params in (
            ({"X-Auth-Token": "k"}, {}),
            ({"Authorization": "Bearer k"}, {}),
            ({}, {"X-Auth-Token": "k"}),
        ):
            assert (
                client.get("/judge0/languages", headers=headers, params=params).status_code == 200
            )
        assert client.post("/judge0/authenticate", headers={"X-Auth-Token": "k"}).status_code == 200
        assert client.post("/judge0/authorize").status_code == 403


def test_any_execution_is_a_submission(embedded_server: LiveServer) -> None:
    """An execution made through livecode's own API reads as a submission with its limits."""
    with embedded_server.client() as client:
        queued = client.post(
            "/executions",
            json={"language": "javascript", "source_code": "console.log(1)", "args": ["a b"]},
        ).json()
        wait_final(client, queued["execution_id"])
        answer = client.get(f"/judge0/submissions/{queued['execution_id']}?fields=*").json()
    assert answer["language_id"] == 63 and answer["stdout"] == "1\n"
    assert answer["command_line_arguments"] == "'a b'"
    assert answer["memory_limit"] == embedded_server.settings.memory_mb * 1024


def test_prefix_and_apis_are_settings(tmp_path_factory: pytest.TempPathFactory) -> None:
    """LIVECODE_JUDGE0_PREFIX moves Judge0; LIVECODE_COMPAT=none mounts neither API."""
    moved = embedded_settings(tmp_path_factory, judge0_prefix="/j0", compat=("judge0",))
    with run_server(moved) as server, server.client() as client:
        assert client.get("/j0/about").json()["version"] == "1.13.1"
        assert client.get("/judge0/about").status_code == 404
        assert client.get("/api/v2/runtimes").status_code == 404
    none = embedded_settings(tmp_path_factory, compat=("none",))
    with run_server(none) as server, server.client() as client:
        assert client.get("/j0/about").status_code == 404
        assert client.get("/api/v2/runtimes").status_code == 404


def _decimal(milliseconds: int) -> str:
    text = f"{milliseconds / 1000:.3f}".rstrip("0")
    return text + "0" if text.endswith(".") else text
