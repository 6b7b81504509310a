"""Regressions of the security review: what a hostile program could reach or break."""

from __future__ import annotations

import contextlib
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator

import pytest

import runners.pump
import runners.spawner
from runners import (
    ExecutionStatus,
    Limits,
    Program,
    Reason,
    RunnerError,
    Sandbox,
    SandboxConfig,
    Stream,
)
from runners.cache import BinaryCache
from runners.spawner import Spawner
from tests.runners.conftest import FAST, assert_nothing_left, program, requires_bwrap, run
from tests.utils import wait_until

pytestmark = requires_bwrap

_CROWD = 100  # fds below this are all open while the sandbox starts: its spawner's land above


@pytest.fixture(scope="module")
def crowded_sandbox(sandbox: Sandbox) -> Iterator[Sandbox]:
    """A 1-slot sandbox started while this process holds many fds."""
    sandbox._pch.join()  # no other thread opening and closing fds meanwhile
    held = [os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)]
    while held[-1] < _CROWD:
        held.append(os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC))
    try:
        box = Sandbox(SandboxConfig(slots=1, work_root=sandbox.work_root, warm=sandbox.config.warm))
    finally:
        for fd in held:
            os.close(fd)
    with box:
        spawner = box._pool.slots[0].spawner
        assert spawner is not None
        assert int(next(a for a in spawner.process.args if a.isdigit())) > _CROWD  # its socket
        yield box


@pytest.mark.parametrize("language", ["python", "c++"])
def test_a_program_inherits_only_stdin_stdout_and_stderr(
    crowded_sandbox: Sandbox, language: str
) -> None:
    """A program finds only stdin, stdout and stderr open, however many files the server holds."""
    result, _ = run(crowded_sandbox, program("open_fds", language))
    assert (result.status, result.stdout) == (ExecutionStatus.COMPLETED, "fds: 0 1 2\n"), result


def _python_spawner(box: Sandbox) -> Spawner:
    """The spawner a Python run of the 1-slot `box` goes through: with warm start, the warm
    spawner (its interpreter started first)."""
    slot = box._pool.slots[0]
    if slot.is_warm:
        run(box, Program("python", "pass"))
        assert slot.warm_spawner is not None
        return slot.warm_spawner
    assert slot.spawner is not None
    return slot.spawner


def _in_thread(call: Callable[[], object], timeout_s: float) -> object:
    """call() in a daemon thread; fails instead of hanging the tests when it never returns."""
    done: list[object] = []
    thread = threading.Thread(target=lambda: done.append(call()), daemon=True)
    thread.start()
    thread.join(timeout_s)
    assert done, f"no answer within {timeout_s} s: a worker thread would hang forever"
    return done[0]


