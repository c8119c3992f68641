"""The live item catalogue as a serving process sees it: the last state read from Redis, brought up to date by one
cheap round trip per request batch.

:meth:`LiveCatalog.refresh` reads ``seq`` and ``epoch`` (one MGET). Nothing changed: done. New writes: the log
entries after our seq are applied in place (XRANGE). The log no longer reaches back to us, Redis went back to an
older seq, or another epoch (Redis lost the catalogue and started over): a full reload, swapped in when complete.
Read-your-writes: the read a call waits for starts after the call, so a write acknowledged before it is seen;
calls arriving while a read is in flight share one read after it. Layout, write script and encoders:
recmesh.catalog.live.

Redis down or slow: a refresh waits at most ``timeout_ms`` (20 by default) and then answers with the last state
(the read goes on in the background and is used when it lands); ``stale`` says why (None when current), logged
once per outage, and after a failure Redis is left alone for ``retry_after_ms``. Until the first successful read
the catalogue is the seed (the bundle's snapshot); a Redis without a live catalogue (never written) keeps it.

Usage::

    live = LiveCatalog.from_url("redis://localhost:6379/0", seed=bundle_catalog)
    await live.refresh(timeout_s=5)                   # at startup: wait for the first load
    catalog = await live.refresh()                    # per request batch: the current Catalog
    live.stale                                        # None, or why the catalogue may be behind
    await live.write([("a", {"available": False})], "merge")   # -> seq; every replica's next refresh sees it
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from recmesh.catalog import live
from recmesh.catalog.table import Catalog
from recmesh.redis_layout import CATALOG_EPOCH_KEY, CATALOG_IDS_KEY, CATALOG_LOG_KEY, CATALOG_SEQ_KEY, catalog_item_key
from serving.errors import Unavailable

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_MS = 20
DEFAULT_RETRY_AFTER_MS = 1000
MIN_WRITE_TIMEOUT_S = 1.0  # a write (up to 1,000 items in one script) gets longer than a read
RETRY_AFTER_S = 1.0  # what a writer is told to wait after Redis failed
# A read that is late while the last one succeeded less than this ago is not called stale: under load a busy
# event loop makes a 20 ms wait run out with Redis fine, and the catalogue is then at most this far behind.
STALE_AFTER_S = 1.0


class CatalogUnavailable(Unavailable):
    """Redis could not be reached in time for a catalogue write."""


class LiveCatalog:
    """The current Catalog of this process (see the module docstring). ``reader`` serves refreshes, ``writer``
    (default: the reader) the writes."""

    def __init__(
        self,
        reader: aioredis.Redis,
        seed: Catalog | None = None,
        *,
        writer: aioredis.Redis | None = None,
        timeout_ms: float = DEFAULT_TIMEOUT_MS,
        retry_after_ms: float = DEFAULT_RETRY_AFTER_MS,
    ) -> None:
        if timeout_ms <= 0 or retry_after_ms < 0:
            raise ValueError(f"timeout_ms must be > 0 and retry_after_ms >= 0, got {timeout_ms}, {retry_after_ms}")
        self.reader = reader
        self.writer = writer or reader
        self.timeout_s = timeout_ms / 1000.0
        self.retry_after_s = retry_after_ms / 1000.0
        self.stale: str | None = None  # why the catalogue may be behind Redis; None when it is current
        self._catalog = seed if seed is not None else Catalog()
        self._epoch: str | None = None  # the epoch of the Redis catalogue we follow; None: not synced yet
        self._task: asyncio.Task[None] | None = None
        self._next: asyncio.Task[None] | None = None  # the read after the one in flight (read-your-writes)
        self._current_at = 0.0  # when a read last succeeded (monotonic)
        self._overdue = False  # a caller already gave up waiting for the refresh in flight
        self._reloading = False
        self._skip_until = 0.0  # after a failure Redis is left alone until then (monotonic)
        self._script = self.writer.register_script(live.WRITE_SCRIPT)

    @classmethod
    def from_url(
        cls, url: str, seed: Catalog | None = None, timeout_ms: float = DEFAULT_TIMEOUT_MS, **config: Any
    ) -> LiveCatalog:
        """Clients without redis-py's own retries on reads (our timeout and back-off decide); the writer waits
        at least MIN_WRITE_TIMEOUT_S and retries a failed connection once (a write is idempotent: whole docs)."""
        timeout_s = timeout_ms / 1000.0
        reader = aioredis.from_url(
            url,
            socket_connect_timeout=max(timeout_s, 0.1),
            socket_timeout=max(timeout_s * 5, 1.0),  # a reload's pipelines too; callers wait only timeout_ms
            retry=Retry(NoBackoff(), 0),
        )
        writer = aioredis.from_url(
            url,
            socket_connect_timeout=max(timeout_s, 0.1),
            socket_timeout=max(timeout_s, MIN_WRITE_TIMEOUT_S),
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        )
        return cls(reader, seed, writer=writer, timeout_ms=timeout_ms, **config)

    @property
    def catalog(self) -> Catalog:
        """The current state (the seed until the first successful read)."""
        return self._catalog

    async def refresh(self, timeout_s: float | None = None) -> Catalog:
        """The catalogue, caught up with Redis if Redis answers within ``timeout_s`` (default: the timeout_ms
        given); else the last state, with ``stale`` saying why. Never raises for Redis trouble.

        Read-your-writes: the read a caller waits for starts after the call. A caller arriving while a read is in
        flight (it may have read Redis before this caller's write was acknowledged) waits for the next one, which
        every caller arriving meanwhile shares: at most two reads in a row, however many callers."""
        if self._task is None or self._task.done():  # done: its callback may not have run yet
            if time.monotonic() < self._skip_until:
                return self._catalog  # backing off: a dead Redis is not asked on every request
            self._task, self._overdue = asyncio.create_task(self._refresh_once()), False
            self._task.add_done_callback(self._finished)
            waited = self._task
        elif self._overdue:
            return self._catalog  # someone already waited the timeout for this one: no one else waits
        else:
            if self._next is None or self._next.done():
                self._next = asyncio.create_task(self._refresh_after(self._task))
            waited = self._next
        wait_s = self.timeout_s if timeout_s is None else timeout_s
        try:
            await asyncio.wait_for(asyncio.shield(waited), wait_s)
        except TimeoutError:
            self._overdue = True
            if self._reloading:
                self._mark_stale("reloading the live catalogue from redis", logging.INFO)
            elif time.monotonic() - self._current_at > STALE_AFTER_S:
                self._mark_stale(f"redis did not answer within {wait_s * 1000:g} ms")
            # else: read less than STALE_AFTER_S ago; a busy moment (this process's or Redis') is no outage
        return self._catalog

    async def _refresh_after(self, previous: asyncio.Task[None]) -> None:
        """The read after ``previous``: it becomes the read in flight when it starts."""
        with contextlib.suppress(BaseException):
            await asyncio.shield(previous)
        if time.monotonic() < self._skip_until:
            return  # the read before failed: Redis is left alone for a while
        if self._task is None or self._task.done():
            self._task, self._overdue = asyncio.current_task(), False  # type: ignore[assignment]
        await self._refresh_once()

    async def write(self, docs: Sequence[tuple[str, Mapping[str, object]]], mode: str = "replace") -> int:
        """Write up to 1,000 items atomically (modes: recmesh.catalog.live) and return the log position after
        it; every process's next refresh sees it. CatalogError (a ValueError) for bad input or a type the schema
        refuses (nothing written); CatalogUnavailable when Redis failed (a retry is safe: the docs are whole)."""
        keys, args = live.encode_write(docs, mode)
        if len(keys) == len(live.FIXED_KEYS):
            return self._catalog.seq
        try:
            reply = await self._script(keys=keys, args=args)
        except (RedisTimeoutError, TimeoutError) as e:
            raise CatalogUnavailable(
                f"redis did not answer in time: the catalogue write may or may not be stored; retrying is safe ({e})",
                retry_after_s=RETRY_AFTER_S,
            ) from e
        except (RedisError, OSError) as e:
            raise CatalogUnavailable(
                f"redis unavailable: catalogue not written ({e})", retry_after_s=RETRY_AFTER_S
            ) from e
        return live.decode_write_reply(reply).seq

    async def delete(self, item_ids: Sequence[str]) -> int:
        """Delete up to 1,000 items (ids not present are ignored); the log position after it."""
        return await self.write([(item_id, {}) for item_id in item_ids], "delete")

    async def close(self) -> None:
        """Stop a refresh in flight and close the clients; bounded, so a hung Redis cannot hold up shutdown."""
        for task in (self._task, self._next):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        for client in {id(c): c for c in (self.reader, self.writer)}.values():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.aclose(), 2.0)

    # --------------------------------------------------------------------------------------------- internals
    def _finished(self, task: asyncio.Task[None]) -> None:
        if self._task is task:
            self._task, self._overdue = None, False
        if not task.cancelled() and task.exception() is not None:  # a bug, not Redis: say it, keep serving
            logger.error("live catalogue refresh failed", exc_info=task.exception())

    def _mark_stale(self, reason: str, level: int = logging.WARNING) -> None:
        if self.stale is None:  # one line per outage, not per request
            logger.log(level, "live catalogue: %s; serving seq %d", reason, self._catalog.seq)
        self.stale = reason

    def _mark_current(self) -> None:
        self._current_at = time.monotonic()
        if self.stale is not None:
            logger.info("live catalogue: current again at seq %d", self._catalog.seq)
        self.stale = None

    async def _refresh_once(self) -> None:
        try:
            raw_seq, raw_epoch = await self.reader.mget(CATALOG_SEQ_KEY, CATALOG_EPOCH_KEY)
            if raw_seq is None:  # no live catalogue in this Redis (never written, or lost): keep what we have
                self._mark_current()
                return
            seq, epoch = int(raw_seq), live.as_text(raw_epoch or b"")
            behind = seq != self._catalog.seq
            if epoch != self._epoch or (behind and not await self._catch_up(seq)):
                await self._reload()
            self._epoch = epoch
            self._mark_current()
        except (RedisError, OSError, TimeoutError, live.LogGap, ValueError) as e:  # ValueError: a garbled seq
            self._skip_until = time.monotonic() + self.retry_after_s
            self._mark_stale(f"redis unavailable ({type(e).__name__}: {e})")
        finally:
            self._reloading = False

    async def _catch_up(self, seq: int) -> bool:
        """Apply the log entries after our seq in place; False when the log cannot bring us to ``seq``."""
        if seq < self._catalog.seq:  # Redis went back to an older state
            return False
        entries = await self.reader.xrange(CATALOG_LOG_KEY, live.log_start(self._catalog.seq), "+")
        try:
            live.apply_entries(self._catalog, entries or [])
        except live.LogGap:
            return False
        return self._catalog.seq >= seq

    async def _reload(self) -> None:
        self._reloading = True
        for _ in range(live.SNAPSHOT_ATTEMPTS):
            start = int(await self.reader.get(CATALOG_SEQ_KEY) or 0)
            docs: dict[str, Any] = {}
            cursor: int = 0
            while True:
                cursor, ids = await self.reader.sscan(CATALOG_IDS_KEY, cursor, count=live.READ_CHUNK)
                names = [live.as_text(i) for i in ids]
                pipe = self.reader.pipeline(transaction=False)
                for item_id in names:
                    pipe.hgetall(catalog_item_key(item_id))
                docs.update(zip(names, await pipe.execute(), strict=True))
                if int(cursor) == 0:
                    break
            entries = await self.reader.xrange(CATALOG_LOG_KEY, live.log_start(start), "+")
            try:
                # CPU-bound for a big catalogue: off the event loop (the new Catalog is shared with no one yet)
                self._catalog = await asyncio.to_thread(live.build_snapshot, start, docs, entries or [])
                return
            except live.LogGap:
                continue
        raise live.LogGap("the catalogue changed faster than a snapshot could be read")
