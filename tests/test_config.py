"""Settings: read from LIVECODE_* once; a bad value stops the process naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from livecode.cli import is_loopback
from livecode.config import ConfigError, Settings, usable_cpus
from tests.utils import TIMEOUT


def test_defaults_are_embedded_mode() -> None:
    """With no variable set, the server runs embedded on 127.0.0.1:8000 with the SPEC's limits."""
    settings = Settings.from_env({})
    assert settings.database_url == "sqlite:///./livecode.db"
    assert settings.redis_url is None and not settings.is_distributed
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert (settings.wall_timeout_s, settings.memory_mb, settings.output_limit_bytes) == (
        30,
        256,
        102400,
    )
    assert (settings.runs_per_minute, settings.runs_per_session, settings.queue_cap) == (
        10,
        100,
        1000,
    )
    assert settings.worker_threads == 2 * usable_cpus()  # two executions per usable core


def test_variables_and_plain_urls() -> None:
    """DATABASE_URL and REDIS_URL as hosting platforms give them are understood, as LIVECODE_*."""
    settings = Settings.from_env(
        {
            "DATABASE_URL": "postgres://u@db:5432/live",
            "REDIS_URL": "redis://cache:6379/0",
            "LIVECODE_WALL_TIMEOUT_S": "2.5",
            "LIVECODE_ALLOWED_ORIGINS": "https://a.example, https://b.example",
            "LIVECODE_WORKER_THREADS": "3",
        }
    )
    assert settings.database_url == "postgresql+psycopg://u@db:5432/live"
    assert settings.is_distributed
    assert settings.wall_timeout_s == 2.5 and settings.worker_threads == 3
    assert settings.warm_python  # warm start is on unless turned off
    assert not Settings.from_env({"LIVECODE_WARM_PYTHON": "false"}).warm_python
    assert settings.allowed_origins == ("https://a.example", "https://b.example")


def test_livecode_variables_win_and_flags_win_over_them() -> None:
    """A LIVECODE_ variable wins over the plain one, and a command-line flag over both."""
    environ = {
        "DATABASE_URL": "sqlite:///a.db",
        "LIVECODE_DATABASE_URL": "sqlite:///b.db",
        "LIVECODE_PORT": "9000",
    }
    settings = Settings.from_env(environ, port=9100, host=None)
    assert settings.database_url == "sqlite:///b.db"
    assert settings.port == 9100 and settings.host == "127.0.0.1"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("LIVECODE_PORT", "eighty"),
        ("LIVECODE_MEMORY_MB", "0"),
        ("LIVECODE_WALL_TIMEOUT_S", "-1"),
        ("LIVECODE_SANDBOX", "docker"),
        ("LIVECODE_DATABASE_URL", "mysql://x"),
        ("LIVECODE_REDIS_URL", "http://x"),
        ("LIVECODE_WARM_PYTHON", "perhaps"),
        ("LIVECODE_WARM_PYTHON_RUNS", "0"),
        ("LIVECODE_WARM_PYTHON_AGE_S", "0"),
    ],
)
def test_bad_values_name_the_variable(variable: str, value: str) -> None:
    """A bad value is refused, naming the variable to fix."""
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env({variable: value})


def test_cli_stops_on_a_bad_value() -> None:
    """`livecode serve` with a bad value exits with status 2, naming the variable."""
    process = subprocess.run(
        [sys.executable, "-m", "livecode", "serve"],
        env={"LIVECODE_OUTPUT_LIMIT_BYTES": "lots", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert process.returncode == 2
    assert "LIVECODE_OUTPUT_LIMIT_BYTES" in process.stderr


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.mark.parametrize(
    ("cgroup", "files", "quota_cpus"),
    [
        ("0::/box\n", {"sys/fs/cgroup/box/cpu.max": "150000 100000\n"}, 2),
        ("0::/box\n", {"sys/fs/cgroup/box/cpu.max": "max 100000\n"}, None),
        (
            "2:cpuacct:/\n1:cpu:/box\n",
            {
                "sys/fs/cgroup/cpu/box/cpu.cfs_quota_us": "100000\n",
                "sys/fs/cgroup/cpu/box/cpu.cfs_period_us": "100000\n",
            },
            1,
        ),
        (
            "1:cpu,cpuacct:/\n",
            {
                "sys/fs/cgroup/cpu/cpu.cfs_quota_us": "-1\n",
                "sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000\n",
            },
            None,
        ),
    ],
)
def test_usable_cpus_respects_a_container_cpu_quota(
    tmp_path: Path, cgroup: str, files: dict[str, str], quota_cpus: int | None
) -> None:
    """A container's CPU quota (cgroup v2 or v1) caps the count; no quota leaves the affinity."""
    write(tmp_path / "proc/self/cgroup", cgroup)
    for name, text in files.items():
        write(tmp_path / name, text)
    affinity = len(os.sched_getaffinity(0))
    expected = affinity if quota_cpus is None else min(affinity, quota_cpus)
    assert usable_cpus(str(tmp_path)) == expected


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("localhost", True), ("::1", True), ("0.0.0.0", False), ("::", False)],
)
def test_serving_beyond_loopback_is_told_apart(host: str, loopback: bool) -> None:
    """Loopback addresses are told apart from addresses others can reach."""
    assert is_loopback(host) is loopback
