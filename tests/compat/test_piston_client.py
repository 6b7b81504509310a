"""npm's piston-client (1.0.2), run by node, against /api/v2 unchanged.

It posts JSON as text/plain, sends -1 memory limits and default args, and picks the newest
version of the runtime whose name equals the language it is given.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.utils import TIMEOUT, LiveServer, missing_service

NODE_DIR = Path(__file__).parent / "node"


@pytest.fixture(scope="module")
def node_clients() -> Path:
    """tests/compat/node with its locked packages installed (npm ci, when the lock changed)."""
    npm, node = shutil.which("npm"), shutil.which("node")
    if npm is None or node is None:
        missing_service("node and npm are not installed (Debian: apt-get install nodejs npm)")
    installed = NODE_DIR / "node_modules" / ".package-lock.json"
    lock = NODE_DIR / "package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=10 * TIMEOUT,
            check=False,
        )
        if result.returncode != 0:
            missing_service(f"npm ci failed in {NODE_DIR}: {result.stderr[-2000:]}")
    return NODE_DIR


def test_piston_client(embedded_server: LiveServer, node_clients: Path) -> None:
    """runtimes() and execute() work as against Piston: python, javascript and c++ run,
    limits apply, and an unknown language comes back as Piston's message."""
    script = node_clients / "piston_client.mjs"
    result = subprocess.run(
        ["node", str(script), embedded_server.url],
        capture_output=True,
        text=True,
        timeout=4 * TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    answers: dict[str, Any] = json.loads(result.stdout)
    assert {runtime["language"] for runtime in answers["runtimes"]} == {
        "python",
        "javascript",
        "c++",
    }
    assert answers["python"]["run"]["stdout"] == "hello ['1', '2', '3']\n"  # its default args
    assert answers["javascript"]["run"]["stdout"] == "1+2+3\n"
    assert answers["cpp"]["compile"]["code"] == 0 and answers["cpp"]["run"]["stdout"] == "cpp\n"
    assert answers["timeout"]["run"]["status"] == "TO"
    assert answers["memory"]["run"]["stdout"] == "small\n"
    assert answers["unknown"] == {"message": "version is required as a string"}