def test_a_silent_spawner_is_replaced_and_the_run_retried(
    crowded_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run whose slot's spawner stopped answering still runs, on a new spawner."""
    monkeypatch.setattr(runners.spawner, "_REPLY_TIMEOUT_S", 1.0)
    slot = crowded_sandbox._pool.slots[0]
    slot.reset()  # its socket gets the shorter reply timeout
    slot.reset_warm()
    stalled = _python_spawner(crowded_sandbox).process.pid
    os.kill(stalled, signal.SIGSTOP)  # alive, holding its socket, never answering
    try:
        result = _in_thread(lambda: run(crowded_sandbox, Program("python", "print('ok')")), 20)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(stalled, signal.SIGCONT)
    assert isinstance(result, tuple) and result[0].stdout == "ok\n", result
    assert _python_spawner(crowded_sandbox).process.pid != stalled


def test_a_run_the_spawner_does_not_end_resets_the_slot(
    crowded_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A killed run its spawner never ends is our error; nothing is left running, the next works."""
    monkeypatch.setattr(runners.pump, "_KILL_GRACE_S", 1.0)
    stalled = _python_spawner(crowded_sandbox).process.pid
    limits = Limits(wall_timeout_s=1)
    prog = Program("python", "import time\nprint('started', flush=True)\ntime.sleep(60)")

    def stop_the_spawner(stream: Stream, text: str) -> None:
        os.kill(stalled, signal.SIGSTOP)  # the kill request will never be answered

    try:
        with pytest.raises(RunnerError, match="did not end a killed run"):
            crowded_sandbox.run(prog, limits, on_output=stop_the_spawner)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(stalled, signal.SIGCONT)
    assert_nothing_left(crowded_sandbox)  # the sleeping program was killed with the spawner
    assert _python_spawner(crowded_sandbox).process.pid != stalled
    result = _in_thread(lambda: run(crowded_sandbox, Program("python", "print('next')")), 20)
    assert isinstance(result, tuple) and result[0].stdout == "next\n", result


@pytest.mark.parametrize(("name", "language"), [("memfd_fill", "c++"), ("tmpfs_fill", "python")])
def test_memory_held_by_no_process_never_kills_the_spawner(
    crowded_sandbox: Sandbox, name: str, language: str
) -> None:
    """Filling memory with files no process holds ends at most that run; the slot works on."""
    slot = crowded_sandbox._pool.slots[0]
    assert slot.spawner is not None
    spawner = slot.spawner.process.pid
    limits = Limits(wall_timeout_s=10, memory_mb=48, output_limit_bytes=16384)
    result, _ = run(crowded_sandbox, program(name, language), limits)
    assert result.status in (ExecutionStatus.FAILED, ExecutionStatus.COMPLETED), result
    if os.geteuid() == 0:  # a memory cgroup: the OOM killer picks the program, not the spawner
        assert result.reason in (Reason.MEMORY_LIMIT, Reason.RUNTIME_ERROR), result
    assert (
        slot.spawner is not None
        and slot.spawner.process.pid == spawner
        and slot.spawner.process.poll() is None
    )
    result, _ = run(crowded_sandbox, Program("python", "print('next')"))
    assert (result.status, result.stdout) == (ExecutionStatus.COMPLETED, "next\n"), result
    assert slot.spawner.process.pid == spawner


_NEEDS_90_MIB = (
    "data = bytearray(90 << 20)\ndata[::4096] = b'x' * len(data[::4096])\nprint('allocated')\n"
)


def _collect_unix_garbage() -> None:
    """Run the kernel's collector of Unix sockets in flight: it runs when one is released."""
    for end in socket.socketpair():
        end.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="only a memory cgroup counts what no process holds")
def test_memory_a_run_leaves_in_flight_is_not_the_next_runs_loss(
    crowded_sandbox: Sandbox,
) -> None:
    """Memory a run leaves that no process holds (memfds in flight in a cycle of Unix sockets)
    is freed by the time the run has ended: the next run of the slot allocates what it could
    before."""
    limits = Limits(wall_timeout_s=10, memory_mb=128, output_limit_bytes=16384)
    slot = crowded_sandbox._pool.slots[0]
    cgroups = slot.warm_cgroups if crowded_sandbox.measures()["warm_python"] else slot.cgroups
    usage = pathlib.Path(cgroups["memory"], "memory.usage_in_bytes")
    before, _ = run(crowded_sandbox, Program("python", _NEEDS_90_MIB), limits)
    assert (before.status, before.stdout) == (ExecutionStatus.COMPLETED, "allocated\n"), before
    base = int(usage.read_text())
    left, _ = run(crowded_sandbox, program("inflight_leave", "python"), limits)
    # read at once: the kernel frees the leftover whenever a Unix socket anywhere is released
    kept = int(usage.read_text()) - base
    try:
        assert left.stdout == "left 105 MiB\n", left
        assert kept < 32 << 20, f"{kept >> 20} MiB of the ended run still charged to its slot"
        after, _ = run(crowded_sandbox, Program("python", _NEEDS_90_MIB), limits)
        assert (after.status, after.stdout) == (ExecutionStatus.COMPLETED, "allocated\n"), after
    finally:  # the tests after this one get their limits whole
        _collect_unix_garbage()
        wait_until(lambda: int(usage.read_text()) < base + (32 << 20), "the leftover was freed")


@pytest.mark.skipif(os.geteuid() != 0, reason="only a memory cgroup counts what no process holds")
def test_a_reset_slot_runs_with_no_memory_left_charged_to_it(crowded_sandbox: Sandbox) -> None:
    """Memory left charged to a slot's memory cgroup that no process holds, and that reclaim
    cannot free, is not charged to the slot any more once it is reset (as it is when what a run
    left in flight is not freed in time): its next run starts with it gone."""
    slot = crowded_sandbox._pool.slots[0]
    is_warm = crowded_sandbox.measures()["warm_python"]
    spawner = _python_spawner(crowded_sandbox)
    memory = pathlib.Path((slot.warm_cgroups if is_warm else slot.cgroups)["memory"])
    with tempfile.NamedTemporaryFile(dir="/dev/shm") as left:
        # tmpfs pages, charged to the cgroup of the process that wrote them, which then exits
        subprocess.run(
            [
                "/bin/sh",
                "-c",
                f'echo $$ > "$1/cgroup.procs" && head -c {64 << 20} /dev/zero >"$2"',
                "sh",
                str(memory),
                left.name,
            ],
            check=True,
        )
        assert int((memory / "memory.usage_in_bytes").read_text()) >= 64 << 20
        spawner.is_broken = True  # as after an exit report saying LEFT
        slot.settle()
        result, _ = run(crowded_sandbox, Program("python", "print('next')"))
        assert (result.status, result.stdout) == (ExecutionStatus.COMPLETED, "next\n"), result
        usage = int((memory / "memory.usage_in_bytes").read_text())
        assert usage < 32 << 20, f"{usage >> 20} MiB charged to the slot after its reset"


@pytest.mark.skipif(os.geteuid() != 0, reason="the spawner has a network namespace as root only")
def test_a_connection_a_host_service_keeps_is_not_a_leftover_of_the_run() -> None:
    """Unsandboxed (mode "none"), a program may talk to a service of the host over its Unix
    socket; the service keeping its end of the connection a while after the program has ended
    neither delays the run's end nor resets the slot."""
    directory = tempfile.mkdtemp(dir="/tmp", prefix="livecode-test-")
    os.chmod(directory, 0o755)
    path = os.path.join(directory, "service")
    service = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    service.bind(path)
    os.chmod(path, 0o777)  # the slot's uid connects
    service.listen()
    kept: list[socket.socket] = []

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                kept.append(service.accept()[0])

    threading.Thread(target=serve, daemon=True).start()
    work_root = tempfile.mkdtemp(dir="/var/tmp", prefix="livecode-test-")
    source = f"import socket\nsocket.socket(socket.AF_UNIX).connect({path!r})\nprint('asked')\n"
    try:
        with Sandbox(SandboxConfig(mode="none", slots=1, work_root=work_root)) as bare:
            spawner = bare._pool.slots[0].spawner
            assert spawner is not None
            result = bare.run(Program("python", source), Limits(wall_timeout_s=1))
            assert (result.status, result.stdout) == (ExecutionStatus.COMPLETED, "asked\n"), result
            assert bare._pool.slots[0].spawner is spawner, "the slot was reset"
    finally:
        service.close()
        for end in kept:
            end.close()
        shutil.rmtree(work_root, ignore_errors=True)
        shutil.rmtree(directory, ignore_errors=True)


_LEAVES_SYSV_SHM = """import ctypes
libc = ctypes.CDLL(None)
libc.shmat.restype = ctypes.c_void_p
segment = libc.shmget(0, 150 << 20, 0o1600)
ctypes.memset(libc.shmat(segment, None, 0), 1, 150 << 20)
print("left")
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="only a memory cgroup counts what no process holds")
def test_shared_memory_a_run_leaves_is_not_the_next_runs_loss(crowded_sandbox: Sandbox) -> None:
    """A System V shared memory segment a run leaves (its IPC namespace's, gone with it) does
    not keep the next run of the slot from starting with its own, lower, memory limit."""
    # back to back, as a busy slot runs (run() would check the host for leftovers in between);
    # a few times: the kernel frees the namespace within ~0.1 s, sometimes before the next start
    for _ in range(4):
        left = crowded_sandbox.run(Program("python", _LEAVES_SYSV_SHM), Limits(memory_mb=256))
        assert (left.status, left.stdout) == (ExecutionStatus.COMPLETED, "left\n"), left
        after = crowded_sandbox.run(Program("python", "print('next')"), Limits(memory_mb=64))
        assert (after.status, after.stdout) == (ExecutionStatus.COMPLETED, "next\n"), after


def test_a_socket_a_run_leaves_in_flight_is_not_the_next_runs_to_reach(
    crowded_sandbox: Sandbox,
) -> None:
    """A Unix socket bound to an abstract name that a run leaves in flight in a cycle of Unix
    sockets (no process holds it) is gone by the next run of the slot, which shares the run's
    network namespace: no channel from one run (one tenant) to the next."""
    try:
        for _ in range(2):
            result, _ = run(crowded_sandbox, program("inflight_abstract", "python"))
            assert (result.status, result.stdout) == (
                ExecutionStatus.COMPLETED,
                "refused\nleft\n",
            ), result
    finally:  # the tests after this one find the name free
        _collect_unix_garbage()


# A tty run's end releases a Unix socket (ttyinit's, bwrap's stdin), which has the kernel collect
# the cycle soon after: those cases end in time either way, and check that the terminal's last
# output is read whole whichever comes first, the report or the terminal's hang-up.
@pytest.mark.parametrize(
    ("tty", "size"), [(False, 0), (False, 900_000), (True, 0), (True, 100_000)]
)
def test_a_program_ending_with_its_output_in_flight_ends_its_run(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, tty: bool, size: int
) -> None:
    """A program that exits with its stdout and stderr (or its terminal) open in flight in a
    cycle of Unix sockets (open, though no process holds them) ends its run with its exit, at
    once, with all it wrote."""
    monkeypatch.setattr(runners.pump, "_KILL_GRACE_S", 1.0)
    prog = program("inflight_output", "python", args=(str(size),), tty=tty)
    result, _ = run(sandbox, prog, Limits(wall_timeout_s=2, output_limit_bytes=1 << 20))
    # Held open, they ended it as timed out, or as our error after the kill grace.
    line_end = "\r\n" if tty else "\n"
    assert (result.status, result.exit_code) == (ExecutionStatus.COMPLETED, 0), result
    assert result.stdout == "x" * size + "exiting" + line_end, result.stdout[-100:]


def test_only_unix_sockets_can_be_made(sandbox: Sandbox) -> None:
    """A program can make Unix sockets only, of no other family."""
    result, _ = run(sandbox, program("socket_families", "python"))
    assert result.status is ExecutionStatus.COMPLETED, result
    assert result.stdout == f"socket: {socket.AF_UNIX}\nsocketpair: {socket.AF_UNIX}\n", result


def test_the_32_bit_system_call_entry_is_closed(sandbox: Sandbox) -> None:
    """A system call made through int 0x80, with i386's numbers (which no rule of the filter
    names), kills the program before the kernel runs it, warm or cold."""
    result, _ = run(sandbox, program("syscall_32bit", "python"))
    assert (result.status, result.signal, result.stdout) == (
        ExecutionStatus.FAILED,
        signal.SIGSYS,
        "started\n",
    ), result


_ARGS_PROGRAM = "import sys\nprint(len(sys.argv) - 1, sum(map(len, sys.argv[1:])))"


@pytest.mark.parametrize("char", ["a", "\x01", "\U0001f600"])
def test_arguments_at_the_api_maximum_reach_the_program(
    crowded_sandbox: Sandbox, char: str
) -> None:
    """64 arguments of 4096 characters, the most the API takes, all reach the program."""
    args = tuple(char * 4096 for _ in range(64))  # 64 arguments of 4096 characters
    result, _ = run(crowded_sandbox, Program("python", _ARGS_PROGRAM, args=args))
    assert (result.status, result.stdout) == (ExecutionStatus.COMPLETED, "64 262144\n"), result


def test_a_lone_surrogate_in_a_cpp_source_is_no_runner_error(sandbox: Sandbox) -> None:
    """A C++ source with a lone surrogate in a comment compiles and runs."""
    source = '#include <cstdio>\nint main() { puts("ok"); }  // \ud800\n'
    result, _ = run(sandbox, Program("c++", source))
    assert (result.status, result.stdout) == (ExecutionStatus.COMPLETED, "ok\n"), result


def test_a_binary_over_the_entry_cap_does_not_evict_the_others(tmp_path: pathlib.Path) -> None:
    """A binary too big for the C++ cache is not kept, and pushes no cached binary out."""
    cache = BinaryCache(str(tmp_path / "cache"), max_bytes=16 << 20)  # entries up to 1 MiB
    victim = tmp_path / "victim"
    victim.write_bytes(b"v" * (512 << 10))
    os.unlink(cache.put("victim", str(victim), "a warning"))
    for index in range(10):
        huge = tmp_path / f"huge-{index}"
        huge.write_bytes(bytes([index]) * (2 << 20))
        private = cache.put(f"huge-{index}", str(huge), "")
        assert pathlib.Path(private).read_bytes() == huge.read_bytes()
        os.unlink(private)
        assert cache.checkout(f"huge-{index}") is None
    kept = cache.checkout("victim")
    assert kept is not None and pathlib.Path(kept[0]).read_bytes() == victim.read_bytes()
    assert kept[1] == "a warning"
    os.unlink(kept[0])
    assert sorted(os.listdir(cache.directory)) == ["victim", "victim.messages"]


def test_a_huge_cpp_binary_runs_without_being_cached(sandbox: Sandbox) -> None:
    """A C++ program whose binary is over the cache's entry cap runs each time, never cached."""
    source = "char big[20 << 20] = {1};\nint main() { return big[0] + big[5] - 1; }\n"
    for _ in range(2):
        result, _ = run(sandbox, Program("c++", source), Limits(compile_timeout_s=30))
        assert (result.status, result.exit_code) == (ExecutionStatus.COMPLETED, 0), result
    sizes = [entry.stat().st_size for entry in os.scandir(sandbox.cache.directory)]
    assert max(sizes, default=0) <= sandbox.cache.max_entry_bytes


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in pathlib.Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            continue
        if entry.name.isdigit() and text in cmdline:
            found.append(f"{entry.name} {cmdline}")
    return found


@pytest.mark.skipif(not os.access("/usr/bin/g++", os.X_OK), reason="no g++: no PCH to build")
def test_close_stops_the_precompiled_header_build(tmp_path: pathlib.Path) -> None:
    """Closing the sandbox while it precompiles the C++ header leaves no compiler running."""
    work_root = tempfile.mkdtemp(dir="/var/tmp", prefix="livecode-runners-pch-")
    try:
        box = Sandbox(SandboxConfig(slots=1, work_root=work_root))
        # Not any process with the work root in its command line: the slot's spawner has it.
        wait_until(
            lambda: [p for p in _processes_mentioning(work_root) if "c++-header" in p],
            "the precompiled header's compiler runs",
        )
        box.close()
        assert not box._pch.is_alive()
        assert _processes_mentioning(work_root) == []
    finally:
        shutil.rmtree(work_root, ignore_errors=True)


@pytest.mark.parametrize("language", ["python", "c++"])
def test_no_host_path_in_the_sandbox_init_command_line(sandbox: Sandbox, language: str) -> None:
    """A program reading /proc/1/cmdline learns no host path of the sandbox."""
    source = {
        "python": "print(open('/proc/1/cmdline', 'rb').read())",
        "c++": '#include <cstdio>\nint main() { auto f = std::fopen("/proc/1/cmdline", "rb");'
        " char b[65536]; auto n = std::fread(b, 1, sizeof b, f);"
        " for (size_t i = 0; i < n; i++) std::putchar(b[i] ? b[i] : ' '); }",
    }[language]
    result, _ = run(sandbox, Program(language, source))
    # pid 1 is bwrap's init, or a warm run's (warm_init.c)
    init = (
        "livecode-init" if language == "python" and sandbox.measures()["warm_python"] else "bwrap"
    )
    assert result.status is ExecutionStatus.COMPLETED and init in result.stdout, result
    assert sandbox.work_root not in result.stdout and "/var/tmp" not in result.stdout, result


@pytest.mark.parametrize("language", ["python", "javascript", "c++", "python in a terminal"])
def test_mountinfo_names_no_host_path(sandbox: Sandbox, language: str) -> None:
    """A program reading /proc/self/mountinfo learns nothing of where the host keeps its
    sandboxes: no work root, binary cache or disk of ours; only /usr comes from a disk."""
    tty = language.endswith(" in a terminal")
    prog = program("mountinfo", language.removesuffix(" in a terminal"), tty=tty)
    if tty:
        result = sandbox.run(prog, FAST)
        assert_nothing_left(sandbox)
    else:
        result, _ = run(sandbox, prog)
    table = result.stdout.replace("\r\n", "\n")
    assert result.status is ExecutionStatus.COMPLETED and " /proc " in table, result
    for host_path in (sandbox.work_root, "/var/", "/home/", "/root", "livecode-runners", "/cache/"):
        assert host_path not in table
    for line in filter(None, table.splitlines()):
        fields, _, (fs_type, source, _options) = (part.split() for part in line.partition(" - "))
        root, mount_point = fields[3], fields[4]
        # A bind shows its source's path on that filesystem: at most one name deep here (the
        # prepared /dev in the host's devtmpfs, bwrap's own files), never a directory of ours.
        assert re.fullmatch(r"/[^/]*(//deleted)?", root), line
        if source.startswith("/dev/"):  # a block device: the toolchain's, and nothing else
            assert mount_point == "/usr", line


def test_compiler_messages_count_against_the_cache_bound(tmp_path: pathlib.Path) -> None:
    """Long compiler messages count against the C++ cache's size, and none is left orphaned."""
    # The messages are the user's to make long (warnings up to the output limit).
    cache = BinaryCache(str(tmp_path / "cache"), max_bytes=1 << 20)
    binary = tmp_path / "binary"
    binary.write_bytes(b"b" * (16 << 10))
    for index in range(30):
        os.unlink(cache.put(f"key-{index}", str(binary), "w" * (48 << 10)))
    held = sum(entry.stat().st_size for entry in os.scandir(cache.directory))
    assert held <= 1 << 20
    newest = cache.checkout("key-29")  # the newest is kept, with its messages
    assert newest is not None and newest[1] == "w" * (48 << 10)
    os.unlink(newest[0])
    (pathlib.Path(cache.directory) / "orphan.messages").write_text("left by a put cut short")
    os.unlink(cache.put("key-30", str(binary), ""))
    assert not (pathlib.Path(cache.directory) / "orphan.messages").exists()
    too_wordy = cache.put("key-31", str(binary), "w" * (1 << 20))  # over the entry cap
    os.unlink(too_wordy)
    assert cache.checkout("key-31") is None


def test_the_hosts_parts_of_proc_are_not_writable(sandbox: Sandbox) -> None:
    """No sysctl, nor sysrq, can be opened for writing, warm runs included (a warm run mounts
    its own /proc, and covers these read-only as bwrap's --proc does when it can)."""
    result, _ = run(sandbox, program("proc_readonly", "python"))
    assert result.status is ExecutionStatus.COMPLETED, result
    lines = result.stdout.splitlines()
    assert len(lines) == 5 and all(" refused " in line for line in lines), lines
