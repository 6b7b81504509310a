"""Logs: LIVECODE_LOG_FORMAT=json gives one JSON object a line, each line about an execution
carrying its execution_id."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from pathlib import Path

import httpx

from livecode import logs
from tests.utils import REPO, TIMEOUT, free_port, livecode_env, wait_until_http_ok


def test_lines_inside_about_carry_its_ids() -> None:
    """Any module's line logged inside about() carries the ids, as JSON fields."""
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    handler = Keep()
    handler.addFilter(logs._AboutFilter())
    handler.setFormatter(logs.JSONFormatter())
    logger = logging.getLogger("livecode.test_logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with logs.about(execution_id="e1", session_id="s1"):
            logger.info("inside %d", 1)
        logger.info("outside")
    finally:
        logger.removeHandler(handler)
    inside, outside = (json.loads(line) for line in records)
    assert inside["message"] == "inside 1"
    assert (inside["execution_id"], inside["session_id"]) == ("e1", "s1")
    assert "execution_id" not in outside and outside["level"] == "INFO"


def test_a_server_logs_json_lines_with_the_execution_id(tmp_path: Path) -> None:
    """`livecode serve` with LIVECODE_LOG_FORMAT=json: every line on stderr is a JSON object,
    and the line saying a run finished names its execution_id."""
    port = free_port()
    env = livecode_env(
        {
            "LIVECODE_DATABASE_URL": f"sqlite:///{tmp_path / 'livecode.db'}",
            "LIVECODE_PORT": str(port),
            "LIVECODE_LOG_FORMAT": "json",
        }
    )
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "livecode", "serve"],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until_http_ok(f"{url}/health", process)
        execution_id = httpx.post(
            f"{url}/executions?wait=true",
            json={"language": "python", "source_code": "print(1)"},
            timeout=TIMEOUT,
        ).json()["execution_id"]
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=TIMEOUT)
    lines = [json.loads(line) for line in stderr.splitlines() if line.strip()]
    finished = [line for line in lines if f"execution {execution_id} finished" in line["message"]]
    assert finished and all(line["execution_id"] == execution_id for line in finished)
    assert {line["logger"] for line in lines} >= {"livecode.app", "uvicorn.error"}


def test_lines_go_to_the_stderr_of_the_moment_and_other_handlers_stay() -> None:
    """A daemon thread that logs after stderr was swapped (and the old one closed) writes to
    the new one; configure() leaves handlers that are not its own in place."""

    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    kept: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            kept.append(record)

    other = Keep()
    root.addHandler(other)
    first, second = io.StringIO(), io.StringIO()
    saved_stderr = sys.stderr
    try:
        sys.stderr = first
        logs.configure("info", "text")
        logs.configure("info", "text")  # a second server in the process: still one line each
        logging.getLogger("livecode.test_logs").info("one")
        first.close()
        sys.stderr = second
        logging.getLogger("livecode.test_logs").info("two")
    finally:
        sys.stderr = saved_stderr
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved_handlers:
            root.addHandler(handler)
        root.setLevel(saved_level)
    assert second.getvalue().count("two") == 1 and "one" not in second.getvalue()
    assert [record.getMessage() for record in kept] == ["one", "two"]
