"""Item vectors by id: in-process LRU -> Redis (one MGET per call) -> the bundle's memory-mapped vectors.

Usage::

    store = EmbeddingStore(registry, redis_client(url, timeout_s=0.02))
    found = await store.get(["a", "b"])   # found.vectors: (n, dim) float32, found.degraded, found.unknown_item_ids
    many = await store.get_many([(["a"], ""), ([], "")])  # [Lookup, InvalidArgument]: one MGET for all of them
    await store.aclose()

Every tier holds the same bytes (the bundle's `vectors.npy` rows, written to Redis by `recmesh publish`), so the
tier only changes latency, never the answer. Redis down or slower than its timeout -> the bundle answers, the
response says `degraded`, and Redis is left alone for `retry_after_s` before it is tried again (the version
pointer refresh, once a second, notices a recovery even without traffic). No grpc import here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import redis.asyncio as aioredis
from numpy.typing import NDArray
from redis.exceptions import RedisError

from recmesh.bundle import BundleError
from recmesh.pipeline import Model
from recmesh.redis_layout import POINTER_KEY, VECTOR_TTL_S, vector_key
from recmesh.registry import ModelRegistry, VersionNotAvailable
from services.embedding_store.caches import Lru
from serving import limits
from serving.errors import InvalidArgument, NotFound
from serving.metrics import DEFAULT, Metrics
from serving.vectors import pack_rows, unpack, vector_bytes

log = logging.getLogger(__name__)

SERVICE = "embedding_store"  # the component label of its degraded answers
MAX_PENDING_WRITES = 8  # write-backs in flight; beyond this they are dropped (the next miss writes again)


@dataclass(frozen=True)
class Lookup:
    version: str
    dim: int
    item_ids: list[str]  # known ids, request order, duplicates kept
    vectors: NDArray[np.float32]  # (len(item_ids), dim), row i = item_ids[i]
    unknown_item_ids: list[str]
    degraded: bool = False
    degraded_reason: str = ""


Query = tuple[list[str], str]  # (item ids, model version; "" = the current one)


class _Plan:
    """One query on its way to a Lookup: its model, its ids sorted into known and unknown, their vectors found
    so far (LRU hits), and the LRU misses still to read."""

    __slots__ = ("model", "known", "unknown", "found", "misses", "degraded_reason")

    def __init__(self, model: Model) -> None:
        self.model = model
        self.known: list[str] = []
        self.unknown: list[str] = []
        self.found: dict[str, bytes] = {}
        self.misses: dict[str, int] = {}  # item -> bundle row
        self.degraded_reason = ""

    def lookup(self) -> Lookup:
        vectors = unpack(b"".join([self.found[item] for item in self.known]), self.model.dim)
        reason = self.degraded_reason
        return Lookup(self.model.version, self.model.dim, self.known, vectors, self.unknown, bool(reason), reason)


@dataclass
class Stats:
    """Counters per unique item looked up (duplicates inside one request count once). The queries of one
    `get_many` (a batch call's members) count as requests of their own, but share their Redis round trip (its
    hits and misses count each unique item of the batch once) and their bundle reads (each item read once)."""

    requests: int = 0
    lru_hits: int = 0
    lru_misses: int = 0
    redis_hits: int = 0
    redis_misses: int = 0
    redis_round_trips: int = 0  # MGETs issued by requests
    bundle_reads: int = 0
    degraded: int = 0
    write_backs: int = 0


class EmbeddingStore:
    def __init__(
        self,
        registry: ModelRegistry,
        redis_client: aioredis.Redis,
        lru_size: int = 100_000,
        redis_timeout_s: float = 0.02,
        retry_after_s: float = 1.0,
        ttl_s: int = VECTOR_TTL_S,
        metrics: Metrics | None = None,
        pointer_client: aioredis.Redis | None = None,
    ) -> None:
        self.registry = registry
        self.redis = redis_client
        # The version pointer lives in the durable store; the vectors in the cache (the same Redis when None).
        self.pointer_redis = pointer_client
        self.lru = Lru(lru_size)
        self.redis_timeout_s = redis_timeout_s
        self.retry_after_s = retry_after_s
        self.ttl_s = ttl_s
        self.metrics = metrics or DEFAULT
        self.stats = Stats()
        self.published_version: str | None = None  # Redis' pointer, when this process serves it
        self._redis_down_until = 0.0
        self._redis_down_reason = ""
        self._pending: set[asyncio.Task[Any]] = set()
        self._background: list[asyncio.Task[Any]] = []
        self._closing: asyncio.Future[None] | None = None

    # -- version ------------------------------------------------------------------------------------------
    @property
    def current_version(self) -> str:
        return self.registry.current

    async def model_for(self, version: str) -> Model:
        """The model a request reads: the pinned version (one the registry holds: recmesh.registry), else the
        current one (Redis' pointer, when this process could load it). A request never loads a version."""
        try:
            return await self.registry.get(version)
        except VersionNotAvailable as e:
            raise NotFound(str(e)) from e

    async def refresh_version(self) -> None:
        """Read `recmesh:current_version` once and switch the registry to it (a load, off the loop, when it moved).
        Unset -> the pointer on disk (``<models dir>/PUBLISHED``, else the newest bundle). Redis unreachable, or a
        version this process cannot load -> keep serving the current one (a blip must not flip replicas; a broken
        bundle is logged once by the registry and retried with backoff). Also the Redis liveness probe."""
        if self.pointer_redis is not None:
            await self._probe_cache()
        try:
            raw = await asyncio.wait_for(
                (self.pointer_redis or self.redis).get(POINTER_KEY), timeout=max(self.redis_timeout_s, 0.5)
            )
        except (RedisError, OSError, TimeoutError) as e:
            if self.pointer_redis is None:
                self._mark_down(f"redis unavailable ({type(e).__name__})")
            return
        if self.pointer_redis is None:
            self._mark_up()
        self.registry.expire()
        pointer = raw.decode() if isinstance(raw, bytes) else raw
        target = pointer or await asyncio.to_thread(self.registry.pointer_target)
        if target and target != self.registry.current:
            with contextlib.suppress(VersionNotAvailable, BundleError):
                await self.registry.switch_to(target)
        self.published_version = pointer if pointer == self.registry.current else None

    async def _probe_cache(self) -> None:
        """PING the vector cache (when it is not the pointer's Redis): notices a recovery without traffic."""
        try:
            await asyncio.wait_for(self.redis.ping(), timeout=max(self.redis_timeout_s, 0.5))
        except (RedisError, OSError, TimeoutError) as e:
            self._mark_down(f"redis unavailable ({type(e).__name__})")
            return
        self._mark_up()

    async def watch_version(self, every_s: float = 1.0) -> None:
        while True:
            try:
                await self.refresh_version()
            except Exception:  # never let the refresher die: the store keeps serving what it has
                log.exception("version pointer refresh failed")
            await asyncio.sleep(every_s)

    # -- Redis health ------------------------------------------------------------------------------------
    def _mark_down(self, reason: str) -> None:
        if not self._redis_down_reason:  # log the transition, not every failed probe
            log.warning("redis down, serving from the bundle", extra={"reason": reason})
        self._redis_down_until = time.monotonic() + self.retry_after_s
        self._redis_down_reason = reason

    def _mark_up(self) -> None:
        if self._redis_down_reason:
            log.info("redis back")
        self._redis_down_until, self._redis_down_reason = 0.0, ""

    @property
    def redis_down(self) -> bool:
        return time.monotonic() < self._redis_down_until

    # -- lookup -------------------------------------------------------------------------------------------
    async def get(self, item_ids: list[str], version: str = "") -> Lookup:
        """The vectors of `item_ids` in `version` ("" = the current one): :meth:`get_many` of one query."""
        (found,) = await self.get_many([(item_ids, version)])
        if isinstance(found, Exception):
            raise found
        return found

    async def get_many(self, queries: Sequence[Query]) -> list[Lookup | Exception]:
        """One Lookup per (item_ids, version) query, in order, each equal to what `get` answers for it alone, with
        ONE Redis MGET per model version for all their LRU misses. A query that fails (invalid ids, a pinned
        version not available here) is its exception in the list; the others are answered."""
        plans: list[_Plan | Exception] = []
        for item_ids, version in queries:
            try:
                plans.append(await self._plan(item_ids, version))
            except Exception as e:  # this query's own error: it fails alone
                plans.append(e)
        missing: dict[str, list[_Plan]] = {}  # version -> the plans with LRU misses
        for plan in plans:
            if isinstance(plan, _Plan) and plan.misses:
                missing.setdefault(plan.model.version, []).append(plan)
        for group in missing.values():
            await self._fill(group)
        return [plan if isinstance(plan, Exception) else plan.lookup() for plan in plans]

    async def _plan(self, item_ids: list[str], version: str) -> _Plan:
        """A query checked, its model resolved, its unknown ids and LRU hits and misses sorted out."""
        validate_item_ids(item_ids)
        plan = _Plan(await self.model_for(version))
        v, index_of, found, misses = plan.model.version, plan.model.index_of, plan.found, plan.misses
        self.stats.requests += 1
        for item in item_ids:
            row = index_of.get(item)
            if row is None:
                plan.unknown.append(item)
                continue
            plan.known.append(item)
            if item in found or item in misses:
                continue
            value = self.lru.get((v, item))
            if value is None:
                misses[item] = row
            else:
                found[item] = value
        self._count("lru", hits=len(found), misses=len(misses))
        if plan.unknown:
            self.metrics.embedding_lookups.labels("bundle", "miss").inc(len(plan.unknown))
        return plan

    async def _fill(self, plans: list[_Plan]) -> None:
        """The LRU misses of `plans` (all of one model version, each with misses) read with one MGET, what Redis
        lacks from the bundle (and written back when Redis is up); each plan gets them and the degraded reason."""
        misses: dict[str, int] = {}  # item -> bundle row, first occurrence order
        for plan in plans:
            misses.update(plan.misses)
        model = plans[0].model
        v = model.version
        fetched, degraded_reason, degraded_label = await self._mget(v, model.dim, list(misses))
        for item, value in fetched.items():
            self.lru.put((v, item), value)
        lacking = [item for item in misses if item not in fetched]
        if lacking:
            rows = pack_rows(model.space.vectors[[misses[i] for i in lacking]])
            fresh = dict(zip(lacking, rows, strict=True))
            fetched.update(fresh)
            for item, value in fresh.items():
                self.lru.put((v, item), value)
            self.stats.bundle_reads += len(fresh)
            self.metrics.embedding_lookups.labels("bundle", "hit").inc(len(fresh))
            if not degraded_reason:  # Redis is up but lacked them: fill it for the other replicas
                self._write_back(v, fresh)
        for plan in plans:  # a plan answered from the LRU alone is not here: not degraded, whatever Redis does
            plan.found.update((item, fetched[item]) for item in plan.misses)
            if degraded_reason:
                plan.degraded_reason = degraded_reason
                self.stats.degraded += 1
                self.metrics.degraded.labels(SERVICE, degraded_label).inc()

    async def _mget(self, version: str, dim: int, items: list[str]) -> tuple[dict[str, bytes], str, str]:
        """One MGET for `items`: (the valid values found, "" or why Redis was not used, "" or that reason's
        metric label)."""
        if self.redis_down:
            return {}, f"{self._redis_down_reason}: served from bundle", "redis_down"
        self.stats.redis_round_trips += 1
        try:
            values = await asyncio.wait_for(
                self.redis.mget([vector_key(version, item) for item in items]), timeout=self.redis_timeout_s
            )
        except TimeoutError:
            self._mark_down(f"redis timeout (> {self.redis_timeout_s * 1000:g} ms)")
            return {}, f"{self._redis_down_reason}: served from bundle", "redis_timeout"
        except (RedisError, OSError) as e:
            self._mark_down(f"redis unavailable ({type(e).__name__})")
            return {}, f"{self._redis_down_reason}: served from bundle", "redis_unavailable"
        width = vector_bytes(dim)
        found = {
            item: value
            for item, value in zip(items, values, strict=True)
            if isinstance(value, bytes) and len(value) == width
        }
        bad = sum(1 for value in values if value is not None and len(value) != width)
        if bad:
            log.warning("redis vectors of the wrong size, rewriting them", extra={"version": version, "count": bad})
        self._count("redis", hits=len(found), misses=len(items) - len(found))
        return found, "", ""

    def _write_back(self, version: str, vectors: dict[str, bytes]) -> None:
        """Fire and forget: the answer does not wait for a second round trip; a failed write only costs a
        later miss. Bounded, so a slow Redis cannot pile up tasks."""
        if len(self._pending) >= MAX_PENDING_WRITES:
            return

        async def write() -> None:
            pipe = self.redis.pipeline(transaction=False)
            for item, value in vectors.items():
                pipe.set(vector_key(version, item), value, ex=self.ttl_s)
            await asyncio.wait_for(pipe.execute(), timeout=max(self.redis_timeout_s * 10, 0.5))
            self.stats.write_backs += len(vectors)

        task = asyncio.get_running_loop().create_task(_quietly(write()))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def _count(self, tier: str, hits: int, misses: int) -> None:
        if tier == "lru":
            self.stats.lru_hits += hits
            self.stats.lru_misses += misses
        else:
            self.stats.redis_hits += hits
            self.stats.redis_misses += misses
        if hits:
            self.metrics.embedding_lookups.labels(tier, "hit").inc(hits)
        if misses:
            self.metrics.embedding_lookups.labels(tier, "miss").inc(misses)

    # -- lifecycle ----------------------------------------------------------------------------------------
    def start(self, every_s: float = 1.0) -> None:
        """Start the version pointer refresher (call inside the running loop)."""
        self.keep(self.watch_version(every_s))

    def keep(self, coro: Awaitable[Any]) -> None:
        """Run `coro` as a background task owned by the store (cancelled by `aclose`)."""
        self._background.append(asyncio.ensure_future(coro))

    async def aclose(self) -> None:
        """Stop the background work and close the Redis client. Safe to call more than once, and concurrently (the
        server's supervisor and an owner that stops the store may both call it): every caller awaits one close."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close())
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        for task in self._background:
            task.cancel()
        # Bounded: shutdown must end inside the pod's grace period even if Redis (or a Redis call cancelled
        # mid-flight) never answers; what is still pending then is abandoned, the cache can do without it.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                asyncio.gather(*self._background, *self._pending, return_exceptions=True), CLOSE_TIMEOUT_S
            )
        self._background.clear()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.redis.aclose(), CLOSE_TIMEOUT_S)
        if self.pointer_redis is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.pointer_redis.aclose(), CLOSE_TIMEOUT_S)


CLOSE_TIMEOUT_S = 2.0  # per step of aclose()


async def _quietly(coro: Awaitable[None]) -> None:
    try:
        await coro
    except (RedisError, OSError, TimeoutError) as e:
        log.debug("redis write-back failed", extra={"error": repr(e)})


def validate_item_ids(item_ids: list[str]) -> None:
    """1 to MAX_ITEMS ids of at most MAX_ID_LEN characters each; InvalidArgument naming the limit otherwise."""
    if not item_ids:
        raise InvalidArgument("item_ids must not be empty", field="item_ids")
    if len(item_ids) > limits.MAX_ITEMS:
        raise InvalidArgument(f"at most {limits.MAX_ITEMS} item_ids per request, got {len(item_ids)}", field="item_ids")
    for i, item in enumerate(item_ids):
        if len(item) > limits.MAX_ID_LEN:
            raise InvalidArgument(
                f"item_ids[{i}] is {len(item)} characters long, the limit is {limits.MAX_ID_LEN}",
                field=f"item_ids[{i}]",
            )
