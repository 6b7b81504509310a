"""Hostile programs in each language: each ends within its limit, contained, leaving nothing."""

from __future__ import annotations

import hashlib
import importlib.resources
import os
import pathlib
import re
import shutil
import socket
import stat
import tempfile
import time
from collections.abc import Iterator

import pytest

import runners.host
import runners.sandbox
from runners import (
    ExecutionStatus,
    Limits,
    Program,
    Reason,
    Sandbox,
    SandboxConfig,
    SandboxUnavailable,
)
from tests.runners.conftest import (
    FAST,
    LANGUAGES,
    SECRET,
    program,
    requires_bwrap,
    run,
    slot_processes,
)
from tests.utils import wait_until

pytestmark = requires_bwrap

SLACK_S = 3.0  # killing, reaping and interpreter start on a busy 2-core box


def _within(result_wall_ms: int, limits: Limits) -> bool:
    return result_wall_ms / 1000 <= limits.wall_timeout_s + SLACK_S


@pytest.fixture()
def listener() -> Iterator[socket.socket]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.setblocking(False)
    yield server
    server.close()


def test_measures_report_every_layer(sandbox: Sandbox) -> None:
    """An operator sees every isolation layer in use: namespaces, seccomp, slot uids, cgroups."""
    measures = sandbox.measures()
    assert measures["mode"] == "bwrap" and measures["bwrap"]
    assert set(measures["namespaces"]) == {"user", "pid", "net", "ipc", "uts", "mount"}
    assert measures["seccomp"] is True
    if os.geteuid() == 0:
        assert measures["uid_per_slot"] and measures["cgroup"]["memory"]
        assert all(uid and uid != 0 for uid in measures["slot_uids"])


