"""Fixtures for runners tests: one real Sandbox per session, hostile programs, host checks."""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from runners import Limits, Program, Result, Sandbox, SandboxConfig, Stream, WarmConfig
from tests.utils import TIMEOUT_SCALE

# set before any sandbox exists: a program must never be able to read it
SECRET = "livecode-test-secret-5f2d9c"
os.environ["LIVECODE_TEST_SECRET"] = SECRET

PROGRAMS = pathlib.Path(__file__).parent / "programs"
EXTENSIONS = {"python": "py", "javascript": "js", "c++": "cpp"}
LANGUAGES = tuple(EXTENSIONS)
FAST = Limits(wall_timeout_s=3 * TIMEOUT_SCALE, output_limit_bytes=16384, memory_mb=128)


def _missing(reason: str) -> pytest.MarkDecorator:
    # a missing sandbox skips locally and fails under CI
    return pytest.mark.skipif(not os.environ.get("CI"), reason=reason)


requires_bwrap = (
    _missing("bwrap is not installed")
    if shutil.which("bwrap", path="/usr/bin:/bin:/usr/local/bin") is None
    else pytest.mark.skipif(False, reason="bwrap is installed")
)


@contextmanager
def private_sandbox(slots: int, warm: WarmConfig | None = None) -> Iterator[Sandbox]:
    """A sandbox on a private work root (other processes share the default one), traversable
    by slot uids, removed afterwards."""
    work_root = tempfile.mkdtemp(dir="/var/tmp", prefix="livecode-test-")
    try:
        config = SandboxConfig(slots=slots, work_root=work_root, warm=warm or WarmConfig())
        with Sandbox(config) as sandbox:
            yield sandbox
    finally:
        shutil.rmtree(work_root, ignore_errors=True)


# Every test of the sandbox runs twice: Python forked from the warm interpreter, and cold.
@pytest.fixture(scope="session", params=["warm", "cold"])
def sandbox(request: pytest.FixtureRequest) -> Iterator[Sandbox]:
    with private_sandbox(slots=2, warm=WarmConfig(enabled=request.param == "warm")) as opened:
        if request.param == "warm" and os.geteuid() == 0:
            assert opened.measures()["warm_python"], "warm start should work here"
        yield opened


def program(name: str, language: str, **kwargs: object) -> Program:
    """A hostile or edge program from tests/runners/programs/."""
    source = (PROGRAMS / f"{name}.{EXTENSIONS[language]}").read_text()
    return Program(language, source, **kwargs)  # type: ignore[arg-type]


class Chunks:
    """Collects on_output calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[Stream, str]] = []

    def __call__(self, stream: Stream, text: str) -> None:
        self.calls.append((stream, text))

    def text(self, stream: Stream) -> str:
        return "".join(text for s, text in self.calls if s is stream)


def run(sandbox: Sandbox, prog: Program, limits: Limits = FAST) -> tuple[Result, Chunks]:
    """Run and check the chunk contract: joined chunks equal the result's text."""
    chunks = Chunks()
    result = sandbox.run(prog, limits, on_output=chunks)
    assert chunks.text(Stream.STDOUT) == result.stdout
    assert chunks.text(Stream.STDERR) == result.stderr
    assert chunks.text(Stream.COMPILE) == result.compile_output
    assert all(text for _stream, text in chunks.calls)
    assert_nothing_left(sandbox)
    return result, chunks


def slot_processes(sandbox: Sandbox) -> list[str]:
    """Host processes running as any slot uid (the spawners run as root, so none expected), or
    living in a warm run's PID namespace."""
    return _cold_processes(sandbox) + run_processes(sandbox)


def _cold_processes(sandbox: Sandbox) -> list[str]:
    uids = {str(uid) for uid in sandbox.measures()["slot_uids"] if uid is not None}
    found = []
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if set(fields.get("Uid", "").split()) & uids and "Z" not in fields.get("State", ""):
            found.append(f"{entry.name} {fields.get('Name', '').strip()}")
    return found


def run_processes(sandbox: Sandbox) -> list[str]:
    """Host processes of a warm uid in a run's PID namespace (three levels deep: the host's,
    the warm interpreter's bwrap's, the run's): only the interpreter and its bwrap may live on."""
    uids = {str(uid) for uid in sandbox.measures()["warm_uids"]}
    found = []
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        is_in_run = len(fields.get("NSpid", "").split()) > 2
        if set(fields.get("Uid", "").split()) & uids and is_in_run:
            if "Z" not in fields.get("State", ""):
                found.append(f"{entry.name} {fields.get('Name', '').strip()}")
    return found


def assert_nothing_left(sandbox: Sandbox) -> None:
    """No process of a slot uid (or of a warm run) remains on the host, and no run directory
    either."""
    assert slot_processes(sandbox) == []
    scratch = pathlib.Path(sandbox.work_root) / "scratch"
    assert list(scratch.iterdir()) == []
