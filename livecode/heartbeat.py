"""Worker processes announce themselves in Redis: threads and sandbox measures, for health."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, cast

import redis

logger = logging.getLogger(__name__)

HEARTBEAT_EVERY_S = 5.0
HEARTBEAT_TTL_S = 15
HEARTBEAT_PREFIX = "livecode:worker:"


class Heartbeat:
    """A worker process announces itself (threads, sandbox measures) in Redis every few seconds."""

    def __init__(self, client: redis.Redis, describe: Callable[[], dict[str, Any]]) -> None:
        self.client = client
        self._describe = describe
        self.key = f"{HEARTBEAT_PREFIX}{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        try:
            self.client.delete(self.key)
        except redis.RedisError:
            pass

    def _beat(self) -> None:
        while True:
            try:
                report = {**self._describe(), "at": time.time()}
                self.client.set(self.key, json.dumps(report), ex=HEARTBEAT_TTL_S)
            except redis.RedisError as exc:
                logger.warning("heartbeat failed: %s", exc)
            if self._stop.wait(HEARTBEAT_EVERY_S):
                return


def live_workers(client: redis.Redis) -> list[dict[str, Any]]:
    """What every worker process announced in the last HEARTBEAT_TTL_S seconds."""
    keys = list(client.scan_iter(match=f"{HEARTBEAT_PREFIX}*", count=100))
    if not keys:
        return []
    values = cast(list[bytes | None], client.mget(keys))
    return [json.loads(raw) for raw in values if raw is not None]
