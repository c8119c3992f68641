"""LiveCatalog (serving/catalog_live.py) against real Redis servers: the session one (own db) for following and
writing, a private one that the tests stop, restart and pause for the stale paths."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
import redis

from recmesh import redis_layout as layout
from recmesh.catalog import live
from recmesh.catalog.table import Catalog, CatalogError
from serving import catalog_live as live_module
from serving.catalog_live import CatalogUnavailable, LiveCatalog
from tests.conftest import RedisServer
from tests.helpers import redis_url

session_loop = pytest.mark.asyncio(loop_scope="session")
DB = 12


@pytest.fixture
def url(redis_server) -> str:  # type: ignore[no-untyped-def]
    return redis_url(redis_server, DB)


@pytest.fixture
def client(url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(url)
    c.flushdb()
    yield c
    c.flushdb()
    c.close()


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A Redis of this module's own, so stopping or pausing it disturbs no other test."""
    server = RedisServer(Path(tmp_path_factory.mktemp("catalog_redis")))
    server.start()
    yield server
    server.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def followers(url: str, client: redis.Redis) -> AsyncIterator[list[LiveCatalog]]:
    both = [LiveCatalog.from_url(url, timeout_ms=200), LiveCatalog.from_url(url, timeout_ms=200)]
    yield both
    for follower in both:
        await follower.close()


def calls(client: redis.Redis, command: str) -> int:
    stats = client.info("commandstats").get(f"cmdstat_{command}")
    return int(stats["calls"]) if stats else 0


@session_loop
async def test_a_write_is_seen_by_every_follower_after_one_refresh_each(followers, client):
    writer, other = followers
    seq = await writer.write([("a", {"category": "shoes", "available": True}), ("b", {"category": "bags"})])
    assert [(await f.refresh()).get("a") for f in followers] == [{"category": "shoes", "available": True}] * 2
    seq = await writer.write([("a", {"available": False})], "merge")
    for follower in followers:
        catalog = await follower.refresh()
        assert catalog.get("a") == {"category": "shoes", "available": False} and catalog.seq == seq
        assert follower.stale is None
    await other.delete(["b"])
    assert ["b" in await f.refresh() for f in followers] == [False, False]
    assert dict(other.catalog.docs()) == dict(live.read_snapshot(client).docs())


@session_loop
async def test_concurrent_refreshes_share_two_round_trips_at_most(followers, client):
    """The first caller starts a read; the 19 arriving while it is in flight share ONE read after it (theirs must
    start after they arrived: read-your-writes)."""
    follower = followers[0]
    live.write_items(client, [("a", {"n": 1})])
    await follower.refresh()
    client.config_resetstat()
    await asyncio.gather(*(follower.refresh() for _ in range(20)))
    assert calls(client, "mget") == 2 and calls(client, "xrange") == 0  # nothing changed: MGETs only
    live.write_items(client, [("a", {"n": 2})])
    client.config_resetstat()
    catalogs = await asyncio.gather(*(follower.refresh() for _ in range(20)))
    assert calls(client, "mget") == 2 and calls(client, "xrange") == 1 and calls(client, "sscan") == 0
    assert all(c.get("a") == {"n": 2} for c in catalogs)


@session_loop
async def test_a_write_acknowledged_during_a_read_is_seen_by_the_next_caller(followers, client):
    """A read in flight may have read Redis before the write; a caller arriving after the write's ack must not
    be answered with that read."""
    follower = followers[0]
    await follower.refresh()
    in_flight = asyncio.ensure_future(follower.refresh())  # its MGET is on the wire
    await asyncio.sleep(0)
    seq = live.write_items(client, [("late", {"n": 1})])
    catalog = await follower.refresh(timeout_s=5)
    assert catalog.get("late") == {"n": 1} and catalog.seq >= seq
    await in_flight


@session_loop
async def test_type_conflict_is_refused_with_nothing_written(followers, client):
    writer = followers[0]
    await writer.write([("a", {"price": 30})])
    with pytest.raises(CatalogError, match=r"item 'b', attribute 'price'"):
        await writer.write([("c", {"price": 1}), ("b", {"price": "cheap"})])
    assert client.smembers(layout.CATALOG_IDS_KEY) == {b"a"} and client.get(layout.CATALOG_SEQ_KEY) == b"1"


