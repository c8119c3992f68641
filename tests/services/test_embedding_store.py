"""The embedding store over real gRPC, with the real session Redis (its own db) and the session bundle."""

from __future__ import annotations

import asyncio
import time

import grpc
import grpc.aio
import pytest

from recmesh import publish as pub
from recmesh import redis_layout as layout
from services.embedding_store.caches import Lru
from serving.vectors import unpack
from tests.helpers import copy_bundle
from tests.services.embedding_store_helpers import cmdstat_calls, counter, rows_bytes, running_store

session_loop = pytest.mark.asyncio(loop_scope="session")
DB = 3
LOOKUPS = "recmesh_embedding_lookups_total"
DEGRADED = "recmesh_degradations_total"


def assert_bundle_vectors(reply, model, ids: list[str]) -> None:  # type: ignore[no-untyped-def]
    assert list(reply.item_ids) == ids and reply.dim == model.dim
    assert reply.vectors == rows_bytes(model.space.vectors, [model.index_of[i] for i in ids])


@session_loop
async def test_vectors_equal_the_bundle_bitwise_and_the_second_call_hits_the_lru(models_dir, model, url, published):
    ids = model.item_ids[:50]
    async with running_store(models_dir, url) as s:
        first = await s.get(ids)
        assert first.model_version == published and not first.degraded
        assert_bundle_vectors(first, model, ids)
        assert (s.store.stats.redis_hits, s.store.stats.lru_misses, s.store.stats.bundle_reads) == (50, 50, 0)

        trips = s.store.stats.redis_round_trips
        second = await s.get(ids)
        assert second.vectors == first.vectors
        assert s.store.stats.redis_round_trips == trips  # all 50 from the LRU, no Redis call
        assert counter(s.metrics, LOOKUPS, tier="lru", result="hit") == 50
        assert counter(s.metrics, LOOKUPS, tier="redis", result="hit") == 50


@session_loop
async def test_one_redis_mget_per_request_however_many_items(models_dir, model, url, client, published):
    async with running_store(models_dir, url) as s:
        await s.get(model.item_ids[:10])  # warm a few into the LRU: a mixed request still makes one trip
        before = cmdstat_calls(client, "mget")
        reply = await s.get(model.item_ids[:1000])
        assert cmdstat_calls(client, "mget") - before == 1
        assert len(reply.item_ids) == 1000 and not reply.degraded


@session_loop
async def test_unknown_ids_are_listed_and_duplicates_answered_per_occurrence(models_dir, model, url, published):
    a, b = model.item_ids[3], model.item_ids[7]
    async with running_store(models_dir, url) as s:
        reply = await s.get(["nope-1", a, b, "nope-2", a])
    assert list(reply.unknown_item_ids) == ["nope-1", "nope-2"]
    assert_bundle_vectors(reply, model, [a, b, a])
    assert unpack(reply.vectors, reply.dim).shape == (3, model.dim)


@session_loop
async def test_only_unknown_ids_gives_an_empty_answer_not_an_error(models_dir, url, published):
    async with running_store(models_dir, url) as s:
        reply = await s.get(["ghost"])
    assert list(reply.item_ids) == [] and reply.vectors == b"" and list(reply.unknown_item_ids) == ["ghost"]


@session_loop
async def test_bad_requests_are_invalid_argument_and_the_server_keeps_serving(models_dir, model, url, published):
    bad = {
        "empty": [],
        "1001 ids": model.item_ids[:1] * 1001,
        "id of 257 chars": [model.item_ids[0], "x" * 257],
    }
    async with running_store(models_dir, url) as s:
        for name, ids in bad.items():
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await s.get(ids)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name
        assert "1000" in (await _details(s, model.item_ids[:1] * 1001))
        assert_bundle_vectors(await s.get(model.item_ids[:2]), model, model.item_ids[:2])


async def _details(s, ids: list[str]) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await s.get(ids)
    return info.value.details()


@session_loop
async def test_unknown_model_version_is_not_found_and_a_known_one_is_served(models_dir, model, url, published):
    async with running_store(models_dir, url) as s:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await s.get(model.item_ids[:1], version="v-does-not-exist")
        assert info.value.code() == grpc.StatusCode.NOT_FOUND and "v-does-not-exist" in info.value.details()
        assert (await s.get(model.item_ids[:1], version=model.version)).model_version == model.version


@session_loop
async def test_redis_miss_reads_the_bundle_and_writes_back(models_dir, model, url, client):
    ids = model.item_ids[100:120]  # nothing published in this db: Redis is up but empty
    async with running_store(models_dir, url) as s:
        reply = await s.get(ids)
        assert not reply.degraded and reply.model_version == model.version
        assert_bundle_vectors(reply, model, ids)
        assert s.store.stats.bundle_reads == 20
        await asyncio.gather(*s.store._pending)
    stored = client.mget([layout.vector_key(model.version, i) for i in ids])
    assert b"".join(stored) == reply.vectors
    assert client.ttl(layout.vector_key(model.version, ids[0])) > 0


