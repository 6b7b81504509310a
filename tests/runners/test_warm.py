"""Warm start: Python runs forked from one interpreter per slot see nothing of one another.

Each test uses a 1-slot sandbox, so that consecutive runs are forks of the same interpreter (the
hash of a string shows which one: its seed is the interpreter's). The whole runners suite also
runs with warm start on (conftest's sandbox fixture).
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import secrets
import signal
import threading
from collections.abc import Iterator

import pytest

from runners import (
    Control,
    ExecutionStatus,
    Limits,
    Program,
    Reason,
    RunnerError,
    Sandbox,
    WarmConfig,
)
from runners.warm import WARM_PROCESSES
from tests.runners.conftest import FAST, private_sandbox, program, requires_bwrap, run

pytestmark = [
    requires_bwrap,
    pytest.mark.skipif(os.geteuid() != 0, reason="warm start needs root (a uid and cgroups)"),
]

HASH = Program("python", "print(hash('livecode'))")


@pytest.fixture(scope="module")
def warm() -> Iterator[Sandbox]:
    with private_sandbox(slots=1) as opened:
        assert opened.measures()["warm_python"]
        yield opened


@pytest.fixture(scope="module")
def cold() -> Iterator[Sandbox]:
    with private_sandbox(slots=1, warm=WarmConfig(enabled=False)) as opened:
        assert not opened.measures()["warm_python"]
        yield opened


def _interpreter(sandbox: Sandbox) -> str:
    """Which interpreter served the run: its hash seed's hash of a string."""
    result, _ = run(sandbox, HASH)
    assert result.status is ExecutionStatus.COMPLETED, result
    return result.stdout


def _found(stdout: str) -> str:
    lines = [line for line in stdout.splitlines() if line.startswith("found:")]
    assert lines, stdout
    return lines[-1]


@pytest.mark.parametrize("stdin", [None, b"typed\n"])
def test_a_warm_run_sees_what_a_cold_run_sees(
    warm: Sandbox, cold: Sandbox, stdin: bytes | None
) -> None:
    """A program sees the same interpreter and process, warm or cold: modules, sys.path, flags,
    argv, __main__, environment, ids, capabilities, rlimits, signal handlers, stdio objects."""
    prog = program("warm_state", "python", stdin=stdin, args=("an arg", "two"))
    states = []
    for sandbox in (warm, cold):
        result, _ = run(sandbox, prog)
        assert result.status is ExecutionStatus.COMPLETED, result
        states.append(json.loads(result.stdout))
    assert states[0] == states[1]


@pytest.mark.parametrize("how", ["end", "exit", "message", "exception", "interrupt"])
def test_a_warm_run_ends_as_a_cold_one(warm: Sandbox, cold: Sandbox, how: str) -> None:
    """However the program ends (its end, sys.exit with a code or a message, an exception,
    KeyboardInterrupt), its non-daemon threads are joined, its atexit handlers run, its
    globals' __del__ run and its unclosed files are flushed, and it reports the same exit."""
    prog = program("warm_exit", "python", args=(how,))
    ends = []
    for sandbox in (warm, cold):
        result, _ = run(sandbox, prog)
        ends.append((result.status, result.exit_code, result.signal, result.stdout, result.stderr))
    assert ends[0] == ends[1]
    assert "__del__ of a global\nunclosed buffered file\n" in ends[0][3], ends[0]


def test_nothing_a_run_leaves_reaches_the_next(warm: Sandbox) -> None:
    """Files in /tmp, /box, /dev/shm, environment, modules, builtins, sys.path, the recursion
    limit, signal handlers, threads and processes of one run: none is there in the next."""
    first = _interpreter(warm)
    left, _ = run(warm, program("warm_leave", "python"))
    assert left.status is ExecutionStatus.COMPLETED, left
    # its atexit handler ran at its own exit, as in a cold run
    assert left.stdout == "left\natexit of the leaving run\n", left
    looked, _ = run(warm, program("warm_look", "python"))
    assert _found(looked.stdout) == "found: []", looked
    assert _interpreter(warm) == first  # all of it on the same interpreter


