"""Tenants: with tenant B's key, tenant A's sessions and executions do not exist, on every
route of the app, every WebSocket message and SSE; and nothing of A's changes."""

from __future__ import annotations

import re
import typing
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute

from livecode import auth, protocol
from livecode.app import create_app
from livecode.bus.local import LocalBus
from livecode.commands import Commands
from livecode.config import Settings
from livecode.queue import Queue
from livecode.ratelimit import LocalRateLimiter
from livecode.store import QUOTA_COLUMNS, Store
from livecode.tenants import QUOTA_NAMES
from runners import detect_languages
from tests.utils import (
    LiveServer,
    create_key,
    embedded_settings,
    run_server,
    wait_final,
    wait_status,
    ws_connect,
)

pytestmark = pytest.mark.anyio

# Waits for a line of stdin, so it stays RUNNING until its tenant sends one.
WAITS = "print('ready', flush=True)\nprint(input())"
# Routes with no id in their path, and why the walk need not try them with another's ids.
ROUTES_WITHOUT_IDS = {
    ("POST", "/code-sessions"): "creates the caller's own",
    ("POST", "/executions"): "creates the caller's own",
    ("GET", "/languages"): "the same for every tenant",
    ("GET", "/metrics"): "the server's counters: no session or execution of anyone's",
    ("POST", "/judge0/submissions"): "creates the caller's own",
    ("POST", "/judge0/submissions/batch"): "creates the caller's own",
    ("GET", "/judge0/submissions/batch"): "ids in ?tokens=: walked on its own below",
    ("GET", "/judge0/submissions"): "Judge0's admin list: 403 for everyone",
    ("GET", "/judge0/languages"): "the same for every tenant",
    ("GET", "/judge0/languages/all"): "the same for every tenant",
    ("GET", "/judge0/statuses"): "the same for every tenant",
    ("GET", "/judge0/about"): "the same for every tenant",
    ("GET", "/judge0/version"): "the same for every tenant",
    ("GET", "/judge0/config_info"): "the same for every tenant",
    ("POST", "/judge0/authenticate"): "says whether the key is good",
    ("POST", "/judge0/authorize"): "403 for everyone",
    ("GET", "/api/v2/runtimes"): "the same for every tenant",
    ("GET", "/api/v2/piston/runtimes"): "the same for every tenant",
    ("POST", "/api/v2/execute"): "creates the caller's own",
    ("POST", "/api/v2/piston/execute"): "creates the caller's own",
    ("GET", "/api/v2/packages"): "the same for every tenant",
    ("POST", "/api/v2/packages"): "400 for everyone: nothing to install",
    ("DELETE", "/api/v2/packages"): "400 for everyone: nothing to install",
}
# Path parameters that name no tenant's thing.
NOT_IDS = {"name": "a playground file", "language_id": "a Judge0 language", "path": "a catch-all"}
# Another tenant's execution, as the foreign APIs name it; what they answer for one not found.
COMPAT_IDS = {"token": "execution_id"}
COMPAT_REFUSALS = {403, 404}
# A valid value of each required field that is no id (so that only the owner check refuses).
VALID: dict[str, Any] = {"source_code": "print('B was here')", "cols": 100, "rows": 30}
# A body each method is tried with (a valid one, so that only the owner check can refuse it).
BODIES: dict[str, Any] = {"PATCH": {"source_code": "print('B was here')"}, "POST": {}}


class Tenants:
    def __init__(self, server: LiveServer, a: str, b: str) -> None:
        self.server, self.a, self.b = server, a, b
        with server.client(a) as client:
            self.session = client.post(
                "/code-sessions", json={"language": "python", "source_code": WAITS}
            ).json()
            self.finished = client.post(
                f"/code-sessions/{self.session['id']}/run?wait=true", json={"stdin": "x"}
            ).json()
            self.running = client.post(
                f"/code-sessions/{self.session['id']}/run", json={"interactive": True}
            ).json()
            wait_status(client, self.running["execution_id"], "RUNNING")

    def ids(self) -> dict[str, list[str]]:
        executions = [self.finished["execution_id"], self.running["execution_id"]]
        found = {"session_id": [self.session["id"]], "execution_id": executions}
        return found | {name: found[same] for name, same in COMPAT_IDS.items()}

    def snapshot(self) -> list[Any]:
        """What tenant A sees of its things."""
        with self.server.client(self.a) as client:
            return [
                client.get(f"/code-sessions/{self.session['id']}").json(),
                client.get(f"/executions/{self.finished['execution_id']}").json(),
                client.get(f"/executions/{self.running['execution_id']}").json()["status"],
                len(client.get(f"/executions/session/{self.session['id']}").json()),
            ]


