"""Visitors' recent events in Redis: what RecordEvent writes and recommend-by-user-id reads.

One list per visitor, ``recmesh:events:{user_id}``, newest first, at most ``keep`` (limits.DEFAULT_EVENTS_PER_VISITOR
by default) entries and a 30-day TTL (keys, TTLs and the entry codec: :mod:`recmesh.redis_layout`). A call's events
are written by one Lua script (one round trip, atomic): it checks every visitor's rate limit (a fixed one-second
window, ``recmesh:ratelimit:events:{user_id}:{second}``), and either stores the whole batch (LPUSH + LTRIM + EXPIRE,
and counts it) or stores nothing and says which visitor is over the limit. The write is acknowledged before
RecordEvent returns, so the very next recommendation sees the event (read-your-writes). Reading a visitor's history
is one LRANGE. The store also reads the version pointer ``recmesh publish`` sets (and re-seeds it, SET NX).

Durability and retries (docs/reliability.md): Redis acknowledges the script once it is in the AOF (the store runs
``appendfsync always``), so an acknowledged event survives a crash of Redis. A write that fails or times out is
UNAVAILABLE with a retry delay; the caller may retry it safely: an event equal to one already in the visitor's
list (same item, type, timestamp_ms and session_id) is not stored again. So an event sent with its own
``timestamp_ms`` is stored at most once however often it is retried.

    store = EventStore.from_url("redis://localhost:6379/0")
    await store.record([Event("u1", "item42", "click", now_ms())])   # validated events (gateway.events.validate)
    await store.history("u1", timeout_s=0.05)   # History(item_ids=["item42"], weights=[1.5]), oldest first
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.events import Event, parse_weights
from recmesh.redis_layout import (
    EVENTS_TTL_S,
    POINTER_KEY,
    RATE_WINDOW_TTL_S,
    decode_events,
    encode_event,
    events_key,
    rate_key,
)
from serving import limits
from serving.errors import ResourceExhausted, Unavailable

MIN_WRITE_TIMEOUT_S = 1.0  # a write waits at least this long for Redis' answer: never sent twice (see from_url)


class EventStoreUnavailable(Unavailable):
    """Redis could not be reached in time."""


class RateLimited(ResourceExhausted):
    """A visitor sent more events in one second than the limit allows; nothing of the call was stored."""

    retry_after_s = 1.0  # the limit's window is one wall-clock second


@dataclass(frozen=True)
class History:
    """A visitor's recent items, oldest first, with the weight of each event's type."""

    item_ids: list[str]
    weights: list[float]


# KEYS: per visitor, its list then its rate counter. ARGV: limit (0 = none), keep, ttl, window ttl, then per
# visitor the number of events n followed by its n encoded events (oldest first).
# Returns {1, events stored} when stored (a retried event already in the list is skipped: LPOS, at most `keep`
# entries to look at), {0, visitor's 1-based position, events already counted this second} when refused.
_RECORD = """
local limit, keep, ttl, window = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local users = #KEYS / 2
if limit > 0 then
  local pos = 5
  for u = 1, users do
    local n = tonumber(ARGV[pos])
    local used = tonumber(redis.call('GET', KEYS[2 * u]) or '0')
    if used + n > limit then return {0, u, used} end
    pos = pos + 1 + n
  end