def test_a_run_cannot_reach_the_interpreter(warm: Sandbox) -> None:
    """A run finds no process but its own: it cannot signal, trace or read the interpreter, nor
    leave its namespaces; the interpreter serves the next run as if nothing happened."""
    first = _interpreter(warm)
    result, _ = run(warm, program("warm_reach", "python"))
    assert result.status is ExecutionStatus.COMPLETED, result
    assert _found(result.stdout) == "found: []", result
    assert _interpreter(warm) == first


def test_the_runs_pid_1_is_held_as_the_program_is(warm: Sandbox) -> None:
    """The run's pid 1 has the run's rlimits, no capability, no_new_privs and the run's seccomp
    filters, as the program has; the program can neither read nor write pid 1's memory, open its
    files, fds, environment or namespaces, nor change it. Pid 1 holds no copy of the
    interpreter: it is the small warm_init, and its command line says nothing of the run."""
    result, _ = run(warm, program("warm_pid1", "python"))
    assert result.status is ExecutionStatus.COMPLETED, result
    seen = json.loads(result.stdout)
    init_limits, own_limits = seen["limits"]
    assert init_limits == own_limits
    init, own = seen["status"]
    assert init == own
    for capabilities in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(init[capabilities], 16) == 0, init
    assert init["NoNewPrivs"] == "1", init
    assert seen["reached"] == [], seen
    assert seen["init_rss_kb"] < 1024, seen  # the interpreter's copy would be about 8 MB
    assert seen["init_cmdline"] == "livecode-init\x002\x00", seen  # nothing of the run's


def test_signals_to_the_runs_pid_1_change_nothing(warm: Sandbox) -> None:
    """The program may signal its pid 1 with anything (stop, kill, a fault): pid 1, the init of
    the run's PID namespace, keeps reaping and reports the program's own end; the interpreter
    serves the next run."""
    first = _interpreter(warm)
    result, _ = run(warm, program("warm_signal_init", "python"))
    assert (result.stdout, result.exit_code) == ("10 S\n", 7), result
    assert _interpreter(warm) == first


def test_a_run_cannot_make_a_user_namespace(warm: Sandbox) -> None:
    """As with bwrap's --disable-userns in a cold run, unshare(CLONE_NEWUSER) fails, and the
    run's own limit on user namespaces is 0 (should the seccomp filter ever let one through)."""
    result, _ = run(warm, program("warm_userns", "python"))
    assert result.stdout == "unshare: Operation not permitted\nmax_user_namespaces: 0\n", result


def test_the_interpreter_writes_nowhere(warm: Sandbox) -> None:
    """The interpreter's working directory is / and its /, /tmp and /box are read-only: it
    keeps no writable directory that its runs (which mount their own /tmp and /box) share."""
    _interpreter(warm)
    pid = _interpreter_status(warm)["Pid"]
    assert os.readlink(f"/proc/{pid}/cwd") == "/"
    options = {}
    for line in pathlib.Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        fields = line.split()
        options[fields[4]] = fields[5].split(",")
    for path in ("/tmp/", "/box/"):
        mount = max((m for m in options if path.startswith(m.rstrip("/") + "/")), key=len)
        assert "ro" in options[mount], (path, mount, options[mount])


def _interpreter_fds(pid: str) -> list[str]:
    """What the interpreter's fds are, without the numbers the kernel gave their objects."""
    fd_dir = pathlib.Path(f"/proc/{pid}/fd")
    return sorted(f"{fd.name} {os.readlink(fd).split('[')[0]}" for fd in fd_dir.iterdir())


def _is_dumpable(pid: str) -> bool:
    """A process not dumpable has its /proc files owned by root, not by its uid."""
    return os.stat(f"/proc/{pid}/mem").st_uid != 0


def test_the_interpreter_keeps_nothing_of_ended_runs(warm: Sandbox) -> None:
    """However its runs end (a crash, signals to pid 1, a fork tree, a cancel), the interpreter
    holds the same fds during each run (none of an earlier one's) and stays not dumpable,
    though every run's set-up makes its memory dumpable for a while."""
    pid = _interpreter_status(warm)["Pid"]
    seen = []

    def observe_during_run() -> None:
        control = Control()
        source = "import time\nprint('started', flush=True)\ntime.sleep(60)\n"

        def on_output(stream: object, text: str) -> None:
            seen.append((_interpreter_fds(pid), _is_dumpable(pid)))
            threading.Thread(target=control.cancel).start()

        result = warm.run(Program("python", source), FAST, on_output=on_output, control=control)
        assert result.status is ExecutionStatus.CANCELLED, result

    observe_during_run()
    run(warm, program("warm_corrupt", "python"))
    run(warm, program("warm_signal_init", "python"))
    run(warm, Program("python", "import os\nos.fork()\nos.fork()\nos.close(1)\nos._exit(3)"))
    observe_during_run()
    assert _interpreter_status(warm)["Pid"] == pid
    assert seen[0] == seen[1], seen
    assert seen[0][1] is False, seen


