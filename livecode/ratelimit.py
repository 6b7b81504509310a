"""Per-session run rate: fixed one-minute windows, counted in Redis when distributed."""

from __future__ import annotations

import math
import threading
import time
from typing import Protocol

import redis

from livecode.errors import unavailable_on


class RateLimiter(Protocol):
    def hit(self, key: str, limit: int, window_s: int, amount: int = 1) -> float | None:
        """Count `amount` uses of `key`; None when within `limit`, else seconds to wait.

        A refused hit is not counted.
        """


class LocalRateLimiter:
    """In-process counters for embedded mode. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, int], int] = {}

    def hit(self, key: str, limit: int, window_s: int, amount: int = 1) -> float | None:
        now = time.time()
        window = int(now // window_s)
        with self._lock:
            if len(self._counts) > 10_000:  # forget finished windows now and then
                self._counts = {k: v for k, v in self._counts.items() if k[1] >= window}
            count = self._counts.get((key, window), 0)
            if count + amount > limit:
                return _retry_after(now, window, window_s)
            self._counts[(key, window)] = count + amount
            return None


class RedisRateLimiter:
    """Counters shared by every server: INCR on a key that expires with its window."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client

    def hit(self, key: str, limit: int, window_s: int, amount: int = 1) -> float | None:
        now = time.time()
        window = int(now // window_s)
        name = f"livecode:rate:{key}:{window}"
        with unavailable_on(
            redis.RedisError, message="rate counters (Redis) unavailable", retry_after=5.0
        ):
            pipe = self._client.pipeline()
            pipe.incrby(name, amount)
            pipe.expire(name, window_s + 1)
            count, _ = pipe.execute()
            if int(count) > limit:
                self._client.decrby(name, amount)  # a refused hit is not counted
                return _retry_after(now, window, window_s)
        return None


def _retry_after(now: float, window: int, window_s: int) -> float:
    return max(1.0, math.ceil((window + 1) * window_s - now))