end
local pos, stored = 5, 0
for u = 1, users do
  local n = tonumber(ARGV[pos])
  local fresh = {}
  for i = pos + 1, pos + n do
    -- against the list as it was before this call: equal events within one call are all stored
    if not redis.call('LPOS', KEYS[2 * u - 1], ARGV[i], 'MAXLEN', keep) then fresh[#fresh + 1] = ARGV[i] end
  end
  local first = 1
  while first <= #fresh do
    local upto = math.min(first + 999, #fresh)
    redis.call('LPUSH', KEYS[2 * u - 1], unpack(fresh, first, upto))
    first = upto + 1
  end
  stored = stored + #fresh
  redis.call('LTRIM', KEYS[2 * u - 1], 0, keep - 1)
  redis.call('EXPIRE', KEYS[2 * u - 1], ttl)
  if limit > 0 then
    redis.call('INCRBY', KEYS[2 * u], n)
    redis.call('EXPIRE', KEYS[2 * u], window)
  end
  pos = pos + 1 + n
end
return {1, stored}
"""

RETRY_AFTER_S = 1.0  # what a caller is told to wait after a failed write (Redis restarts within seconds)


class EventStore:
    """Visitors' recent events in Redis (see the module docstring for the layout).

    ``weights``: each event type's weight in the session vector; ``keep``: events kept per visitor;
    ``rate_limit``: events per visitor per second (0 = no limit; the gateway's EVENT_RATE_LIMIT defaults to
    limits.DEFAULT_EVENT_RATE_LIMIT, see :meth:`gateway.clients.Clients.open`)."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        writer: redis.Redis | None = None,
        weights: str | Mapping[str, float] = limits.DEFAULT_EVENT_WEIGHTS,
        keep: int = limits.DEFAULT_EVENTS_PER_VISITOR,
        rate_limit: int = 0,
    ) -> None:
        if keep < 1 or rate_limit < 0:
            raise ValueError(f"keep must be >= 1 and rate_limit >= 0, got {keep} and {rate_limit}")
        self.redis = client
        self.writer = writer or client
        self.weights = parse_weights(weights)
        self.keep = keep
        self.rate_limit = rate_limit
        self._record = self.writer.register_script(_RECORD)

    @classmethod
    def from_url(cls, url: str, timeout_ms: int = 50, **config: object) -> EventStore:
        """Reads fail fast: socket timeouts of ``timeout_ms`` and one immediate retry, no backoff. Writes get a
        client of their own that waits at least MIN_WRITE_TIMEOUT_S and retries only a connection that failed,
        never a timeout: a write Redis may have applied is not sent twice (events would be stored twice).
        ``config``: the constructor's keyword arguments."""
        timeout_s = timeout_ms / 1000.0
        reader = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 1)
        )
        writer = redis.Redis.from_url(
            url,
            socket_timeout=max(timeout_s, MIN_WRITE_TIMEOUT_S),
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        )
        return cls(reader, writer=writer, **config)  # type: ignore[arg-type]

    async def record(self, events: Sequence[Event]) -> None:
        """Store validated events, in order, in one round trip, all or none; returns once Redis acknowledged
        them. RateLimited when a visitor would exceed the limit (then nothing is stored)."""
        if not events:
            return
        by_user: dict[str, list[bytes]] = {}
        for e in events:
            by_user.setdefault(e.user_id, []).append(encode_event(e.item_id, e.type, e.timestamp_ms, e.session_id))
        second = int(time.time())
        keys: list[str] = []
        args: list[bytes | str | int] = [self.rate_limit, self.keep, EVENTS_TTL_S, RATE_WINDOW_TTL_S]
        for user, encoded in by_user.items():
            keys += [events_key(user), rate_key(user, second)]
            args += [len(encoded), *encoded]
        try:
            reply = await self._record(keys=keys, args=args)
        except (RedisTimeoutError, TimeoutError) as e:
            raise EventStoreUnavailable(
                f"redis did not answer in time: the events may or may not have been stored; retrying is safe for "
                f"events with their own timestamp_ms ({e})",
                retry_after_s=RETRY_AFTER_S,
            ) from e
        except (RedisError, OSError) as e:  # refused, reset, or a full store (noeviction: OOM): 503, never lost
            raise EventStoreUnavailable(
                f"redis unavailable: events not stored ({e})", retry_after_s=RETRY_AFTER_S
            ) from e
        if int(reply[0]) != 1:
            user = list(by_user)[int(reply[1]) - 1]
            sent, used = len(by_user[user]), int(reply[2])
            raise RateLimited(
                f"rate limit: user_id {user!r} may send {self.rate_limit} events per second; this call has {sent} "
                f"and {used} were already stored this second. Nothing of this call was stored; retry later"
            )

    async def history(self, user_id: str, timeout_s: float) -> History:
        """The visitor's recent items, oldest first (by timestamp, then arrival), at most ``keep``, with their
        event types' weights."""
        if timeout_s <= 0:
            raise EventStoreUnavailable("no time left to read the visitor's events")
        try:
            async with asyncio.timeout(timeout_s):
                raw = await self.redis.lrange(events_key(user_id), 0, self.keep - 1)
        except (RedisError, OSError, TimeoutError) as e:
            raise EventStoreUnavailable(f"redis unavailable: visitor history not read ({type(e).__name__})") from e
        entries = decode_events(raw)  # type: ignore[arg-type]  # bytes: the client does not decode responses
        view = self.weights["view"]
        return History(
            [e["item_id"] for e in entries],
            [self.weights.get(e.get("type", "view"), view) for e in entries],
        )

    async def recent_items(self, user_id: str, timeout_s: float) -> list[str]:
        """The visitor's recent item ids, oldest first (see :meth:`history`)."""
        return (await self.history(user_id, timeout_s)).item_ids

    async def published_version(self, timeout_s: float = 0.5) -> str | None:
        """The version ``recmesh publish`` pointed Redis at; None when unset. Raises EventStoreUnavailable."""
        try:
            async with asyncio.timeout(timeout_s):
                raw = await self.redis.get(POINTER_KEY)
        except (RedisError, OSError, TimeoutError) as e:
            raise EventStoreUnavailable(f"redis unavailable ({type(e).__name__})") from e
        return raw.decode() if isinstance(raw, bytes) else raw

    async def seed_published_version(self, version: str, timeout_s: float = 0.5) -> bool:
        """Set the pointer to ``version`` unless something set it meanwhile (SET NX: a concurrent publish wins);
        True when this call set it. Raises EventStoreUnavailable."""
        try:
            async with asyncio.timeout(timeout_s):
                return bool(await self.writer.set(POINTER_KEY, version, nx=True))
        except (RedisError, OSError, TimeoutError) as e:
            raise EventStoreUnavailable(f"redis unavailable ({type(e).__name__})") from e

    async def ping(self, timeout_s: float = 0.5) -> str:
        """ "PONG", or why Redis did not answer."""
        try:
            async with asyncio.timeout(timeout_s):
                await self.redis.ping()
        except (RedisError, OSError, TimeoutError) as e:
            return f"{type(e).__name__}: {e}"
        return "PONG"

    async def close(self) -> None:
        """Close both clients; bounded, so a Redis that never answers cannot hold up shutdown."""
        for client in {id(c): c for c in (self.redis, self.writer)}.values():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.aclose(), 2.0)
