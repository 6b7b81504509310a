"""Test cases: compiled once, each case in a fresh sandbox with its own result and verdict."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest

from runners import (
    Case,
    Control,
    ExecutionStatus,
    Limits,
    Program,
    Reason,
    Result,
    RunnerError,
    Sandbox,
    Stream,
    Verdict,
)
from runners.cases import judge
from tests.runners.conftest import (
    FAST,
    LANGUAGES,
    assert_nothing_left,
    private_sandbox,
    requires_bwrap,
    slot_processes,
)
from tests.utils import TIMEOUT, wait_until

SUM = {
    "python": "import sys\na, b = map(int, sys.stdin.read().split())\n"
    "print(a + b, *sys.argv[1:])\nprint('case', a, file=sys.stderr)",
    "javascript": "const [a, b] = require('fs').readFileSync(0, 'utf8').trim().split(/\\s+/)"
    ".map(Number);\nconsole.log([a + b, ...process.argv.slice(2)].join(' '));\n"
    "console.error('case', a);",
    "c++": "#include <iostream>\nint main(int argc, char** argv) { long a, b; std::cin >> a >> b;\n"
    "  std::cout << a + b; for (int i = 1; i < argc; i++) std::cout << ' ' << argv[i];\n"
    "  std::cout << '\\n'; std::cerr << \"case \" << a << '\\n'; }",
}
CASES = (
    Case(stdin=b"1 2", expected_output="3"),  # accepted: the newline does not matter
    Case(stdin=b"2 2", args=("x",), expected_output="4 x  \n\n"),  # nor trailing whitespace
    Case(stdin=b"3 3", expected_output="7"),  # wrong answer
    Case(stdin=b"4 4"),  # nothing expected: no verdict
)


class CaseChunks:
    """Collects on_output (compile) and on_case_output calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[int | None, Stream, str]] = []

    def compile(self, stream: Stream, text: str) -> None:
        self.calls.append((None, stream, text))

    def case(self, index: int, stream: Stream, text: str) -> None:
        self.calls.append((index, stream, text))

    def text(self, case: int | None, stream: Stream) -> str:
        return "".join(text for c, s, text in self.calls if c == case and s is stream)


def run_cases(
    sandbox: Sandbox, prog: Program, limits: Limits = FAST, control: Control | None = None
) -> tuple[Result, CaseChunks]:
    """Run with cases and check the chunk contract per case and for the whole run."""
    chunks = CaseChunks()
    result = sandbox.run(prog, limits, chunks.compile, control, on_case_output=chunks.case)
    assert len(result.cases) == len(prog.cases)
    for index, case in enumerate(result.cases):
        assert chunks.text(index, Stream.STDOUT) == case.stdout
        assert chunks.text(index, Stream.STDERR) == case.stderr
        assert case.compile_output == "" and case.cases == ()
    assert chunks.text(None, Stream.COMPILE) == result.compile_output
    assert result.stdout == "".join(case.stdout for case in result.cases)
    assert result.stderr == "".join(case.stderr for case in result.cases)
    assert_nothing_left(sandbox)
    return result, chunks


@requires_bwrap
@pytest.mark.parametrize("language", LANGUAGES)
def test_each_case_has_its_output_and_verdict(sandbox: Sandbox, language: str) -> None:
    """In each language, every case runs with its stdin and args, and reports its own status,
    output, time, memory and (when it expects an output) its verdict."""
    prog = Program(language, SUM[language], cases=CASES)
    result, chunks = run_cases(sandbox, prog)
    assert [case.stdout for case in result.cases] == ["3\n", "4 x\n", "6\n", "8\n"]
    assert [case.stderr for case in result.cases] == [f"case {n}\n" for n in (1, 2, 3, 4)]
    assert [case.verdict for case in result.cases] == [
        Verdict.ACCEPTED,
        Verdict.ACCEPTED,
        Verdict.WRONG_ANSWER,
        None,
    ]
    for case in result.cases:
        assert (case.status, case.reason, case.exit_code) == (
            ExecutionStatus.COMPLETED,
            Reason.EXIT,
            0,
        )
        assert case.wall_time_ms >= 0 and case.cpu_time_ms is not None and case.memory_kb
    # a wrong answer is a verdict, not a failed run
    assert (result.status, result.reason, result.exit_code) == (
        ExecutionStatus.COMPLETED,
        Reason.EXIT,
        0,
    )
    assert result.wall_time_ms == sum(case.wall_time_ms for case in result.cases)