def test_missing_bwrap_refuses_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without bwrap the sandbox does not start, and says that bwrap is missing."""
    monkeypatch.setattr(runners.sandbox.shutil, "which", lambda *a, **k: None)
    with pytest.raises(SandboxUnavailable, match="bwrap"):
        Sandbox(SandboxConfig())


@pytest.mark.parametrize("language", LANGUAGES)
def test_fork_bomb_is_contained(sandbox: Sandbox, language: str) -> None:
    """A fork bomb ends within its time limit, and the next program runs as usual."""
    limits = Limits(wall_timeout_s=2, max_processes=16, output_limit_bytes=4096)
    result, _ = run(sandbox, program("fork_bomb", language), limits)
    assert result.status in (ExecutionStatus.TIMEOUT, ExecutionStatus.FAILED), result
    assert result.reason in (Reason.TIMEOUT, Reason.RUNTIME_ERROR, Reason.MEMORY_LIMIT)
    assert _within(result.wall_time_ms, limits)
    assert run(sandbox, Program("python", "print('host fine')"))[0].stdout == "host fine\n"


@pytest.mark.parametrize("language", LANGUAGES)
def test_memory_bomb_hits_the_memory_limit(sandbox: Sandbox, language: str) -> None:
    """A program allocating without end fails at the memory limit, which the message names."""
    limits = Limits(wall_timeout_s=10, memory_mb=128, output_limit_bytes=16384)
    result, _ = run(sandbox, program("memory_bomb", language), limits)
    assert (result.status, result.reason) == (ExecutionStatus.FAILED, Reason.MEMORY_LIMIT), result
    assert result.message and "128 MB" in result.message


@pytest.mark.parametrize("language", LANGUAGES)
def test_infinite_loop_times_out(sandbox: Sandbox, language: str) -> None:
    """An endless loop times out at its wall time limit."""
    limits = Limits(wall_timeout_s=2)
    result, _ = run(sandbox, program("infinite_loop", language), limits)
    assert (result.status, result.reason) == (ExecutionStatus.TIMEOUT, Reason.TIMEOUT), result
    assert _within(result.wall_time_ms, limits)


@pytest.mark.parametrize("language", LANGUAGES)
def test_sleep_forever_with_stdout_closed_times_out(sandbox: Sandbox, language: str) -> None:
    """A program that closes its output and sleeps forever times out, saying after how long."""
    limits = Limits(wall_timeout_s=1.5)
    result, _ = run(sandbox, program("sleep_closed", language), limits)
    assert (result.status, result.reason) == (ExecutionStatus.TIMEOUT, Reason.TIMEOUT), result
    assert result.message == "Execution exceeded 1.5 second timeout"
    assert _within(result.wall_time_ms, limits)


def test_wall_timeout_at_a_whole_second_says_so(sandbox: Sandbox) -> None:
    """A timeout of one second is reported as '1 second', not '1.0 second'."""
    result, _ = run(
        sandbox, Program("python", "import time\ntime.sleep(60)"), Limits(wall_timeout_s=1)
    )
    assert result.status is ExecutionStatus.TIMEOUT
    assert result.message == "Execution exceeded 1 second timeout"


def test_a_busy_loop_ends_on_its_wall_timeout_not_its_cpu_limit(sandbox: Sandbox) -> None:
    """A program busy on its one core meets the wall timeout first, and says so: its CPU
    limit (RLIMIT_CPU, a backstop where there is no cgroup) is a second later. At the same
    second, the two raced, and which error a run got depended on scheduling."""
    source = (
        "import resource\nprint(resource.getrlimit(resource.RLIMIT_CPU), flush=True)\n"
        "while True: pass"
    )
    result, _ = run(sandbox, Program("python", source), Limits(wall_timeout_s=1))
    assert result.stdout == "(2, 3)\n", result
    assert (result.status, result.message) == (
        ExecutionStatus.TIMEOUT,
        "Execution exceeded 1 second timeout",
    ), result


@pytest.mark.parametrize("language", LANGUAGES)
def test_huge_files_stop_at_the_file_size_limit(sandbox: Sandbox, language: str) -> None:
    """Writing a huge file stops at the file size limit, and nothing reaches the host disk."""
    usage_before = os.statvfs(sandbox.work_root)
    prog = program("huge_file", language, args=("/tmp/big", "/box/big"))
    result, _ = run(sandbox, prog, Limits(wall_timeout_s=10))
    if language == "c++":  # C++ does not ignore SIGXFSZ
        assert (result.reason, result.signal) == (Reason.RUNTIME_ERROR, 25), result
    else:
        assert result.status is ExecutionStatus.COMPLETED, result
        assert "wrote 1 GiB" not in result.stdout
        assert result.stdout.count("stopped") == 2
    usage_after = os.statvfs(sandbox.work_root)
    grown = (usage_before.f_bavail - usage_after.f_bavail) * usage_after.f_frsize
    assert grown < 64 << 20  # nothing reached the host disk (other tests may write a little)


@pytest.mark.parametrize("language", LANGUAGES)
def test_no_network(sandbox: Sandbox, language: str, listener: socket.socket) -> None:
    """A program cannot connect anywhere, not even to a port open on the host."""
    port = listener.getsockname()[1]
    result, _ = run(sandbox, program("net", language, args=(str(port),)), Limits(wall_timeout_s=10))
    assert "CONNECTED" not in result.stdout
    assert result.stdout.count("blocked") == 2, result
    with pytest.raises(BlockingIOError):
        listener.accept()  # the host listener saw no connection


def test_network_namespace_is_not_the_hosts(sandbox: Sandbox) -> None:
    """A program has a network of its own, with a loopback interface only."""
    source = (
        "import os\n"
        "print(os.readlink('/proc/self/ns/net'))\n"
        "print(sorted(line.split(':')[0].strip() for line in open('/proc/net/dev')"
        " if ':' in line))"
    )
    result, _ = run(sandbox, Program("python", source))
    assert result.status is ExecutionStatus.COMPLETED, result
    inside, interfaces = result.stdout.splitlines()
    assert inside != os.readlink("/proc/self/ns/net")
    assert interfaces == "['lo']"


@pytest.mark.parametrize("language", LANGUAGES)
def test_host_files_and_processes_are_invisible(sandbox: Sandbox, language: str) -> None:
    """A program cannot read the host's files, secrets or processes; it sees only its own."""
    paths = ("/etc/shadow", "/root", "/work/main", "/work", "/home", "/proc/1/environ")
    result, _ = run(sandbox, program("secrets", language, args=paths))
    assert result.status is ExecutionStatus.COMPLETED, result
    for path in paths[:-1]:
        assert f"{path} denied" in result.stdout, result.stdout
    assert SECRET not in result.stdout
    assert os.environ["LIVECODE_TEST_SECRET"] == SECRET  # the secret was there to steal
    processes = int(result.stdout.rsplit("processes:", 1)[1])
    assert processes <= 3  # bwrap's pid 1 and the program (node may add nothing else)