@pytest.fixture(scope="module")
def tenants(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tenants]:
    """An embedded server with keys a and b; A has a session, a finished and a running
    execution."""
    settings = embedded_settings(tmp_path_factory)
    a = create_key(settings.database_url, "tenant-a")
    b = create_key(settings.database_url, "tenant-b")
    with run_server(settings) as server:
        found = Tenants(server, a, b)
        yield found
        with server.client(a) as client:  # let the interactive run end
            client.post(f"/executions/{found.running['execution_id']}/cancel")


def http_routes(routes: list[BaseRoute], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(method, path) of every HTTP route of the app, mounts included."""
    for route in routes:
        if isinstance(route, Route):
            for method in sorted((route.methods or set()) - {"HEAD"}):
                yield method, prefix + route.path
        elif isinstance(route, Mount):
            yield from http_routes(_mounted_routes(route), prefix + route.path)


def _mounted_routes(mount: Mount) -> list[BaseRoute]:
    """A mount's routes, also when its app wraps a router (the compat APIs do)."""
    if mount.routes:
        return list(mount.routes)
    app = mount.app
    while app is not None and not hasattr(app, "routes"):
        app = getattr(app, "app", None)
    if app is None:
        assert mount.name == "swagger-static", f"what does the mount {mount.path} serve?"
        return []
    return list(app.routes)


def test_every_route_answers_another_tenants_ids_with_404(tenants: Tenants) -> None:
    """Each route of the app, each method, each of A's ids, with B's key: 404 not_found; A's
    things are as they were."""
    before = tenants.snapshot()
    walked = 0
    app = create_app(Settings())
    with tenants.server.client(tenants.b) as client:
        for method, path in http_routes(app.routes):
            parameters = re.findall(r"{(\w+)(?::\w+)?}", path)
            names = [name for name in parameters if name not in NOT_IDS]
            if auth.is_public(path) or path.startswith("/docs/static"):
                continue
            if parameters and not names:
                continue  # it names no tenant's thing
            if not names:
                assert (method, path) in ROUTES_WITHOUT_IDS, f"{method} {path}: walk it too"
                continue
            assert set(names) <= set(tenants.ids()), f"{path}: which ids does it take?"
            for name in names:
                for value in tenants.ids()[name]:
                    url = re.sub(r"{\w+(?::\w+)?}", value, path)
                    answer = client.request(method, url, json=BODIES.get(method))
                    if name in COMPAT_IDS:  # the foreign API's own refusal, nothing of A's
                        assert answer.status_code in COMPAT_REFUSALS, (method, url, answer.text)
                        assert "ready" not in answer.text and WAITS not in answer.text
                    else:
                        assert answer.status_code == 404, (method, url, answer.text)
                        assert answer.json()["error"]["code"] == "not_found"
                    walked += 1
        # Judge0's batch read names its tokens in the query: another tenant's read as null.
        tokens = ",".join(tenants.ids()["execution_id"])
        batch = client.get("/judge0/submissions/batch", params={"tokens": tokens})
        assert batch.json() == {"submissions": [None, None]}, batch.text
    assert walked >= 14
    assert tenants.snapshot() == before


def _messages_with_ids() -> Iterator[type[BaseModel]]:
    for model in protocol.MESSAGE_MODELS:
        if {"session_id", "execution_id"} & set(model.model_fields):
            yield model


def _message(model: type[BaseModel], ids: dict[str, str]) -> dict[str, Any]:
    kind = typing.get_args(model.model_fields["type"].annotation)[0]
    message: dict[str, Any] = {"type": kind}
    for name, field in model.model_fields.items():
        if name in ids:
            message[name] = ids[name]
        elif field.is_required() and name != "type":
            assert name in VALID, f"{kind}.{name}: give the walk a valid value for it"
            message[name] = VALID[name]
    return message


async def test_every_message_answers_another_tenants_ids_with_not_found(
    tenants: Tenants,
) -> None:
    """Each WebSocket message naming a session or an execution, with B's key on A's ids:
    an error not_found; A's things are as they were and B's socket hears nothing of them."""
    before = tenants.snapshot()
    kinds = set()
    async with ws_connect(tenants.server, tenants.b) as ws:
        for model in _messages_with_ids():
            for finished in (True, False):
                ids = {
                    "session_id": tenants.session["id"],
                    "execution_id": tenants.finished["execution_id"]
                    if finished
                    else tenants.running["execution_id"],
                }
                message = _message(model, ids)
                answer = await ws.request(message)
                assert answer["type"] == "error" and answer["code"] == "not_found", (
                    message,
                    answer,
                )
                kinds.add(message["type"])
        # A saves: B's socket, which tried to open A's session, hears nothing of it.
        with tenants.server.client(tenants.a) as client:
            saved = client.patch(
                f"/code-sessions/{tenants.session['id']}", json={"source_code": WAITS}
            )
        assert saved.status_code == 200
        assert (await ws.request({"type": "ping"}))["type"] == "pong"
        with pytest.raises(TimeoutError):
            await ws.recv(timeout=0.5)  # the story: nothing arrives
    expected = {"open", "autosave", "run", "subscribe", "unsubscribe", "stdin", "resize", "cancel"}
    assert kinds == expected
    after = tenants.snapshot()
    assert after[1:] == before[1:] and after[0]["version"] == before[0]["version"] + 1


def test_lists_show_only_ones_own(tenants: Tenants) -> None:
    """B's own session lists B's executions only; A's list is A's."""
    with tenants.server.client(tenants.b) as client:
        session = client.post(
            "/code-sessions", json={"language": "python", "source_code": "print(1)"}
        ).json()
        execution = client.post(f"/code-sessions/{session['id']}/run").json()
        wait_final(client, execution["execution_id"])
        listed = client.get(f"/executions/session/{session['id']}").json()
    assert [e["execution_id"] for e in listed] == [execution["execution_id"]]
    with tenants.server.client(tenants.a) as client:
        ids = {
            e["execution_id"]
            for e in client.get(f"/executions/session/{tenants.session['id']}").json()
        }
    assert execution["execution_id"] not in ids and tenants.finished["execution_id"] in ids


async def test_a_late_follower_of_its_own_finished_execution_gets_every_event(
    tenants: Tenants,
) -> None:
    """A subscribing to its own finished execution gets its events, down to `finished`."""
    async with ws_connect(tenants.server, tenants.a) as ws:
        await ws.send({"type": "subscribe", "execution_id": tenants.finished["execution_id"]})
        events = await ws.until("finished", tenants.finished["execution_id"])
    assert events[-1]["stdout"] == "ready\nx\n"


def test_stored_events_read_whoever_owns_the_execution(tmp_path: Any) -> None:
    """commands.stored_events (the relay's store lookup) finds a tenant's final execution."""
    settings = Settings(database_url=f"sqlite:///{tmp_path / 's.db'}")
    store = Store.from_url(settings.database_url)
    store.create_tables()
    bus = LocalBus()
    commands = Commands(
        settings, store, bus, Queue(settings), LocalRateLimiter(), detect_languages()
    )
    try:
        execution = store.create_execution(
            session_id=None,
            language="python",
            source_code="print(1)",
            stdin=None,
            args=(),
            limits={},
            interactive=False,
            owner="tenant-a",
        )
        store.finish(
            execution.id, status="COMPLETED", reason="exit", stdout="1\n", chunks=[("stdout", 2)]
        )
        replayed = commands.stored_events(execution.id)
    finally:
        bus.close()
        store.close()
    assert replayed is not None and [e["type"] for e in replayed] == [
        "status",
        "output",
        "finished",
    ]


def test_quota_names_are_the_key_columns() -> None:
    """The quotas a key overrides are the api_keys columns of the same names."""
    assert QUOTA_NAMES == QUOTA_COLUMNS


def test_the_walk_knows_every_websocket_route() -> None:
    """A new WebSocket route needs its own cross-tenant test: /ws is walked above, and Piston's
    socket names no id (its job lives and dies with the socket)."""
    app = create_app(Settings())

    def sockets(routes: list[BaseRoute], prefix: str = "") -> Iterator[str]:
        for route in routes:
            if isinstance(route, WebSocketRoute):
                yield prefix + route.path
            elif isinstance(route, Mount):
                yield from sockets(_mounted_routes(route), prefix + route.path)

    assert sorted(sockets(app.routes)) == ["/api/v2/connect", "/ws"]
