"""Bus fixtures: ``bus`` parametrized over ``local`` and ``redis``, and the anyio backend.

Import the fixtures into a test module (``pytest_plugins`` is only allowed in the root
conftest)::

    from tests.conftest_bus import anyio_backend_fixture, bus_fixture  # noqa: F401

The ``*_fixture`` names keep ruff's F811 quiet about test arguments named ``bus``.

Redis is the tests' own redis-server (``tests.utils.private_redis_url``). Each test gets its
own key prefix, and its keys are deleted afterwards. When Redis is unreachable the test is
skipped, or failed when ``CI`` is set.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest
import redis

from livecode.bus import Bus
from livecode.bus.local import LocalBus
from livecode.bus.redis import RedisBus
from tests.utils import private_redis_url, require_service

__all__ = [
    "TIMEOUT_S",
    "anyio_backend_fixture",
    "bus_fixture",
    "redis_bus_fixture",
    "redis_url",
    "require_redis",
]

# The one unit every wait is scaled by; raise LIVECODE_TEST_TIMEOUT_S on a slow machine.
TIMEOUT_S = float(os.environ.get("LIVECODE_TEST_TIMEOUT_S") or 10)


@pytest.fixture(name="anyio_backend")
def anyio_backend_fixture() -> str:
    """Run the anyio-marked tests on asyncio only (the server's loop)."""
    return "asyncio"


def redis_url() -> str:
    """Return the Redis URL the tests use: their own server, or ``LIVECODE_TEST_REDIS_URL``."""
    return private_redis_url()


def require_redis() -> str:
    """Return the URL if Redis answers; else skip the test (fail it under ``CI``)."""
    url = redis_url()

    def ping() -> None:
        client = redis.Redis.from_url(url, socket_connect_timeout=3)
        try:
            client.ping()
        finally:
            client.close()

    require_service(f"Redis at {url}", ping)
    return url


@pytest.fixture(name="redis_bus")
def redis_bus_fixture() -> Iterator[RedisBus]:
    """A RedisBus with a key prefix of its own, whose keys are deleted afterwards."""
    url = require_redis()
    prefix = f"livecode:test:{secrets.token_hex(6)}:"
    bus = RedisBus(url, prefix=prefix)
    try:
        yield bus
    finally:
        bus.close()
        client = redis.Redis.from_url(url)
        try:
            keys = list(client.scan_iter(match=f"{prefix}*"))
            if keys:
                client.delete(*keys)
        finally:
            client.close()


@pytest.fixture(name="bus", params=["local", "redis"])
def bus_fixture(request: pytest.FixtureRequest) -> Iterator[Bus]:
    """A bus of each kind: in-process and Redis."""
    if request.param == "local":
        local = LocalBus()
        yield local
        local.close()
    else:
        yield request.getfixturevalue("redis_bus")