def test_environment_is_empty_everywhere(sandbox: Sandbox) -> None:
    """A program sees none of the server's environment, in no process it can see."""
    source = (
        "import os, glob\n"
        "for path in glob.glob('/proc/[0-9]*/environ'):\n"
        "    try:\n"
        "        print(path, open(path, 'rb').read())\n"
        "    except PermissionError:\n"
        "        print(path, 'denied')\n"
        "print(sorted(os.environ))"
    )
    result, _ = run(sandbox, Program("python", source))
    assert result.status is ExecutionStatus.COMPLETED, result
    # pid 1: bwrap's init (nothing), or a warm run's, which is not dumpable
    assert re.search(r"^/proc/1/environ (b''|denied)$", result.stdout, re.M), result.stdout
    assert SECRET not in result.stdout and "DATABASE" not in result.stdout
    names = set(eval(result.stdout.splitlines()[-1]))  # noqa: S307 - our own program's list
    assert names <= {"HOME", "LANG", "LC_CTYPE", "PATH", "PWD"}


def test_filesystem_is_read_only(sandbox: Sandbox) -> None:
    """A program cannot write outside its own directories: the rest is read-only."""
    source = (
        "for path in ('/usr/evil', '/etc/evil', '/evil', '/opt/livecode/evil'):\n"
        "    try:\n"
        "        open(path, 'w')\n"
        "        print(path, 'WRITTEN')\n"
        "    except OSError as exc:\n"
        "        print(path, exc.strerror)\n"
    )
    result, _ = run(sandbox, Program("python", source))
    assert "WRITTEN" not in result.stdout and result.stdout.count("Read-only") == 4, result


def test_etc_files_are_ours_and_read_only(sandbox: Sandbox) -> None:
    """A program runs as nobody, sees no runtime files, and cannot change /etc."""
    source = (
        "import os, pwd, grp\n"
        "print(pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name)\n"
        "print(os.listdir('/opt/livecode'))\n"
        "for path in ('/etc/passwd', '/etc/group', '/etc/ld.so.cache'):\n"
        "    try:\n"
        "        open(path, 'a').write('x')\n"
        "        print(path, 'WRITTEN')\n"
        "    except OSError as exc:\n"
        "        print(path, exc.strerror)\n"
    )
    result, _ = run(sandbox, Program("python", source))
    assert result.status is ExecutionStatus.COMPLETED, result
    lines = result.stdout.splitlines()
    assert lines[:2] == ["nobody nogroup", "[]"]  # the runtime is bound for compiles only
    assert [line.split(" ", 1)[1] for line in lines[2:]] == ["Read-only file system"] * 3


def test_killing_the_parent_does_not_reach_the_host(sandbox: Sandbox) -> None:
    """A program killing its parent kills nothing of the host, and the next run works."""
    result, _ = run(sandbox, program("kill_parent", "python"))
    assert "still alive" in result.stdout
    assert run(sandbox, Program("python", "print('next run fine')"))[0].stdout == "next run fine\n"


@pytest.mark.parametrize("language", LANGUAGES)
def test_background_child_left_behind_is_killed(sandbox: Sandbox, language: str) -> None:
    """A program leaving a daemon behind finishes at once, and the daemon is killed."""
    started = time.monotonic()
    result, _ = run(sandbox, program("daemon", language), Limits(wall_timeout_s=10))
    assert result.status is ExecutionStatus.COMPLETED, result
    assert result.stdout == "parent done\n"
    assert time.monotonic() - started < 5  # the run did not wait for the daemon
    # run() already asserted that no process of a slot uid remains on the host


def test_setuid_bit_gives_nothing(sandbox: Sandbox) -> None:
    """A setuid binary makes a program no other user, and no setuid file is left behind."""
    result, _ = run(sandbox, program("setuid", "python"))
    assert result.status is ExecutionStatus.COMPLETED, result
    for line in result.stdout.splitlines():
        if line.startswith("/"):
            assert line.endswith(" 65534"), line  # nosuid: still nobody
    for path in pathlib.Path(sandbox.work_root).rglob("*"):
        if path.is_file() and not path.is_symlink():
            mode = path.lstat().st_mode
            assert not mode & (stat.S_ISUID | stat.S_ISGID), path


def test_process_limit(sandbox: Sandbox) -> None:
    """A program starting processes without end is stopped at its process limit."""
    limits = Limits(wall_timeout_s=5, max_processes=8)
    result, _ = run(sandbox, program("processes", "python"), limits)
    assert (result.status, result.reason) == (ExecutionStatus.FAILED, Reason.RUNTIME_ERROR), result
    assert "stopped after" in result.stdout
    assert int(result.stdout.split("stopped after ")[1].split()[0]) < 8


