"""The spawner (built from spawner.c with gcc at Sandbox start), and both kinds of /dev (a
prepared directory bound as it is, and bwrap --dev as the fallback)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

import runners.host
import runners.spawner
from runners import (
    ExecutionStatus,
    Limits,
    Program,
    Reason,
    RunnerError,
    Sandbox,
    SandboxConfig,
    SandboxUnavailable,
)
from tests.runners.conftest import FAST, private_sandbox, requires_bwrap, run

pytestmark = requires_bwrap


@pytest.fixture(scope="module")
def bwrap_dev_sandbox() -> Iterator[Sandbox]:
    """A sandbox whose runs get bwrap --dev, as where /dev cannot be prepared (not root)."""
    work_root = tempfile.mkdtemp(dir="/var/tmp", prefix="livecode-runners-bwrapdev-")
    prepare_dev = runners.host.prepare_dev
    runners.host.prepare_dev = lambda: None
    try:
        with Sandbox(SandboxConfig(slots=1, work_root=work_root)) as sandbox:
            yield sandbox
    finally:
        runners.host.prepare_dev = prepare_dev
        shutil.rmtree(work_root, ignore_errors=True)


def test_the_spawner_is_built_with_gcc_and_used(sandbox: Sandbox) -> None:
    """Every slot runs the spawner compiled into the work root."""
    assert sandbox._spawner.startswith(sandbox.work_root) and os.access(sandbox._spawner, os.X_OK)
    spawners = [slot.spawner for slot in sandbox._pool.slots]
    assert all(s is not None and s.process.args[0] == sandbox._spawner for s in spawners)


def test_missing_gcc_refuses_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without gcc there is no spawner, hence no sandbox: the error says what to install."""
    monkeypatch.setattr(runners.spawner, "_GCC", "/nonexistent/gcc")
    work_root = tempfile.mkdtemp(dir="/var/tmp", prefix="livecode-runners-nogcc-")
    try:
        with pytest.raises(SandboxUnavailable, match="install gcc"):
            Sandbox(SandboxConfig(slots=1, work_root=work_root))
    finally:
        shutil.rmtree(work_root, ignore_errors=True)


def test_an_argument_with_a_nul_byte_is_refused(sandbox: Sandbox) -> None:
    """An argument holding a NUL byte is refused, and the slot runs the next program."""
    with pytest.raises(RunnerError, match="NUL"):
        sandbox.run(Program("python", "print(1)", args=("a\0b",)), FAST)
    assert run(sandbox, Program("python", "print('fine')"))[0].stdout == "fine\n"


DEV_PROGRAM = r"""
import os
print(sorted(os.listdir('/dev')))
print(len(open('/dev/urandom', 'rb').read(8)), len(open('/dev/random', 'rb').read(8)))
print(open('/dev/zero', 'rb').read(2), open('/dev/null', 'w').write('x'))
try:
    os.write(os.open('/dev/full', os.O_WRONLY), b'x')
except OSError as exc:
    print('full', exc.strerror)
for path in ('/dev/evil', '/dev/null.evil', '/dev/shm/x'):
    try:
        open(path, 'w').write('x')
        print(path, 'WRITTEN')
    except OSError as exc:
        print(path, exc.strerror)
try:
    os.chmod('/dev/null', 0o777)
    print('chmod WORKED')
except OSError as exc:
    print('chmod', exc.strerror)
import multiprocessing
multiprocessing.Lock()
print('lock ok')
"""


@pytest.mark.parametrize("kind", ["prepared", "bwrap --dev"])
def test_dev_has_what_programs_need(
    sandbox: Sandbox, bwrap_dev_sandbox: Sandbox, kind: str
) -> None:
    """A program finds the usual /dev devices and shared memory, and cannot change them."""
    box = sandbox if kind == "prepared" else bwrap_dev_sandbox
    assert box._bwrap is not None
    dev_dir = box._bwrap.dev_dir
    if kind == "prepared" and os.geteuid() == 0:
        assert dev_dir is not None
    result, _ = run(box, Program("python", DEV_PROGRAM))
    assert result.status is ExecutionStatus.COMPLETED, result
    lines = result.stdout.splitlines()
    names = set(eval(lines[0]))  # noqa: S307 - our own program's list
    assert {"null", "zero", "full", "random", "urandom", "fd", "stdin", "shm"} <= names
    assert lines[1:4] == ["8 8", "b'\\x00\\x00' 1", "full No space left on device"]
    assert "/dev/shm/x WRITTEN" in lines  # multiprocessing needs it (the run's /tmp)
    assert "chmod WORKED" not in lines and lines[-1] == "lock ok"
    if dev_dir is not None:  # bwrap's --dev is a writable tmpfs (charged to the memory cgroup)
        assert "/dev/evil WRITTEN" not in lines and "/dev/null.evil WRITTEN" not in lines
        info = os.stat(os.path.join(dev_dir, "null"))
        assert info.st_uid == 0 and info.st_mode & 0o777 == 0o666  # unchanged on the host
        assert os.readlink(os.path.join(dev_dir, "shm")) == "/tmp"


PAGE_CACHE_FILLER = """
import os
read = 0
for top in ("/usr/lib", "/usr/bin", "/usr/share", "/usr/libexec"):
    for folder, _, names in os.walk(top):
        for name in names:
            try:
                with open(os.path.join(folder, name), "rb", buffering=0) as file:
                    while chunk := file.read(1 << 20):
                        read += len(chunk)
            except OSError:
                pass
            if read > 512 << 20:
                raise SystemExit(print(read >> 20))
print(read >> 20)
"""
ALLOCATE_288_MB = (
    "const kept = []; for (let i = 0; i < 18; i++) kept.push(Buffer.alloc(16 << 20, 1));"
)


def test_page_cache_left_by_earlier_runs_does_not_raise_the_memory_limit() -> None:
    """Files read by earlier runs do not raise a later run's memory limit."""
    # Page cache is charged to the cgroup of the run that first read a file and stays charged
    # after it ends; counted as the spawner's own, it raised the next run's limit by as much.
    if os.geteuid() != 0:
        pytest.skip("the memory cgroup of a slot needs root")
    with private_sandbox(slots=1) as box:
        if not box.measures()["cgroup"]["memory"]:
            pytest.skip("no memory cgroup on this host")
        with open("/proc/sys/vm/drop_caches", "w") as drop:
            drop.write("1")  # so that the filler's reads are charged to the slot
        filled, _ = run(box, Program("python", PAGE_CACHE_FILLER), Limits(wall_timeout_s=30))
        assert filled.status == ExecutionStatus.COMPLETED and int(filled.stdout) > 300, filled
        for _ in range(2):
            limits = Limits(wall_timeout_s=10, memory_mb=128)
            result, _ = run(box, Program("javascript", ALLOCATE_288_MB), limits)
            # Killed at the limit, or (cgroup v1 reclaiming node's own code pages over and over
            # at the limit) held there until the timeout: never past it.
            assert result.reason in (Reason.MEMORY_LIMIT, Reason.TIMEOUT), result
