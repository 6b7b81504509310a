"""What a container build or a `pip install` of the package gets: checked without a Docker engine."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from livecode.cli import build_parser
from tests.utils import REPO, TIMEOUT

DOCKER = Path(REPO) / "docker"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), REPO],
        check=True,
        timeout=TIMEOUT * 4,
        capture_output=True,
    )
    (built,) = out.glob("livecode-*.whl")
    return zipfile.ZipFile(built)


def tracked_package_data() -> set[str]:
    """Every file git tracks in the two packages that is not Python source."""
    listed = subprocess.run(
        ["git", "ls-files", "livecode", "runners"], cwd=REPO, capture_output=True, text=True
    ).stdout.split()
    return {name for name in listed if not name.endswith(".py")}


def test_wheel_carries_every_data_file(wheel: zipfile.ZipFile) -> None:
    """An installed livecode has its schema and every non-Python file of its packages."""
    names = set(wheel.namelist())
    data = tracked_package_data()
    assert "livecode/schema.sql" in data
    assert data <= names, f"missing from the wheel: {sorted(data - names)}"
    assert wheel.read("livecode/schema.sql") == (Path(REPO) / "schema.sql").read_bytes()


def test_dockerfile_copies_what_the_install_reads() -> None:
    """The image's `pip install` finds the lock, the packages and the schema it needs."""
    dockerfile = (DOCKER / "Dockerfile").read_text()
    copied = {
        source
        for line in dockerfile.splitlines()
        if line.startswith("COPY ")
        for source in line.split()[1:-1]
    }
    assert {"pyproject.toml", "requirements.lock", "README.md", "schema.sql"} <= copied
    assert {"livecode", "runners"} <= copied
    for source in copied:
        assert (Path(REPO) / source).exists(), source
    assert re.search(r"pip install .*-c requirements\.lock", dockerfile)


def test_compose_commands_are_livecode_commands() -> None:
    """Every command compose and the Procfile start is one the CLI accepts."""
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "init-db", "web", "worker"} <= set(services)
    for name in ("init-db", "web", "worker"):
        command = services[name]["command"]
        assert command[0] == "livecode"
        assert build_parser().parse_args(command[1:]).command == command[1], name
    for line in (Path(REPO) / "Procfile").read_text().splitlines():
        program, *args = line.split(":", 1)[1].replace("${PORT:-8000}", "8000").split()
        assert program == "livecode" and build_parser().parse_args(args).command == args[0]
    assert services["worker"]["privileged"] is True  # bwrap needs namespaces in a container
