"""The two caches in front of the bundle: the in-process LRU of raw vector bytes, and the Redis client the store
reads through (no retries of its own: the store's timeout and back-off decide).

    lru = Lru(100_000); lru.put((version, item), raw); lru.get((version, item))
    client = redis_client("redis://localhost:6379/0", timeout_s=0.02)
"""

from __future__ import annotations

from collections import OrderedDict

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff


def redis_client(url: str, timeout_s: float) -> aioredis.Redis:
    """An asyncio client without redis-py's own retries: the store's timeout and back-off decide instead."""
    return aioredis.from_url(
        url,
        socket_connect_timeout=max(timeout_s, 0.1),
        socket_timeout=max(timeout_s * 5, 0.5),
        retry=Retry(NoBackoff(), 0),
    )


class Lru:
    """(version, item) -> raw float32 bytes, least recently used evicted first. size 0 disables it."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._data: OrderedDict[tuple[str, str], bytes] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: tuple[str, str]) -> bytes | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: tuple[str, str], value: bytes) -> None:
        if self.size <= 0:
            return
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.size:
            self._data.popitem(last=False)