@session_loop
async def test_redis_down_serves_the_bundle_degraded_then_recovers_without_restart(
    models_dir, model, url, redis_server, published
):
    fresh = iter(model.item_ids[200:])  # never-seen ids, so every request needs Redis (the LRU cannot answer)

    def batch() -> list[str]:
        return [next(fresh) for _ in range(5)]

    async with running_store(models_dir, url) as s:
        assert not (await s.get(batch())).degraded
        redis_server.stop()
        try:
            ids = batch()
            reply = await s.get(ids)
            assert reply.degraded and "redis" in reply.degraded_reason and reply.model_version == published
            assert_bundle_vectors(reply, model, ids)
            trips = s.store.stats.redis_round_trips
            assert (await s.get(batch())).degraded
            assert s.store.stats.redis_round_trips == trips  # backing off: a dead Redis is not hammered
            degraded = sum(
                counter(s.metrics, DEGRADED, component="embedding_store", reason=r)
                for r in ("redis_unavailable", "redis_down")  # failed now / skipped while backing off
            )
            assert degraded == 2
        finally:
            redis_server.start()
        deadline = time.monotonic() + 5
        while (reply := await s.get(batch())).degraded:
            assert time.monotonic() < deadline, f"still degraded 5 s after Redis came back: {reply.degraded_reason}"
            await asyncio.sleep(0.1)
        assert_bundle_vectors(reply, model, list(reply.item_ids))


@session_loop
async def test_slow_redis_times_out_to_the_bundle(models_dir, model, url, client, published):
    async with running_store(models_dir, url, REDIS_TIMEOUT_MS=50, VERSION_REFRESH_MS=5000) as s:
        client.execute_command("CLIENT", "PAUSE", 400, "ALL")
        started = time.perf_counter()
        reply = await s.get(model.item_ids[300:305])
        assert time.perf_counter() - started < 0.3
        assert reply.degraded and "timeout" in reply.degraded_reason
        assert_bundle_vectors(reply, model, model.item_ids[300:305])
        assert counter(s.metrics, DEGRADED, component="embedding_store", reason="redis_timeout") == 1
        await asyncio.sleep(1.1)  # pause over, back-off over
        # Recovered by itself. Polled, not asserted on one call: a 50 ms timeout can also trip on a busy machine.
        deadline = time.monotonic() + 5
        while (reply := await s.get(model.item_ids[305:310])).degraded:
            assert time.monotonic() < deadline, f"still degraded 5 s after the pause: {reply.degraded_reason}"
            await asyncio.sleep(0.2)


@session_loop
async def test_the_published_pointer_decides_the_current_version(bundle_path, model, url, client, tmp_path):
    models = tmp_path / "models"
    copy_bundle(bundle_path, models, model.version)
    newer = copy_bundle(bundle_path, models, model.version + "-newer").name  # the registry's current
    pub.publish(models / model.version, url, progress=False)
    ids = model.item_ids[:3]
    async with running_store(models, url) as s:
        assert (await s.get(ids)).model_version == model.version  # published beats newest on disk

        pub.publish(models / newer, url, progress=False)
        await _until(s, ids, newer)

        client.set(layout.POINTER_KEY, "not-on-this-disk")  # published somewhere this replica cannot load
        await _until(s, ids, newer)
        await asyncio.sleep(0.3)
        assert (await s.get(ids)).model_version == newer  # the registry's current, not an error

        client.set(layout.POINTER_KEY, model.version)
        await _until(s, ids, model.version)


async def _until(s, ids: list[str], version: str, within_s: float = 3.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within_s
    while (reply := await s.get(ids)).model_version != version:
        assert time.monotonic() < deadline, f"still serving {reply.model_version}, expected {version}"
        await asyncio.sleep(0.05)


def test_lru_evicts_the_least_recently_used_and_size_zero_disables_it():
    lru = Lru(2)
    lru.put(("v", "a"), b"a")
    lru.put(("v", "b"), b"b")
    assert lru.get(("v", "a")) == b"a"  # a is now the most recent
    lru.put(("v", "c"), b"c")
    assert lru.get(("v", "b")) is None and lru.get(("v", "a")) == b"a" and len(lru) == 2
    off = Lru(0)
    off.put(("v", "a"), b"a")
    assert off.get(("v", "a")) is None


@session_loop
async def test_closing_twice_and_concurrently_is_one_close(models_dir, url, published):
    """The server's supervisor and the store's owner may both close it when the server stops."""
    async with running_store(models_dir, url) as s:
        assert not (await s.get(["i1", "i2"])).degraded
        await asyncio.wait_for(asyncio.gather(s.store.aclose(), s.store.aclose()), timeout=5)
        await asyncio.wait_for(s.store.aclose(), timeout=5)
        assert s.store._closing is not None and s.store._closing.done()  # one close, finished, awaited by all