def test_compile_time_memory_bomb(sandbox: Sandbox) -> None:
    """A C++ source that makes the compiler eat memory fails to compile, or times out."""
    source = '#include "/dev/zero"\nint main() {}'
    limits = Limits(compile_timeout_s=10, compile_memory_mb=256)
    result, _ = run(sandbox, Program("c++", source), limits)
    assert result.status in (ExecutionStatus.FAILED, ExecutionStatus.TIMEOUT), result
    assert result.reason in (Reason.COMPILE_ERROR, Reason.TIMEOUT)


def test_runs_in_two_slots_do_not_share_a_process_budget(sandbox: Sandbox) -> None:
    """A fork bomb in one slot does not keep a program in another slot from starting processes."""
    import threading

    results = []
    bomb = program("fork_bomb", "python")

    def bomber() -> None:
        results.append(sandbox.run(bomb, Limits(wall_timeout_s=2, max_processes=16)))

    thread = threading.Thread(target=bomber)
    thread.start()
    # Its slot's uid runs all the processes it may: the budget another slot must not share.
    wait_until(lambda: len(slot_processes(sandbox)) >= 16, "the fork bomb has its 16 processes")
    source = (
        "import subprocess\n"
        "print(subprocess.run(['/usr/bin/echo', 'spawned'], capture_output=True, text=True).stdout,"
        " end='')"
    )
    result = sandbox.run(Program("python", source), FAST)
    thread.join()
    assert result.stdout == "spawned\n", result
    assert results[0].status in (ExecutionStatus.TIMEOUT, ExecutionStatus.FAILED)


@pytest.fixture()
def scratch_dir() -> Iterator[pathlib.Path]:
    path = pathlib.Path(tempfile.mkdtemp(dir="/var/tmp", prefix="livecode-test-root-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_work_root_another_user_could_have_filled_is_refused(
    scratch_dir: pathlib.Path,
) -> None:
    """A work root another user owns or could change is refused, and nothing in it is run."""
    # What the work root holds is trusted: the spawner is run (as root), the seccomp filter,
    # runtime and binary cache are used. One prepared by someone else must not be.
    if os.geteuid() != 0:
        pytest.skip("making a directory another user's needs root")
    planted = scratch_dir / "theirs"
    planted.mkdir()
    marker = scratch_dir / "ran"
    source = importlib.resources.files("runners").joinpath("spawner.c").read_bytes()
    digest = hashlib.sha256(source).hexdigest()[:16]
    spawner = planted / f"spawner-{digest}"  # the name under which the real one is kept
    spawner.write_text(f"#!/bin/sh\ntouch {marker}\n")
    spawner.chmod(0o755)
    os.chown(planted, 65534, 65534)
    writable = scratch_dir / "writable"
    writable.mkdir(mode=0o777)
    os.chmod(writable, 0o777)
    a_file = scratch_dir / "file"
    a_file.write_text("")
    into_theirs = scratch_dir / "into-theirs"
    into_theirs.symlink_to(planted)
    open_parent = scratch_dir / "open"
    open_parent.mkdir()
    os.chmod(open_parent, 0o777)  # writable by all, without the sticky bit of /tmp
    for work_root, complaint in (
        (planted, "must belong to uid 0"),
        (writable, "writable by it alone"),
        (a_file, "not a directory"),
        (into_theirs / "root", "which others may change"),
        (open_parent / "root", "which others may change"),
    ):
        with pytest.raises(SandboxUnavailable, match=complaint):
            Sandbox(SandboxConfig(slots=1, work_root=str(work_root)))
    assert not marker.exists()


def test_a_work_root_reached_through_a_symlink_is_used_by_its_real_path(
    scratch_dir: pathlib.Path,
) -> None:
    """A work root given through a symlink stays where it was when the symlink is re-pointed."""
    # A symlink someone else may re-point later must not decide where the spawner comes from.
    (scratch_dir / "mine").mkdir()
    (scratch_dir / "link").symlink_to(scratch_dir / "mine")
    with Sandbox(SandboxConfig(slots=1, work_root=str(scratch_dir / "link" / "root"))) as box:
        assert box.work_root == str(scratch_dir / "mine" / "root")
        (scratch_dir / "link").unlink()
        (scratch_dir / "link").symlink_to("/nowhere")
        assert run(box, Program("python", "print('still here')"))[0].stdout == "still here\n"


def test_the_default_work_root_is_private() -> None:
    """The default work root is not in a world-writable temporary directory."""
    root = runners.host.default_work_root(os.geteuid() == 0)
    assert not root.startswith(("/tmp", "/var/tmp", "/dev/shm"))
