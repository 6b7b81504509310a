"""Foreign APIs, served for their unchanged clients (SPEC.md, "Compatibility").

Each speaks its own wire, status ids and error bodies, and each is an edge like rest.py: it
parses its requests once and calls the same commands, so a Judge0 submission or a Piston job
is a livecode execution like any other. Its rooms::

    judge0.py             Judge0 CE 1.13.1 under LIVECODE_JUDGE0_PREFIX (/judge0): the routes
    judge0_request.py     a submission request, validated as Judge0 does, and /config_info
    judge0_answer.py      an execution answered as a submission (statuses, fields, base64)
    judge0_languages.py   Judge0's language ids and the livecode languages they run
    piston.py             Piston v2 at /api/v2: runtimes, execute, packages
    piston_job.py         a Piston job: runtimes, the request as Piston checks it, its stages
    piston_connect.py     WS /api/v2/connect, Piston's interactive execution
    semver.py             the semver ranges Piston's clients send as a version
    runs.py               shared: a bounded body, waiting for a run's end, the program's output
    auth.py               who a request acts for (X-Auth-Token or Bearer): where keys plug in

``LIVECODE_COMPAT`` (``judge0,piston`` by default, or ``none``) says which are mounted.
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Mount, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from livecode.compat import judge0, piston
from livecode.config import Settings

__all__ = ["PISTON_PREFIX", "routes"]

PISTON_PREFIX = "/api/v2"


def routes(settings: Settings) -> list[BaseRoute]:
    """The mounts of the foreign APIs the settings enable."""
    mounts: list[BaseRoute] = []
    if "judge0" in settings.compat:
        mounts.append(Mount(settings.judge0_prefix, app=_router(judge0.routes)))
    if "piston" in settings.compat:
        mounts.append(Mount(PISTON_PREFIX, app=_router(piston.routes)))
    return mounts


def _router(routes: list[BaseRoute]) -> ASGIApp:
    return _WithoutTrailingSlash(Router(routes))


class _WithoutTrailingSlash:
    """Routes `/submissions/` as `/submissions`, as Rails and Express do (and their clients
    expect)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        root_path: str = scope.get("root_path", "")
        if path.endswith("/") and len(path) - len(root_path) > 1:
            scope = {**scope, "path": path.rstrip("/")}
        await self.app(scope, receive, send)
