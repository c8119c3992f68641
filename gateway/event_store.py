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

A/B experiments: an event whose ``session_id`` is an experiment's recommendation id
(:func:`recmesh.experiments.attribution.parse_recommendation_id`) is attributed to its variant by the same script:
HINCRBY ``{variant}:{type}`` on the experiment's counts hash, for the events it stored only (so a retry counts
once), and the store counts them in ``recmesh_experiment_events_total`` (gateway.experiment_counts).

    store = EventStore.from_url("redis://localhost:6379/0")
    await store.record([Event("u1", "item42", "click", now_ms())])   # validated events (gateway.events.validate)
    await store.history("u1", timeout_s=0.05)   # History(item_ids=["item42"], weights=[1.5]), oldest first
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.events import Event, parse_weights
from gateway.experiment_counts import DEFAULT_METRICS, ExperimentMetrics
from recmesh.experiments.attribution import counts_field, parse_recommendation_id
from recmesh.redis_layout import (
    EVENTS_TTL_S,
    POINTER_KEY,
    RATE_WINDOW_TTL_S,
    decode_events,
    encode_event,
    events_key,
    experiment_counts_key,
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


# KEYS: per visitor, its list then its rate counter; then the experiments' counts hashes. ARGV: limit (0 = none),
# keep, ttl, window ttl, the number of visitors, the number of attribution groups g, then per group the KEYS index
# of its counts hash and its field ({variant}:{type}), then per visitor the number of events n followed by n pairs
# (encoded event, its group or 0 when it is not attributed), oldest first.
# Returns {1, events stored, {per group: events stored}} when stored (a retried event already in the list is
# skipped: LPOS, at most `keep` entries to look at, and not attributed again), {0, visitor's 1-based position,
# events already counted this second} when refused.
_RECORD = """
local limit, keep, ttl, window = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local users, groups = tonumber(ARGV[5]), tonumber(ARGV[6])
local first = 7 + 2 * groups
if limit > 0 then
  local pos = first
  for u = 1, users do
    local n = tonumber(ARGV[pos])
    local used = tonumber(redis.call('GET', KEYS[2 * u]) or '0')
    if used + n > limit then return {0, u, used} end
    pos = pos + 1 + 2 * n
  end
end
local counted = {}
for g = 1, groups do counted[g] = 0 end
local pos, stored = first, 0
for u = 1, users do
  local n = tonumber(ARGV[pos])
  local fresh = {}
  for i = pos + 1, pos + 2 * n, 2 do
    -- against the list as it was before this call: equal events within one call are all stored
    if not redis.call('LPOS', KEYS[2 * u - 1], ARGV[i], 'MAXLEN', keep) then
      fresh[#fresh + 1] = ARGV[i]
      local g = tonumber(ARGV[i + 1])
      if g > 0 then counted[g] = counted[g] + 1 end
    end
  end
  local from = 1
  while from <= #fresh do
    local upto = math.min(from + 999, #fresh)
    redis.call('LPUSH', KEYS[2 * u - 1], unpack(fresh, from, upto))
    from = upto + 1
  end
  stored = stored + #fresh
  redis.call('LTRIM', KEYS[2 * u - 1], 0, keep - 1)
  redis.call('EXPIRE', KEYS[2 * u - 1], ttl)
  if limit > 0 then
    redis.call('INCRBY', KEYS[2 * u], n)
    redis.call('EXPIRE', KEYS[2 * u], window)
  end
  pos = pos + 1 + 2 * n
end
for g = 1, groups do
  if counted[g] > 0 then redis.call('HINCRBY', KEYS[tonumber(ARGV[5 + 2 * g])], ARGV[6 + 2 * g], counted[g]) end
end
return {1, stored, counted}
"""

RETRY_AFTER_S = 1.0  # what a caller is told to wait after a failed write (Redis restarts within seconds)


class EventStore:
    """Visitors' recent events in Redis (see the module docstring for the layout).

    ``weights``: each event type's weight in the session vector; ``keep``: events kept per visitor;
    ``rate_limit``: events per visitor per second (0 = no limit; the gateway's EVENT_RATE_LIMIT defaults to
    limits.DEFAULT_EVENT_RATE_LIMIT, see :meth:`gateway.clients.Clients.open`); ``attribute``: a session id ->
    the (experiment, variant) to attribute its event to, or None (by default any well-formed recommendation id;
    the gateway may pass one that also checks the experiment is configured); ``experiment_metrics``: where the
    attributed events are counted."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        writer: redis.Redis | None = None,
        weights: str | Mapping[str, float] = limits.DEFAULT_EVENT_WEIGHTS,
        keep: int = limits.DEFAULT_EVENTS_PER_VISITOR,
        rate_limit: int = 0,
        attribute: Callable[[str], tuple[str, str] | None] = parse_recommendation_id,
        experiment_metrics: ExperimentMetrics = DEFAULT_METRICS,
    ) -> None:
        if keep < 1 or rate_limit < 0:
            raise ValueError(f"keep must be >= 1 and rate_limit >= 0, got {keep} and {rate_limit}")
        self.redis = client
        self.writer = writer or client
        self.weights = parse_weights(weights)
        self.keep = keep
        self.rate_limit = rate_limit
        self.attribute = attribute
        self.experiment_metrics = experiment_metrics
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

    async def record(self, events: Sequence[Event]) -> int:
        """Store validated events, in order, in one round trip, all or none; returns once Redis acknowledged
        them, the number stored (a retried event already stored is not stored again). RateLimited when a visitor
        would exceed the limit (then nothing is stored). Events attributed to an experiment are counted there."""
        if not events:
            return 0
        by_user: dict[str, list[bytes | int]] = {}
        groups: dict[tuple[str, str, str], int] = {}  # (experiment, variant, type) -> its 1-based group
        for e in events:
            group = self._group(e, groups) if e.session_id else 0
            encoded = encode_event(e.item_id, e.type, e.timestamp_ms, e.session_id)
            by_user.setdefault(e.user_id, []).extend((encoded, group))
        second = int(time.time())
        keys: list[str] = []
        visitors: list[bytes | str | int] = []
        for user, pairs in by_user.items():
            keys += [events_key(user), rate_key(user, second)]
            visitors += [len(pairs) // 2, *pairs]
        counts_keys: dict[str, int] = {}  # an experiment's counts hash -> its 1-based index in KEYS
        attribution: list[bytes | str | int] = []
        for experiment, variant, kind in groups:
            key = experiment_counts_key(experiment)
            if key not in counts_keys:
                keys.append(key)
                counts_keys[key] = len(keys)
            attribution += [counts_keys[key], counts_field(variant, kind)]
        args: list[bytes | str | int] = [self.rate_limit, self.keep, EVENTS_TTL_S, RATE_WINDOW_TTL_S, len(by_user)]
        args += [len(groups), *attribution, *visitors]
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
            sent, used = len(by_user[user]) // 2, int(reply[2])
            raise RateLimited(
                f"rate limit: user_id {user!r} may send {self.rate_limit} events per second; this call has {sent} "
                f"and {used} were already stored this second. Nothing of this call was stored; retry later"
            )
        for (experiment, variant, kind), stored in zip(groups, reply[2], strict=True):
            if stored:
                self.experiment_metrics.events.labels(experiment, variant, kind).inc(int(stored))
        return int(reply[1])

    def _group(self, event: Event, groups: dict[tuple[str, str, str], int]) -> int:
        """The event's attribution group (numbered from 1 in order of appearance), 0 when not attributed."""
        found = self.attribute(event.session_id)
        if found is None:
            return 0
        return groups.setdefault((*found, event.type), len(groups) + 1)

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