def test_an_interpreter_given_no_run_filter_starts_no_run(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should the filter each run stacks reach the interpreter empty, it starts no run
    without one: the run fails as the sandbox's fault, with an error that says why."""
    with private_sandbox(slots=1) as sandbox:
        slot = sandbox._pool.slots[0]
        empty = tmp_path / "empty.bpf"
        empty.write_bytes(b"")
        bwrap = slot._setup.bwrap
        assert bwrap.warm_seccomp_files is not None
        interpreters_filter, _ = bwrap.warm_seccomp_files
        monkeypatch.setattr(bwrap, "warm_seccomp_files", (interpreters_filter, str(empty)))
        slot.reset_warm()
        with pytest.raises(RunnerError, match="warm start: no seccomp filter"):
            sandbox.run(Program("python", "print('ran')"), FAST)
        # the set-up ended while the interpreter's memory, which it shares, was dumpable
        assert not _is_dumpable(_interpreter_status(sandbox)["Pid"])


def test_a_run_corrupting_its_interpreter_leaves_the_next_intact(warm: Sandbox) -> None:
    """A run that rewrites its interpreter's memory with ctypes and crashes hurts only itself."""
    first = _interpreter(warm)
    result, _ = run(warm, program("warm_corrupt", "python"))
    assert result.stdout == "corrupted\n" and result.signal == signal.SIGSEGV, result
    after, _ = run(warm, Program("python", "import sys\nprint(1 + 1, 'json' in sys.modules)"))
    assert after.stdout == "2 False\n", after
    assert _interpreter(warm) == first


@pytest.mark.parametrize("where", ["arguments", "source"])
def test_no_run_finds_another_runs_request_in_memory(warm: Sandbox, where: str) -> None:
    """The interpreter keeps nothing of a run's request, though each run is set up in its
    memory and on its stack: a later run scanning all of its memory (a copy of the
    interpreter's) finds neither an earlier run's arguments nor its source."""
    token = secrets.token_hex(16)
    if where == "arguments":
        run(warm, Program("python", "pass", args=(token,)))
    else:  # deep in a long source: the scanning run's own set-up overwrites less
        run(warm, Program("python", f"# {'.' * 50_000}{token}\npass\n"))
    digest = hashlib.sha256(token.encode()).hexdigest()
    scan = (
        "import hashlib, re, sys\n"
        "found = []\n"
        "mem = open('/proc/self/mem', 'rb')\n"
        "for line in open('/proc/self/maps'):\n"
        "    span, perms = line.split()[:2]\n"
        "    if 'r' not in perms or line.rstrip().endswith(('[vvar]', '[vsyscall]')):\n"
        "        continue\n"
        "    start, end = (int(x, 16) for x in span.split('-'))\n"
        "    try:\n"
        "        mem.seek(start)\n"
        "        data = mem.read(end - start)\n"
        "    except OSError:\n"
        "        continue\n"
        "    for hit in re.finditer(rb'[0-9a-f]{32}', data):\n"
        "        if hashlib.sha256(hit.group()).hexdigest() == sys.argv[1]:\n"
        "            found.append(hex(start))\n"
        "print('found:', found)\n"
    )
    result, _ = run(warm, Program("python", scan, args=(digest,)), Limits(wall_timeout_s=20))
    assert _found(result.stdout) == "found: []", result


def test_no_run_finds_how_another_run_ended_in_memory(warm: Sandbox) -> None:
    """How a run ended (its exit status, CPU time and peak memory, which the interpreter
    reported to its spawner, and the usage the kernel gave it) is none of a later run's
    business: a later run scanning all of its memory finds no earlier run's report."""
    ended, _ = run(warm, Program("python", "import sys\nsys.exit(97)"))
    assert ended.exit_code == 97, ended
    result, _ = run(warm, program("warm_replies", "python"), Limits(wall_timeout_s=20))
    assert result.status is ExecutionStatus.COMPLETED, result
    assert _found(result.stdout) == "found: []", result


def test_the_interpreter_is_replaced_after_max_runs() -> None:
    """No interpreter serves more than max_runs runs (the sandbox's start-up probe among them):
    then a new one, with a new hash seed, takes over."""
    with private_sandbox(slots=1, warm=WarmConfig(max_runs=2)) as sandbox:
        seeds = [_interpreter(sandbox) for _ in range(5)]
    assert seeds[1] == seeds[2] != seeds[3] == seeds[4], seeds  # the probe was seeds[0]'s 1st


def test_the_interpreter_is_replaced_after_max_age() -> None:
    """An interpreter older than max_age_s serves no more runs."""
    with private_sandbox(slots=1, warm=WarmConfig(max_age_s=0.001)) as sandbox:
        first, second = (_interpreter(sandbox) for _ in range(2))
    assert first != second


def test_bad_recycling_settings_are_refused() -> None:
    """max_runs below 1 and a max_age_s that is not positive are clear errors."""
    with pytest.raises(ValueError, match="max_runs"):
        WarmConfig(max_runs=0)
    with pytest.raises(ValueError, match="max_age_s"):
        WarmConfig(max_age_s=0)


def test_a_dead_interpreter_is_replaced(warm: Sandbox) -> None:
    """Killed from outside, the interpreter is rebuilt and the next run works."""
    first = _interpreter(warm)
    uid = str(warm.measures()["warm_uids"][0])
    for entry in pathlib.Path("/proc").iterdir():
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        if "\nName:\tlivecode-warm\n" in f"\n{status}" and f"Uid:\t{uid}\t" in status:
            os.kill(int(entry.name), signal.SIGKILL)
    assert _interpreter(warm) != first


def _interpreter_status(sandbox: Sandbox) -> dict[str, str]:
    """The host's /proc status of the slot's warm interpreter process."""
    uid = str(sandbox.measures()["warm_uids"][0])
    for entry in pathlib.Path("/proc").iterdir():
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        if fields.get("Name") == "livecode-warm" and fields.get("Uid", "").startswith(uid):
            if len(fields.get("NSpid", "").split()) == 2:  # not a run's pid 1 (three levels)
                return fields
    raise AssertionError("no warm interpreter found")


def test_the_interpreter_holds_no_capability(warm: Sandbox) -> None:
    """The interpreter runs as the slot's warm uid, with no capability at all, no_new_privs and
    its seccomp filter: the namespaces it gives each run come from a user namespace of the
    run's own, not from a privilege it keeps."""
    _interpreter(warm)
    status = _interpreter_status(warm)
    uid = str(warm.measures()["warm_uids"][0])
    assert status["Uid"].split() == [uid] * 4
    for capabilities in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(status[capabilities], 16) == 0, (capabilities, status[capabilities])
    assert (status["NoNewPrivs"], status["Seccomp"]) == ("1", "2")


def test_warm_start_off_runs_python_cold() -> None:
    """With warm start off, python3 itself runs the program."""
    with private_sandbox(slots=1, warm=WarmConfig(enabled=False)) as sandbox:
        assert sandbox.measures()["warm_python"] is False
        result, _ = run(
            sandbox, Program("python", "import os\nprint(os.readlink('/proc/self/exe'))")
        )
    assert result.stdout == "/usr/bin/python3.11\n", result


def test_usage_is_the_runs_alone(warm: Sandbox, cold: Sandbox) -> None:
    """Memory and CPU are the run's, not the interpreter's added: a hello world reports about what
    it does cold, a run filling 64 MiB reports that much more, and its CPU is at least what it
    spent itself."""
    hello = Program("python", "print('hello')")
    warm_hello, _ = run(warm, hello)
    cold_hello, _ = run(cold, hello)
    assert warm_hello.memory_kb is not None and cold_hello.memory_kb is not None
    assert warm_hello.memory_kb <= cold_hello.memory_kb + 4096, (warm_hello, cold_hello)
    fill = Program(
        "python",
        "import resource\nblock = bytearray(64 << 20)\nfor i in range(0, len(block), 4096):\n"
        "    block[i] = 1\nx = 0\nfor i in range(3_000_000):\n    x += i\n"
        "usage = resource.getrusage(resource.RUSAGE_SELF)\n"
        "print(int((usage.ru_utime + usage.ru_stime) * 1000))",
    )
    result, _ = run(warm, fill, Limits(wall_timeout_s=30))
    assert result.status is ExecutionStatus.COMPLETED and result.memory_kb is not None, result
    assert (64 << 10) <= result.memory_kb <= (64 << 10) + warm_hello.memory_kb + 4096, result
    assert result.cpu_time_ms is not None and result.cpu_time_ms >= int(result.stdout), result


def test_the_peak_memory_is_the_programs_own(warm: Sandbox) -> None:
    """The run's pid 1 executes init from the interpreter's memory, which leaves the
    interpreter's peak as that process's own: the peak reported is still the program's, as
    the program itself reads it at its end."""
    own = Program(
        "python", "import resource\nprint(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    for _ in range(3):
        result, _ = run(warm, own)
        assert result.status is ExecutionStatus.COMPLETED and result.memory_kb is not None, result
        assert 0 <= result.memory_kb - int(result.stdout) <= 256, result


def test_the_memory_limit_counts_the_run_alone(warm: Sandbox) -> None:
    """A run may use its memory limit, not less for the interpreter beside it, and not more."""
    limits = Limits(wall_timeout_s=20, memory_mb=96)
    fits = Program("python", "block = bytearray(80 << 20)\nprint('fits')")
    result, _ = run(warm, fits, limits)
    assert result.stdout == "fits\n", result
    over = Program("python", "block = bytearray(120 << 20)\nprint('fits')")
    result, _ = run(warm, over, limits)
    assert result.reason is Reason.MEMORY_LIMIT, result


def test_cancel_kills_every_process_of_the_run(warm: Sandbox) -> None:
    """Cancelled, a run that started a tree of processes leaves none behind, and the slot's
    interpreter is still the one it had (only the run's processes were killed)."""
    first = _interpreter(warm)
    control = Control()
    source = (
        "import os, time\n"
        "for _ in range(4):\n"
        "    if os.fork() == 0:\n"
        "        os.setsid()\n"
        "        os.fork()\n"
        "        time.sleep(60)\n"
        "print('started', flush=True)\n"
        "time.sleep(60)\n"
    )

    def on_output(stream: object, text: str) -> None:
        if "started" in text:
            threading.Thread(target=control.cancel).start()

    result = warm.run(Program("python", source), FAST, on_output=on_output, control=control)
    assert result.status is ExecutionStatus.CANCELLED, result
    run(warm, Program("python", "pass"))  # asserts that nothing of any run is left
    assert _interpreter(warm) == first
    slot = warm._pool.slots[0]
    procs = pathlib.Path(slot.warm_cgroups["pids"], "cgroup.procs").read_text().split()
    assert len(procs) == WARM_PROCESSES + 1  # the interpreter's three and its spawner


def test_a_warm_run_is_denied_what_a_cold_run_is(warm: Sandbox, cold: Sandbox) -> None:
    """A warm run stacks on the interpreter's filter only what that one lets the interpreter do
    (unshare, mount, umount2, clone of a user namespace): together they answer every denied call
    as a cold run's one filter does."""
    warm_result, _ = run(warm, program("seccomp_answers", "python"))
    cold_result, _ = run(cold, program("seccomp_answers", "python"))
    warm_lines = warm_result.stdout.splitlines()
    assert warm_lines[-1] == "Seccomp_filters:\t2", warm_result
    assert cold_result.stdout.splitlines()[-1] == "Seccomp_filters:\t1", cold_result
    assert warm_lines[:-1] == cold_result.stdout.splitlines()[:-1]
    assert warm_lines[:-1] == [
        "unshare(0): EPERM",
        "mount: EPERM",
        "umount2: EPERM",
        "keyctl: EPERM",
        "bpf: EPERM",
        "io_uring_setup: EPERM",
        "ptrace: EPERM",
        "clone3: ENOSYS",
        "ioctl(TIOCSTI): EPERM",
        "socket(AF_INET): EAFNOSUPPORT",
        "open_tree: EPERM",
        "userfaultfd: EPERM",
        "personality: EPERM",
        "kcmp: EPERM",
        "process_vm_readv: EPERM",
        "pidfd_getfd: EPERM",
        "perf_event_open: EPERM",
        "name_to_handle_at: EPERM",
    ]
