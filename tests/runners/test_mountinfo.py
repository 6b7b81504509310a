"""What a program learns of the host from /proc/self/mountinfo inside the sandbox.

Found (issue 11), in every language: the sandbox's /dev is a bind of a host directory, shown as
``<work root>/dev-<slot>``; a C++ program's binary is a bind from the binary cache, shown as
``<work root>/cache/.use-<id>`` on /box/main; with them the host's block device and its mount
options. A bind mount always shows its source path (relative to its filesystem's root). The fix
(runners/, being restructured elsewhere): bind nothing from a host path: bwrap's own ``--dev
/dev`` (about 0.5 ms a run more, sandbox.py measured), or the prepared /dev and the binary cache
kept on a tmpfs of their own, which mountinfo shows by its path inside that tmpfs (``/dev-2``,
never the work root); or the binary passed as data (``--ro-bind-data FD``) into /box.
"""

from __future__ import annotations

import pytest

from runners import Sandbox
from tests.runners.conftest import LANGUAGES, program, requires_bwrap, run

pytestmark = requires_bwrap


@pytest.mark.xfail(
    strict=True,
    reason="the sandbox's /dev (and a C++ binary) are binds of host paths under the work root, "
    "which mountinfo names (issue 11; the fix belongs to runners/)",
)
@pytest.mark.parametrize("language", LANGUAGES)
def test_mountinfo_names_no_host_path(sandbox: Sandbox, language: str) -> None:
    """A program reading /proc/self/mountinfo learns nothing of where the host keeps its
    sandboxes: neither the work root nor the binary cache appears."""
    result, _ = run(sandbox, program("mountinfo", language))
    assert "/proc" in result.stdout  # it did read the table
    assert sandbox.work_root not in result.stdout
    assert "/cache/" not in result.stdout
