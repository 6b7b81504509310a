"""Piston v2 at /api/v2, as raw clients use it (httpx)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.utils import LiveServer

CPP_ECHO = (
    "#include <iostream>\n#include <string>\nint main(int argc, char** argv) {"
    " std::string s; std::getline(std::cin, s); std::cout << s << argv[1] << std::endl;"
    ' std::cerr << "e" << std::endl; return 3; }'
)


def execute(client: httpx.Client, path: str = "/api/v2/execute", **body: Any) -> httpx.Response:
    """POST a job, its body as JSON text under whatever Content-Type is given (default JSON)."""
    headers = {"content-type": body.pop("content_type", "application/json")}
    return client.post(path, content=json.dumps(body), headers=headers)


def job(source: str, language: str = "python", **fields: Any) -> dict[str, Any]:
    return {"language": language, "version": "*", "files": [{"content": source}], **fields}


def test_runtimes_have_real_versions_and_pistons_aliases(embedded_server: LiveServer) -> None:
    """Each language livecode runs, under Piston's name, aliases and package."""
    with embedded_server.client() as client:
        runtimes = {r["language"]: r for r in client.get("/api/v2/runtimes").json()}
        versions = {item["id"]: item["version"] for item in client.get("/languages").json()}
        emkc = client.get("/api/v2/piston/runtimes").json()
    assert set(runtimes) == {"python", "javascript", "c++"}
    major, minor = versions["python"].split(".")[:2]
    assert runtimes["python"] == {
        "language": "python",
        "version": versions["python"],
        "aliases": ["py", "py3", "python3", f"python{major}.{minor}"],
    }
    assert runtimes["javascript"]["runtime"] == "node"
    assert runtimes["javascript"]["aliases"] == ["node-javascript", "node-js", "javascript", "js"]
    assert runtimes["c++"]["runtime"] == "gcc" and runtimes["c++"]["aliases"] == ["cpp", "g++"]
    assert emkc == list(runtimes.values())


def test_execute_python_with_stdin_args_and_any_content_type(embedded_server: LiveServer) -> None:
    """A job runs with its args and stdin (given a trailing newline), whatever the body's
    Content-Type; the stage has Piston's keys and units."""
    source = "import sys\nprint(sys.argv[1:], repr(sys.stdin.read()))\nprint('w', file=sys.stderr)"
    with embedded_server.client() as client:
        answer = execute(
            client,
            **job(
                source, "py", args=["1", "2"], stdin="x", content_type="text/plain;charset=UTF-8"
            ),
        )
    assert answer.status_code == 200
    body = answer.json()
    assert list(body) == ["run", "language", "version"]
    assert body["language"] == "python"
    run = body["run"]
    assert list(run) == [
        "signal", "stdout", "stderr", "code", "output", "memory", "message", "status",
        "cpu_time", "wall_time",
    ]  # fmt: skip
    assert run["stdout"] == "['1', '2'] 'x\\n'\n" and run["stderr"] == "w\n"
    assert run["output"] == run["stdout"] + run["stderr"]
    assert (run["code"], run["signal"], run["status"], run["message"]) == (0, None, None, None)
    assert run["memory"] > 1 << 20 and run["wall_time"] >= run["cpu_time"] >= 0


def test_execute_cpp_has_a_compile_stage(embedded_server: LiveServer) -> None:
    """A compiled runtime answers a compile stage, then the run's, with its exit code."""
    with embedded_server.client() as client:
        body = execute(client, **job(CPP_ECHO, "cpp", stdin="in", args=["A"])).json()
    assert list(body) == ["compile", "run", "language", "version"]
    assert body["compile"]["code"] == 0 and body["compile"]["status"] is None
    run = body["run"]
    assert (run["stdout"], run["stderr"]) == ("inA\n", "e\n")
    assert (run["code"], run["status"], run["message"]) == (3, "RE", "Exited with error status 3")


def test_a_failed_compile_is_also_the_run(embedded_server: LiveServer) -> None:
    """Piston: a compile that fails skips the run, and `run` repeats the compile stage."""
    with embedded_server.client() as client:
        body = execute(client, **job("int main( {", "c++")).json()
    assert body["run"] == body["compile"]
    assert body["compile"]["code"] == 1 and body["compile"]["status"] == "RE"
    assert "error" in body["compile"]["stderr"] and body["compile"]["stdout"] == ""


def test_limits(embedded_server: LiveServer) -> None:
    """run_timeout ends the run (TO, SIGKILL); -1 means livecode's limit; a limit above
    livecode's is Piston's 400."""
    settings = embedded_server.settings
    with embedded_server.client() as client:
        slow = execute(client, **job("while True: pass", run_timeout=500, run_memory_limit=-1))
        above = execute(client, **job("print(1)", run_timeout=settings.wall_timeout_s * 1000 + 1))
        typed = execute(client, **job("print(1)", run_memory_limit="1"))
    run = slow.json()["run"]
    assert (run["status"], run["signal"], run["code"]) == ("TO", "SIGKILL", None)
    assert run["stderr"] == "" and run["message"] == "Time limit exceeded"
    limit = int(settings.wall_timeout_s * 1000)
    assert above.status_code == 400
    assert above.json() == {"message": f"run_timeout cannot exceed the configured limit of {limit}"}
    assert typed.json() == {"message": "If specified, run_memory_limit must be a number"}


