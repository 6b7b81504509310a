"""The official Judge0 Python SDK (PyPI `judge0`) against /judge0, unchanged."""

from __future__ import annotations

from collections.abc import Iterator

import judge0
import pytest

from tests.utils import LiveServer

ECHO_TWICE = {
    judge0.PYTHON: "n = int(input())\nprint(n * 2)",
    judge0.JAVASCRIPT: (
        "const n = Number(require('fs').readFileSync(0, 'utf8'));\nconsole.log(n * 2);"
    ),
    judge0.CPP: "#include <iostream>\nint main() { int n; std::cin >> n; std::cout << n * 2 << '\\n'; }",
}


@pytest.fixture
def client(embedded_server: LiveServer) -> judge0.Client:
    """The SDK's self-hosted client, with Judge0's auth header (accepted, not checked yet)."""
    return judge0.Client(f"{embedded_server.url}/judge0", headers={"X-Auth-Token": "key"})


def test_client_starts_and_finds_its_ids(client: judge0.Client) -> None:
    """The constructor reads /languages and /config_info; aliases resolve through /about."""
    assert client.version == "1.13.1"
    assert client.config.max_submission_batch_size == 20
    assert [client.get_language_id(alias) for alias in ECHO_TWICE] == [71, 63, 52]
    assert all(client.is_language_supported(alias) for alias in ECHO_TWICE)


@pytest.mark.parametrize("language", list(ECHO_TWICE), ids=["python", "javascript", "c++"])
def test_run_each_language(client: judge0.Client, language: judge0.LanguageAlias) -> None:
    """judge0.run creates a submission (base64), polls it with fields=*, and decodes it."""
    submission = judge0.run(
        client=client, source_code=ECHO_TWICE[language], language=language, stdin="21"
    )
    assert submission.status == judge0.Status.ACCEPTED
    assert submission.stdout == "42\n"
    assert submission.time is not None and submission.memory is not None
    assert submission.created_at is not None and submission.finished_at is not None


def test_test_cases_go_through_a_batch(server: LiveServer) -> None:
    """test_cases become a batch of submissions; each is judged against its expected output
    (embedded and distributed: the submission's fields are stored with the execution)."""
    client = judge0.Client(f"{server.url}/judge0")
    submissions = judge0.run(
        client=client,
        source_code=ECHO_TWICE[judge0.PYTHON],
        language=judge0.PYTHON,
        test_cases=[("1", "2"), ("2", "5"), judge0.TestCase("10", "20")],
    )
    assert [submission.status for submission in submissions] == [
        judge0.Status.ACCEPTED,
        judge0.Status.WRONG_ANSWER,
        judge0.Status.ACCEPTED,
    ]
    assert [submission.stdout for submission in submissions] == ["2\n", "4\n", "20\n"]


def test_unicode_and_long_output_survive_base64(client: judge0.Client) -> None:
    """Output longer than a base64 line, and not ASCII, comes back as the program wrote it."""
    source = "import sys\nprint('żółw 🐢 ' * 100)\nprint('warn', file=sys.stderr)\nsys.exit(2)"
    submission = judge0.run(client=client, source_code=source, language=judge0.PYTHON)
    assert submission.stdout == "żółw 🐢 " * 100 + "\n"
    assert submission.stderr == "warn\n"
    assert submission.status == judge0.Status.RUNTIME_ERROR_NZEC
    assert submission.exit_code == 2


def test_compile_errors_and_time_limits(client: judge0.Client) -> None:
    """A compile error and a time limit read as the SDK's statuses."""
    broken = judge0.run(client=client, source_code="int main( {", language=judge0.CPP)
    slow = judge0.run(
        client=client, source_code="while True: pass", language=judge0.PYTHON, wall_time_limit=1
    )
    assert broken.status == judge0.Status.COMPILATION_ERROR
    assert broken.compile_output and broken.stdout is None
    assert slow.status == judge0.Status.TIME_LIMIT_EXCEEDED


@pytest.fixture
def environment_client(
    embedded_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """The SDK's other self-hosted set-up: both environment variables, and no client passed."""
    monkeypatch.setenv("JUDGE0_CE_ENDPOINT", f"{embedded_server.url}/judge0")
    monkeypatch.setenv("JUDGE0_CE_AUTH_HEADERS", '{"Authorization": "Bearer key"}')
    monkeypatch.setattr(judge0, "JUDGE0_IMPLICIT_CE_CLIENT", None)
    yield
    monkeypatch.setattr(judge0, "JUDGE0_IMPLICIT_CE_CLIENT", None)


@pytest.mark.usefixtures("environment_client")
def test_client_from_the_environment() -> None:
    """judge0.run(source_code=..., language=...) finds livecode through the environment."""
    submission = judge0.run(source_code="print('from env')", language=judge0.PYTHON)
    assert submission.stdout == "from env\n"