@requires_bwrap
def test_cpp_compiles_once_for_all_cases(sandbox: Sandbox) -> None:
    """A C++ program with cases is compiled once: its warning is said once, before case 0."""
    source = f"// {uuid.uuid4()}\n#warning checked once\n" + SUM["c++"]
    prog = Program("c++", source, cases=CASES * 3)
    result, chunks = run_cases(sandbox, prog)
    assert result.compile_output.count("warning: #warning checked once") == 1
    assert chunks.calls[0][:2] == (None, Stream.COMPILE)
    assert [case.status for case in result.cases] == [ExecutionStatus.COMPLETED] * 12


@requires_bwrap
def test_each_case_runs_in_a_fresh_sandbox(sandbox: Sandbox) -> None:
    """A file one case leaves in /tmp is not there for the next."""
    source = "import os\nprint(os.path.exists('/tmp/left'))\nopen('/tmp/left', 'w').close()"
    result, _ = run_cases(sandbox, Program("python", source, cases=(Case(), Case())))
    assert [case.stdout for case in result.cases] == ["False\n", "False\n"]


@requires_bwrap
def test_a_compile_error_runs_no_case_and_each_reports_it(sandbox: Sandbox) -> None:
    """A source that does not compile runs no case; every case says compile_error."""
    prog = Program("c++", f"// {uuid.uuid4()}\nint main() {{ nope }}", cases=CASES)
    result, chunks = run_cases(sandbox, prog)
    assert (result.status, result.reason) == (ExecutionStatus.FAILED, Reason.COMPILE_ERROR)
    assert "nope" in result.compile_output
    for case in result.cases:
        assert (case.status, case.reason) == (ExecutionStatus.FAILED, Reason.COMPILE_ERROR)
        assert case.message == "Compilation failed"
        assert (case.stdout, case.exit_code, case.verdict) == ("", None, None)
    assert [c for c, _s, _t in chunks.calls] == [None] * len(chunks.calls)


@requires_bwrap
def test_a_case_timing_out_does_not_stop_the_others(sandbox: Sandbox) -> None:
    """A case that loops times out alone; the cases after it still run and pass; the run says
    TIMEOUT, the status of its first case that did not complete."""
    source = "import sys\nn = int(sys.stdin.read())\nwhile n == 2: pass\nprint(n)"
    cases = tuple(Case(stdin=str(n).encode(), expected_output=str(n)) for n in (1, 2, 3))
    result, _ = run_cases(sandbox, Program("python", source, cases=cases), Limits(wall_timeout_s=1))
    statuses = [(case.status, case.reason, case.verdict) for case in result.cases]
    assert statuses == [
        (ExecutionStatus.COMPLETED, Reason.EXIT, Verdict.ACCEPTED),
        (ExecutionStatus.TIMEOUT, Reason.TIMEOUT, None),
        (ExecutionStatus.COMPLETED, Reason.EXIT, Verdict.ACCEPTED),
    ]
    assert (result.status, result.reason) == (ExecutionStatus.TIMEOUT, Reason.TIMEOUT)
    assert result.message == result.cases[1].message == "Execution exceeded 1 second timeout"


@requires_bwrap
def test_a_runtime_error_is_the_case_status_not_a_verdict(sandbox: Sandbox) -> None:
    """A case whose program fails reports runtime_error and its exit code, with no verdict."""
    source = "import sys\nprint('partial')\nsys.exit(int(sys.stdin.read()))"
    cases = (Case(stdin=b"0", expected_output="partial"), Case(stdin=b"3", expected_output="x"))
    result, _ = run_cases(sandbox, Program("python", source, cases=cases))
    assert [(c.status, c.exit_code, c.verdict) for c in result.cases] == [
        (ExecutionStatus.COMPLETED, 0, Verdict.ACCEPTED),
        (ExecutionStatus.FAILED, 3, None),
    ]
    assert (result.status, result.reason, result.exit_code) == (
        ExecutionStatus.FAILED,
        Reason.RUNTIME_ERROR,
        3,
    )


@requires_bwrap
def test_cancel_stops_the_case_under_way_and_the_rest(sandbox: Sandbox) -> None:
    """Cancelled during case 1, the run ends CANCELLED: case 0 kept its result, case 1 was
    stopped, case 2 never ran; each says so."""
    control = Control()

    def cancel_in_case_1(index: int, stream: Stream, text: str) -> None:
        if index == 1:
            control.cancel()

    source = "import sys, time\nn = sys.stdin.read()\nprint(n, flush=True)\n"
    source += "if n != '0': time.sleep(60)"
    cases = tuple(Case(stdin=str(n).encode()) for n in range(3))
    result = sandbox.run(
        Program("python", source, cases=cases), Limits(wall_timeout_s=60), None, control,
        on_case_output=cancel_in_case_1,
    )  # fmt: skip
    assert [case.status for case in result.cases] == [
        ExecutionStatus.COMPLETED,
        ExecutionStatus.CANCELLED,
        ExecutionStatus.CANCELLED,
    ]
    # python -u may write "1" and its newline apart, and the cancel come between them
    assert [case.stdout.rstrip("\n") for case in result.cases] == ["0", "1", ""]
    assert (result.status, result.reason) == (ExecutionStatus.CANCELLED, Reason.CANCELLED)
    assert result.wall_time_ms < 30_000
    assert_nothing_left(sandbox)


