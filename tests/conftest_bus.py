"""Bus fixtures: ``bus`` parametrized over ``local`` and ``redis``, and ``redis_bus``.

A plugin of the root conftest (``pytest_plugins``): a test names ``bus`` or ``redis_bus`` as an
argument.

Redis is the tests' own redis-server (``tests.utils.private_redis_url``). Each test gets its
own key prefix, and its keys are deleted afterwards. When Redis is unreachable the test is
skipped, or failed when ``CI`` is set.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
import redis

from livecode.bus import Bus
from livecode.bus.local import LocalBus
from livecode.bus.redis import RedisBus
from tests.utils import require_redis


@pytest.fixture
def redis_bus() -> Iterator[RedisBus]:
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


@pytest.fixture(params=["local", "redis"])
def bus(request: pytest.FixtureRequest) -> Iterator[Bus]:
    """A bus of each kind: in-process and Redis."""
    if request.param == "local":
        local = LocalBus()
        yield local
        local.close()
    else:
        yield request.getfixturevalue("redis_bus")
