"""The run rate and the stdin budget, in process and in real Redis, on a clock the test moves."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from livecode.ratelimit import LocalRateLimiter, RateLimiter, RedisRateLimiter
from tests.utils import require_redis


class FakeClock:
    """Seconds that pass only when the test says so."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    # Whole quarters of a second from a whole second: every sum the tests make is exact.
    return FakeClock()


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(require_redis())
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(params=["local", "redis"])
def limiter(request: pytest.FixtureRequest, clock: FakeClock) -> RateLimiter:
    if request.param == "local":
        return LocalRateLimiter(clock=clock)
    return RedisRateLimiter(request.getfixturevalue("redis_client"), clock=clock)


def fresh_key() -> str:
    return f"test:{uuid.uuid4().hex}"


def test_the_hit_over_the_limit_is_refused_with_the_wait(limiter: RateLimiter) -> None:
    """The run over a session's limit is refused and told how long to wait; another session is
    not held back."""
    key = fresh_key()
    assert [limiter.hit(key, 3, 60) for _ in range(3)] == [None] * 3
    assert limiter.hit(key, 3, 60) == 60.0
    assert limiter.hit(fresh_key(), 3, 60) is None


def test_the_window_slides_instead_of_resetting_on_the_clock(
    limiter: RateLimiter, clock: FakeClock
) -> None:
    """Two runs just before a whole second use up the next second too: the count does not start
    again at the whole second, as fixed windows would let it."""
    key = fresh_key()
    clock.advance(0.75)
    assert [limiter.hit(key, 2, 1.0) for _ in range(2)] == [None, None]
    clock.advance(0.5)  # past the whole second
    assert limiter.hit(key, 2, 1.0) == 1.0
    clock.advance(0.25)
    assert limiter.hit(key, 2, 1.0) == 1.0  # the refused runs were not counted: ...
    clock.advance(0.25)
    assert limiter.hit(key, 2, 1.0) is None  # ... a second after the two, one goes through


def test_the_window_frees_one_hit_at_a_time(limiter: RateLimiter, clock: FakeClock) -> None:
    """Each run leaves the window a whole window after it was let through, and the wait a
    refused run is told is until the next one leaves."""
    key = fresh_key()
    for _ in range(3):
        assert limiter.hit(key, 3, 60) is None
        clock.advance(10)
    assert limiter.hit(key, 3, 60) == 30.0  # at 30 s: the first leaves at 60 s
    clock.advance(29.75)
    assert limiter.hit(key, 3, 60) == 1.0  # waits are whole seconds, at least one
    clock.advance(0.25)
    assert limiter.hit(key, 3, 60) is None  # the first has left...
    assert limiter.hit(key, 3, 60) == 10.0  # ...and the second leaves at 70 s


def test_a_budget_is_spent_until_it_would_be_overdrawn(limiter: RateLimiter) -> None:
    """Interactive stdin is taken from one budget per execution; what would overdraw it is
    refused whole, and what is left can still be sent."""
    key = fresh_key()
    assert limiter.spend(key, 600, 1000, 60)
    assert not limiter.spend(key, 500, 1000, 60)  # refused: nothing taken
    assert limiter.spend(key, 400, 1000, 60)
    assert not limiter.spend(key, 1, 1000, 60)
    assert limiter.spend(fresh_key(), 1000, 1000, 60)


def test_a_budget_is_forgotten_after_its_time(clock: FakeClock) -> None:
    """A spent budget is whole again once its time since the first spend has passed."""
    limiter, key = LocalRateLimiter(clock=clock), fresh_key()
    assert limiter.spend(key, 10, 10, 0.5)
    clock.advance(0.25)
    assert not limiter.spend(key, 1, 10, 0.5)
    clock.advance(0.25)
    assert limiter.spend(key, 10, 10, 0.5)
    assert not limiter.spend(key, 1, 10, 0.5)  # a new time starts with that spend


def test_redis_times_hits_by_its_own_clock(redis_client: redis.Redis) -> None:
    """Without a clock given, every server counts a session's runs in Redis's time."""
    limiter, key = RedisRateLimiter(redis_client), fresh_key()
    assert [limiter.hit(key, 2, 60) for _ in range(2)] == [None, None]
    wait = limiter.hit(key, 2, 60)
    assert wait is not None and 59 <= wait <= 60  # whole seconds: 60 unless a second passed


def test_redis_forgets_a_budget_in_its_own_time(redis_client: redis.Redis) -> None:
    """A spent stdin budget kept in Redis is whole again once its time has passed."""
    limiter, key = RedisRateLimiter(redis_client), fresh_key()
    assert limiter.spend(key, 10, 10, 0.2)
    time.sleep(0.3)  # Redis's key expiry is what is tested: its clock cannot be faked
    assert limiter.spend(key, 10, 10, 0.2)


def test_redis_forgets_what_it_counted(redis_client: redis.Redis) -> None:
    """Redis keeps no counter of a session or execution longer than its window or budget time,
    even a refused spend's."""
    limiter, key = RedisRateLimiter(redis_client), fresh_key()
    limiter.hit(key, 5, 2.0)
    assert not limiter.spend(key, 20, 10, 2.0)
    assert 0 < redis_client.pttl(f"livecode:rate:{key}") <= 2000
    assert 0 < redis_client.pttl(f"livecode:spent:{key}") <= 2000