@requires_bwrap
def test_a_tty_program_cannot_have_cases(sandbox: Sandbox) -> None:
    """Cases run without a terminal: asking for both is refused."""
    with pytest.raises(RunnerError, match="terminal"):
        sandbox.run(Program("python", "pass", tty=True, cases=(Case(),)), FAST)


@pytest.mark.parametrize(
    ("expected", "stdout", "verdict"),
    [
        ("3", "3\n", Verdict.ACCEPTED),
        ("a\nb", "a  \nb\t\n\n\n", Verdict.ACCEPTED),  # trailing whitespace per line, at the end
        ("a\nb", "a\r\nb\r\n", Verdict.ACCEPTED),  # \r is whitespace too
        ("a b", "a  b", Verdict.WRONG_ANSWER),  # inner whitespace counts
        ("a\n\nb", "a\nb", Verdict.WRONG_ANSWER),  # so do empty lines inside
        ("  a", "a", Verdict.WRONG_ANSWER),  # and leading whitespace
        ("a", "a\u00a0", Verdict.WRONG_ANSWER),  # only ASCII whitespace is trailing (Ruby's)
        ("", "\n \n", Verdict.ACCEPTED),
    ],
)
def test_verdicts_compare_as_judge0_does(expected: str, stdout: str, verdict: Verdict) -> None:
    """Outputs are equal once each line, and the whole, lose their trailing whitespace."""
    assert judge(expected, stdout) is verdict


@pytest.fixture(scope="module")
def four_slots() -> Iterator[Sandbox]:
    """A sandbox with four slots, as a 2-core worker has (two per core)."""
    with private_sandbox(slots=4) as opened:
        yield opened


@requires_bwrap
def test_cases_run_side_by_side_on_spare_slots_with_output_in_case_order(
    four_slots: Sandbox,
) -> None:
    """Cases go on the run's slot and on the slots the pool spares, all but one (kept for a
    run that comes meanwhile): with four slots, two or three cases run at once, never four.
    Their output still comes in case order, each case's whole before the next's."""
    source = (
        "import sys, time\nn = sys.stdin.read()\nstarted = time.time()\nprint(n, flush=True)\n"
        "time.sleep(0.3)\nprint(started, time.time())"
    )
    cases = tuple(Case(stdin=str(n).encode()) for n in range(9))
    result, chunks = run_cases(four_slots, Program("python", source, cases=cases))
    assert [case.stdout.split()[0] for case in result.cases] == [str(n) for n in range(9)]
    order = [index for index, _stream, _text in chunks.calls]
    assert order == sorted(order)
    spans = [tuple(map(float, case.stdout.split()[1:])) for case in result.cases]
    most_at_once = max(sum(start <= at < end for start, end in spans) for at, _ in spans)
    assert 2 <= most_at_once <= 3


@requires_bwrap
def test_cancel_stops_every_case_running_side_by_side(four_slots: Sandbox) -> None:
    """Cancelled while three cases run at once, every one of them stops (none runs to its time
    limit) and the cases not started never run; nothing is left behind."""
    control = Control()
    started: set[int] = set()

    def note_output(index: int, stream: Stream, text: str) -> None:
        started.add(index)

    source = "import time\nprint('started', flush=True)\ntime.sleep(60)"
    cases = tuple(Case() for _ in range(8))
    outcome: list[Result] = []
    runner = threading.Thread(
        target=lambda: outcome.append(
            four_slots.run(
                Program("python", source, cases=cases),
                Limits(wall_timeout_s=60),
                None,
                control,
                on_case_output=note_output,
            )  # fmt: skip
        )
    )
    runner.start()
    # Only case 0's output is passed on while it runs; the host shows the others' programs.
    if not four_slots.measures()["uid_per_slot"]:
        pytest.skip("slot processes are told apart by their uids (as root)")

    def programs() -> list[str]:
        return [process for process in slot_processes(four_slots) if process.endswith("python3")]

    wait_until(lambda: len(programs()) == 3 and started, "three cases run at once")
    control.cancel()
    runner.join(TIMEOUT)
    (result,) = outcome
    assert [case.status for case in result.cases] == [ExecutionStatus.CANCELLED] * 8
    assert (result.status, result.reason) == (ExecutionStatus.CANCELLED, Reason.CANCELLED)
    assert_nothing_left(four_slots)
