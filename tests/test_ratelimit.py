"""The run rate and the stdin budget, in process and in real Redis."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from livecode.ratelimit import LocalRateLimiter, RateLimiter, RedisRateLimiter
from tests.utils import require_redis


@pytest.fixture(params=["local", "redis"])
def limiter(request: pytest.FixtureRequest) -> Iterator[RateLimiter]:
    if request.param == "local":
        yield LocalRateLimiter()
        return
    client = redis.Redis.from_url(require_redis())
    try:
        yield RedisRateLimiter(client)
    finally:
        client.close()


def fresh_key() -> str:
    return f"test:{uuid.uuid4().hex}"


def test_the_hit_over_the_limit_is_refused_with_the_wait(limiter: RateLimiter) -> None:
    key = fresh_key()
    assert [limiter.hit(key, 3, 60) for _ in range(3)] == [None] * 3
    wait = limiter.hit(key, 3, 60)
    assert wait is not None and 59 <= wait <= 60
    assert limiter.hit(fresh_key(), 3, 60) is None  # another key has its own count


def test_the_window_slides_instead_of_resetting_on_the_clock(limiter: RateLimiter) -> None:
    # Fixed windows aligned to the clock would let hits through again within this second.
    key = fresh_key()
    before = time.monotonic()
    assert [limiter.hit(key, 2, 1.0) for _ in range(2)] == [None, None]
    counted = time.monotonic()  # both hits were counted by now
    refusals = 0
    while time.monotonic() < before + 0.9:
        wait = limiter.hit(key, 2, 1.0)
        if time.monotonic() < before + 1.0:  # else a stall of the machine let the hits expire
            assert wait == 1.0  # refused, and refusals are not counted
            refusals += 1
        time.sleep(0.05)
    assert refusals >= 1
    time.sleep(max(0.0, counted + 1.1 - time.monotonic()))
    assert limiter.hit(key, 2, 1.0) is None


def test_the_window_frees_one_hit_at_a_time(limiter: RateLimiter) -> None:
    key = fresh_key()
    assert limiter.hit(key, 2, 1.0) is None
    first_done = time.monotonic()
    time.sleep(0.5)
    second_sent = time.monotonic()
    assert limiter.hit(key, 2, 1.0) is None
    time.sleep(max(0.0, first_done + 1.05 - time.monotonic()))
    assert limiter.hit(key, 2, 1.0) is None  # the first hit has left the window...
    refused = limiter.hit(key, 2, 1.0)
    if time.monotonic() < second_sent + 1.0:  # ...and the second has not
        assert refused is not None


def test_a_budget_is_spent_until_it_would_be_overdrawn(limiter: RateLimiter) -> None:
    key = fresh_key()
    assert limiter.spend(key, 600, 1000, 60)
    assert not limiter.spend(key, 500, 1000, 60)  # refused: nothing taken
    assert limiter.spend(key, 400, 1000, 60)
    assert not limiter.spend(key, 1, 1000, 60)
    assert limiter.spend(fresh_key(), 1000, 1000, 60)


def test_a_budget_is_forgotten_after_its_time(limiter: RateLimiter) -> None:
    key = fresh_key()
    first_sent = time.monotonic()
    assert not limiter.spend(key, 20, 10, 0.5)  # a first spend that is refused sets the time too
    first_done = time.monotonic()  # the budget's time was set between these two
    assert limiter.spend(key, 10, 10, 0.5)
    overdrawn = limiter.spend(key, 1, 10, 0.5)
    if time.monotonic() < first_sent + 0.5:  # else a stall of the machine reset it already
        assert not overdrawn
    time.sleep(max(0.0, first_done + 0.6 - time.monotonic()))
    assert limiter.spend(key, 10, 10, 0.5)


def test_redis_forgets_what_it_counted() -> None:
    client = redis.Redis.from_url(require_redis())
    try:
        limiter, key = RedisRateLimiter(client), fresh_key()
        limiter.hit(key, 5, 2.0)
        assert not limiter.spend(key, 20, 10, 2.0)
        assert 0 < client.pttl(f"livecode:rate:{key}") <= 2000
        assert 0 < client.pttl(f"livecode:spent:{key}") <= 2000
    finally:
        client.close()