def test_signals_and_output_limits(embedded_server: LiveServer) -> None:
    """A signal is SG with its name and no code; stderr past livecode's output limit is EL."""
    source = "import os, signal\nprint('before', flush=True)\nos.kill(os.getpid(), signal.SIGABRT)"
    limit = embedded_server.settings.output_limit_bytes
    with embedded_server.client() as client:
        run = execute(client, **job(source)).json()["run"]
        flood = execute(client, **job(f"import sys\nsys.stderr.write('x' * {2 * limit})")).json()
    assert (run["code"], run["signal"], run["status"]) == (None, "SIGABRT", "SG")
    assert run["stdout"] == "before\n" and run["message"] == "Caught fatal signal 6"
    flooded = flood["run"]
    assert (flooded["status"], flooded["signal"]) == ("EL", "SIGKILL")
    assert flooded["message"] == "stderr length exceeded" and len(flooded["stderr"]) == limit


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "language is required as a string"),
        ({"language": "python"}, "version is required as a string"),
        ({"language": "python", "version": "*"}, "files is required as an array"),
        (
            {"language": "python", "version": "*", "files": [{}]},
            "files[0].content is required as a string",
        ),
        ({"language": "cobol", "version": "*", "files": []}, "cobol-* runtime is unknown"),
        ({"language": "python", "version": "2.x", "files": []}, "python-2.x runtime is unknown"),
        (
            {
                "language": "python",
                "version": "3",
                "files": [{"content": "", "encoding": "base64"}],
            },
            "files must include at least one utf8 encoded file",
        ),
        (
            {"language": "python", "version": "3", "files": [{"content": ""}, {"content": ""}]},
            "livecode runs one file: files must hold exactly one, utf8 encoded",
        ),
        (
            {"language": "python", "version": "3", "files": [{"content": "\x00"}]},
            "files[0].content must be Unicode text without NUL characters",
        ),
        (
            {"language": "python", "version": "3", "files": [{"content": ""}], "args": ["\x00"]},
            "args.0: must not contain NUL characters",
        ),
    ],
)
def test_bad_jobs_are_pistons_400s(
    embedded_server: LiveServer, body: dict[str, Any], message: str
) -> None:
    """Each check answers Piston's message, in Piston's order."""
    with embedded_server.client() as client:
        answer = execute(client, **body)
    assert answer.status_code == 400 and answer.json() == {"message": message}


def test_versions_are_semver_ranges(embedded_server: LiveServer) -> None:
    """A version selector picks the runtime as semver does."""
    with embedded_server.client() as client:
        version = client.get("/api/v2/runtimes").json()[0]["version"]
        major = version.split(".")[0]
        for selector in (
            version,
            f"{major}.x",
            f">={major}",
            f"^{major}.0.0",
            "*",
            f"<{version} || {version}",
        ):
            answer = execute(client, **{**job("print(1)"), "version": selector})
            assert answer.json().get("version") == version, (selector, answer.text)


def test_packages_are_built_in(embedded_server: LiveServer) -> None:
    """Packages list the built-in runtimes as installed; they cannot be installed or removed."""
    with embedded_server.client() as client:
        packages = client.get("/api/v2/packages").json()
        python = next(p for p in packages if p["language"] == "python")
        install = client.post("/api/v2/packages", json={"language": "python", "version": "*"})
        remove = client.request(
            "DELETE", "/api/v2/packages", json={"language": "gcc", "version": "*"}
        )
        unknown = client.post("/api/v2/packages", json={"language": "rust", "version": "1.0"})
        nowhere = client.get("/api/v2/nowhere")
    assert {p["language"] for p in packages} == {"python", "node", "gcc"}
    assert python["installed"] is True
    assert install.status_code == remove.status_code == 400
    assert unknown.status_code == 404
    assert unknown.json() == {"message": "Requested package rust-1.0 does not exist"}
    assert nowhere.status_code == 404 and nowhere.json() == {"message": "Not Found"}


def test_emkc_paths_execute_too(embedded_server: LiveServer) -> None:
    """/api/v2/piston/execute is /api/v2/execute, for clients left on emkc.org's paths."""
    with embedded_server.client() as client:
        answer = execute(client, "/api/v2/piston/execute", **job("console.log(1 + 1)", "js"))
    assert answer.json()["run"]["stdout"] == "2\n"
    assert answer.json()["language"] == "javascript"
