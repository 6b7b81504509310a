"""Per-session run rate and per-execution stdin budget; counted in Redis when distributed.

The rate is a sliding window: at most `limit` hits in any `window_s` seconds. Fixed windows
aligned to the clock let twice the limit through across a boundary (10 runs at 12:00:59 and
10 more at 12:01:00), which is not what "10 runs a minute" promises.
"""

from __future__ import annotations

import collections
import math
import threading
import time
import uuid
from collections.abc import Callable
from typing import Protocol

import redis

from livecode.errors import unavailable_on

# Seconds on a clock that only moves forward; tests pass a fake one to drive the windows.
Clock = Callable[[], float]


class RateLimiter(Protocol):
    def hit(self, key: str, limit: int, window_s: float) -> float | None:
        """Count one use of `key`; None when within `limit` uses in the last `window_s`
        seconds, else the seconds until one more would be let through. A refused hit is not
        counted."""

    def spend(self, key: str, amount: int, budget: int, ttl_s: float) -> bool:
        """Take `amount` from `key`'s `budget` (forgotten `ttl_s` after its first use); False,
        taking nothing, when that would overdraw it."""


class LocalRateLimiter:
    """In-process counters for embedded mode, timed by `clock`. Thread-safe."""

    def __init__(self, *, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._hits: dict[str, collections.deque[float]] = {}
        self._spent: dict[str, tuple[int, float]] = {}  # key -> (spent, forget at)

    def hit(self, key: str, limit: int, window_s: float) -> float | None:
        now = self._clock()
        with self._lock:
            if len(self._hits) > 10_000:  # forget idle keys now and then
                self._hits = {k: h for k, h in self._hits.items() if h and h[-1] > now - window_s}
            hits = self._hits.setdefault(key, collections.deque())
            while hits and hits[0] <= now - window_s:
                hits.popleft()
            if len(hits) >= limit:
                return _seconds(hits[len(hits) - limit] + window_s - now)
            hits.append(now)
            return None

    def spend(self, key: str, amount: int, budget: int, ttl_s: float) -> bool:
        now = self._clock()
        with self._lock:
            if len(self._spent) > 10_000:
                self._spent = {k: v for k, v in self._spent.items() if v[1] > now}
            spent, forget_at = self._spent.get(key, (0, now + ttl_s))
            if forget_at <= now:
                spent, forget_at = 0, now + ttl_s
            if spent + amount > budget:
                return False
            self._spent[key] = (spent + amount, forget_at)
            return True


# A sorted set of hit times per key, in ms of Redis's clock so that every server agrees on it
# (or of the clock given as ARGV[4]).
_HIT = """
local now = tonumber(ARGV[4])
if not now then
  local now_t = redis.call('TIME')
  now = tonumber(now_t[1]) * 1000 + math.floor(tonumber(now_t[2]) / 1000)
end
local limit, window = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
if count >= limit then
  local freeing = redis.call('ZRANGE', KEYS[1], count - limit, count - limit, 'WITHSCORES')
  return tonumber(freeing[2]) + window - now
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], window)
return -1
"""

_SPEND = """
local spent = redis.call('INCRBY', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
if spent > tonumber(ARGV[2]) then
  redis.call('DECRBY', KEYS[1], ARGV[1])
  return 0
end
return 1
"""


class RedisRateLimiter:
    """Counters shared by every server, each check one atomic script.

    Hits are timed by Redis's own clock, unless a `clock` is given (tests drive the window with
    a fake one). A budget is forgotten by Redis's key expiry, always in Redis's time.
    """

    def __init__(self, client: redis.Redis, *, clock: Clock | None = None) -> None:
        self._clock = clock
        self._hit = client.register_script(_HIT)
        self._spend = client.register_script(_SPEND)

    def hit(self, key: str, limit: int, window_s: float) -> float | None:
        with unavailable_on(
            redis.RedisError, message="rate counters (Redis) unavailable", retry_after=5.0
        ):
            args: list[int | str] = [limit, int(window_s * 1000), uuid.uuid4().hex]
            if self._clock is not None:
                args.append(int(self._clock() * 1000))
            wait_ms = int(self._hit(keys=[f"livecode:rate:{key}"], args=args))
        return None if wait_ms < 0 else _seconds(wait_ms / 1000)

    def spend(self, key: str, amount: int, budget: int, ttl_s: float) -> bool:
        with unavailable_on(
            redis.RedisError, message="stdin counters (Redis) unavailable", retry_after=5.0
        ):
            return bool(
                self._spend(
                    keys=[f"livecode:spent:{key}"], args=[amount, budget, int(ttl_s * 1000)]
                )
            )


def _seconds(wait_s: float) -> float:
    """A wait as Retry-After gives it: whole seconds, at least one."""
    return max(1.0, float(math.ceil(wait_s)))
