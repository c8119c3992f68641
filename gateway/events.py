"""Visitors' recent events in Redis: what RecordEvent writes and recommend-by-user-id reads.

One list per visitor, ``recmesh:events:{user_id}``, newest first: LPUSH + LTRIM to the last 100 + a 30-day TTL,
sent as one pipeline (one round trip) and acknowledged before RecordEvent returns, so the very next
recommendation sees the event (read-your-writes). Reading a visitor's history is one LRANGE.

    store = EventStore.from_url("redis://localhost:6379/0")
    await store.record([Event("u1", "item42", "click", now_ms())])
    await store.recent_items("u1", timeout_s=0.05)   # ["item42"], oldest first
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

import orjson
import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from recmesh.publish import POINTER_KEY
from services.common.errors import InvalidArgument, Unavailable

KEY = "recmesh:events:{user_id}"
MAX_EVENTS = 100  # kept per visitor, newest first
TTL_S = 30 * 24 * 3600  # a visitor's history expires 30 days after their last event
MAX_FUTURE_MS = 24 * 3600 * 1000  # timestamps more than a day ahead are the caller's mistake
MAX_ID_LEN = 256
EVENT_TYPES = ("view", "click", "add_to_cart", "purchase")


class EventStoreUnavailable(Unavailable):
    """Redis could not be reached in time."""


@dataclass(frozen=True)
class Event:
    """One interaction. ``type`` is one of EVENT_TYPES; ``timestamp_ms`` is milliseconds since the epoch."""

    user_id: str
    item_id: str
    type: str = "view"
    timestamp_ms: int = 0
    session_id: str = ""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _check_id(name: str, value: str, required: bool) -> None:
    if required and not value:
        raise InvalidArgument(f"event {name} is required")
    if len(value) > MAX_ID_LEN:
        raise InvalidArgument(f"event {name} is {len(value)} characters long, at most {MAX_ID_LEN}")


def validate(event: Event, received_ms: int | None = None) -> Event:
    """The event with defaults filled in (type view, timestamp = received time); InvalidArgument if it is bad."""
    received_ms = now_ms() if received_ms is None else received_ms
    _check_id("user_id", event.user_id, required=True)
    _check_id("item_id", event.item_id, required=True)
    _check_id("session_id", event.session_id, required=False)
    kind = event.type or "view"
    if kind not in EVENT_TYPES:
        raise InvalidArgument(f"event type must be one of {', '.join(EVENT_TYPES)}, got {event.type!r}")
    ts = event.timestamp_ms or received_ms
    if ts < 0:
        raise InvalidArgument(f"event timestamp_ms must be >= 0 (0 = now), got {ts}")
    if ts > received_ms + MAX_FUTURE_MS:
        raise InvalidArgument(f"event timestamp_ms {ts} is more than a day in the future (server time {received_ms})")
    return Event(event.user_id, event.item_id, kind, ts, event.session_id)


def _encode(event: Event) -> bytes:
    return orjson.dumps(
        {
            "item_id": event.item_id,
            "type": event.type,
            "timestamp_ms": event.timestamp_ms,
            "session_id": event.session_id,
        }
    )


class EventStore:
    """Visitors' recent events in Redis (see the module docstring for the layout)."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    @classmethod
    def from_url(cls, url: str, timeout_ms: int = 50) -> EventStore:
        """A client that fails fast: socket timeouts of ``timeout_ms`` and one immediate retry, no backoff."""
        timeout_s = timeout_ms / 1000.0
        client = redis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 1),
        )
        return cls(client)

    async def record(self, events: Sequence[Event]) -> None:
        """Store validated events, in order, in one round trip; returns once Redis acknowledged them."""
        if not events:
            return
        pipe = self.redis.pipeline(transaction=False)
        for user in dict.fromkeys(e.user_id for e in events):
            key = KEY.format(user_id=user)
            pipe.lpush(key, *(_encode(e) for e in events if e.user_id == user))
            pipe.ltrim(key, 0, MAX_EVENTS - 1)
            pipe.expire(key, TTL_S)
        try:
            await pipe.execute()
        except (RedisError, OSError) as e:
            raise EventStoreUnavailable(f"redis unavailable: events not stored ({e})") from e

    async def recent_items(self, user_id: str, timeout_s: float) -> list[str]:
        """The visitor's recent item ids, oldest first (by timestamp, then arrival), at most MAX_EVENTS."""
        if timeout_s <= 0:
            raise EventStoreUnavailable("no time left to read the visitor's events")
        try:
            async with asyncio.timeout(timeout_s):
                raw = await self.redis.lrange(KEY.format(user_id=user_id), 0, MAX_EVENTS - 1)
        except (RedisError, OSError, TimeoutError) as e:
            raise EventStoreUnavailable(f"redis unavailable: visitor history not read ({type(e).__name__})") from e
        events = []
        for entry in reversed(raw):  # arrival order, oldest first
            try:
                events.append(orjson.loads(entry))
            except orjson.JSONDecodeError:
                continue  # not written by us: ignore rather than fail the recommendation
        events.sort(key=lambda e: e["timestamp_ms"])  # stable: equal timestamps keep arrival order
        return [e["item_id"] for e in events]

    async def published_version(self, timeout_s: float = 0.5) -> str | None:
        """The version ``recmesh publish`` pointed Redis at; None when unset. Raises EventStoreUnavailable."""
        try:
            async with asyncio.timeout(timeout_s):
                raw = await self.redis.get(POINTER_KEY)
        except (RedisError, OSError, TimeoutError) as e:
            raise EventStoreUnavailable(f"redis unavailable ({type(e).__name__})") from e
        return raw.decode() if isinstance(raw, bytes) else raw

    async def ping(self, timeout_s: float = 0.5) -> str:
        """ "PONG", or why Redis did not answer."""
        try:
            async with asyncio.timeout(timeout_s):
                await self.redis.ping()
        except (RedisError, OSError, TimeoutError) as e:
            return f"{type(e).__name__}: {e}"
        return "PONG"

    async def close(self) -> None:
        await self.redis.aclose()