@session_loop
async def test_a_trimmed_log_reloads_the_same_catalogue(followers, client):
    follower = followers[0]
    live.write_items(client, [("a", {"n": 0})])
    before = await follower.refresh()
    for i in range(1, 6):
        live.write_items(client, [(f"i{i}", {"n": i}), ("a", {"n": i})])
    client.xtrim(layout.CATALOG_LOG_KEY, minid="4-0", approximate=False)
    after = await follower.refresh()
    assert after is not before and after.seq == 6
    assert dict(after.docs()) == dict(live.read_snapshot(client).docs())


@session_loop
async def test_seed_is_served_until_redis_has_a_live_catalogue(url, client):
    seed = Catalog.of([("bundle-item", {"category": "shoes"})])
    follower = LiveCatalog.from_url(url, seed=seed, timeout_ms=200)
    try:
        assert (await follower.refresh()) is seed and follower.stale is None  # nothing live yet: the bundle's
        live.write_items(client, [("live-item", {"category": "bags"})])
        catalog = await follower.refresh()
        assert dict(catalog.docs()) == {"live-item": {"category": "bags"}}  # Redis is the truth once it has one
        assert seed.get("bundle-item") == {"category": "shoes"} and "live-item" not in seed  # seed not mutated
    finally:
        await follower.close()


@session_loop
async def test_redis_stopped_keeps_the_last_state_and_recovers(private_redis, caplog):
    admin = redis.Redis.from_url(private_redis.url)
    admin.flushdb()
    follower = LiveCatalog.from_url(private_redis.url, timeout_ms=50, retry_after_ms=100)
    try:
        await follower.write([("a", {"available": True})])
        last = await follower.refresh()
        private_redis.stop()
        try:
            with caplog.at_level(logging.WARNING, logger="serving.catalog_live"):
                for _ in range(5):
                    started = time.perf_counter()
                    assert (await follower.refresh()) is last and last.get("a") == {"available": True}
                    assert time.perf_counter() - started < 0.2
                    await asyncio.sleep(0.03)
            assert follower.stale is not None and "redis" in follower.stale
            assert len([r for r in caplog.records if r.name == "serving.catalog_live"]) == 1  # one per outage
            with pytest.raises(CatalogUnavailable):
                await follower.write([("a", {"available": False})], "merge")
        finally:
            private_redis.start()  # without persistence: it comes back empty, as a store that lost its data
        deadline = time.monotonic() + 3
        while follower.stale is not None:
            assert time.monotonic() < deadline, f"still stale 3 s after Redis came back: {follower.stale}"
            await asyncio.sleep(0.05)
            await follower.refresh()
        assert follower.catalog is last  # an empty Redis: the last state is kept
        await follower.write([("b", {"available": True})])  # a new epoch: the follower reloads, not replays
        assert dict((await follower.refresh()).docs()) == {"b": {"available": True}}
    finally:
        await follower.close()
        admin.close()


@session_loop
async def test_slow_redis_answers_with_the_last_state_within_the_timeout(private_redis):
    admin = redis.Redis.from_url(private_redis.url)
    admin.flushdb()
    follower = LiveCatalog.from_url(private_redis.url, timeout_ms=20)
    try:
        live.write_items(admin, [("a", {"n": 1})])
        await follower.refresh(timeout_s=2)
        live.write_items(admin, [("a", {"n": 2})])
        admin.execute_command("CLIENT", "PAUSE", 300, "ALL")
        started = time.perf_counter()
        catalog = await follower.refresh()
        assert time.perf_counter() - started < 0.1
        # late, but the last read succeeded under a second ago: a busy moment, not stale
        assert catalog.get("a") == {"n": 1} and follower.stale is None
        await follower._task  # type: ignore[misc]  # let the paused read finish
        await asyncio.sleep(live_module.STALE_AFTER_S)  # now the last good read is over a second old
        admin.execute_command("CLIENT", "PAUSE", 300, "ALL")
        catalog = await follower.refresh()
        assert follower.stale is not None and "20 ms" in follower.stale
        started = time.perf_counter()
        await follower.refresh()  # the read in flight is already late: no one else waits for it
        assert time.perf_counter() - started < 0.01
        deadline = time.monotonic() + 3
        while follower.stale is not None:
            assert time.monotonic() < deadline, f"not caught up after the pause: {follower.stale}"
            await asyncio.sleep(0.05)
            await follower.refresh()
    finally:
        await follower.close()
        admin.close()
