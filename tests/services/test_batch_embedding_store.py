"""BatchGetEmbeddings over real gRPC with the real session Redis (its own db): each member answered exactly as
GetEmbeddings answers it, and all members' LRU misses read with ONE Redis MGET."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from devtools.stack import free_port
from recmesh.v1 import embedding_store_service_pb2 as pb
from serving.batch import MAX_BATCH_MEMBERS
from tests.services.batch_helpers import (
    DEADLINE_EXCEEDED,
    INVALID_ARGUMENT,
    NOT_FOUND,
    batch_outcomes,
    members,
    singles,
    whole_call_error,
)
from tests.services.embedding_store_helpers import cmdstat_calls, counter, running_store

session_loop = pytest.mark.asyncio(loop_scope="session")
DB = 5
DEGRADED = "recmesh_degradations_total"
Request = pb.GetEmbeddingsRequest


def batch_of(requests: list[Request], *timeouts_ms: int) -> pb.BatchGetEmbeddingsRequest:
    return pb.BatchGetEmbeddingsRequest(requests=requests, members=members(*timeouts_ms) if timeouts_ms else [])


def mixed_requests(model) -> list[Request]:  # type: ignore[no-untyped-def]
    """Overlapping members, duplicates and unknown ids inside one, only unknown ids, a pinned version."""
    ids = model.item_ids
    return [
        Request(item_ids=ids[0:5]),
        Request(item_ids=[*ids[3:9], "ghost", ids[3]]),
        Request(item_ids=["ghost-2"]),
        Request(item_ids=ids[100:140]),
        Request(item_ids=ids[5:8], model_version=model.version),
    ]


@session_loop
async def test_a_batch_answers_each_member_exactly_as_get_embeddings_does(models_dir, model, url, published):
    requests = mixed_requests(model)
    async with running_store(models_dir, url) as s:
        got = batch_outcomes(await s.stub.BatchGetEmbeddings(batch_of(requests, 0, 0, 0, 0, 0), timeout=10))
    async with running_store(models_dir, url) as s:  # a fresh store: the same LRU and Redis state to start from
        want = await singles(s.stub.GetEmbeddings, requests)
    assert all(kind == "response" for kind, _ in want)
    assert got == want


@session_loop
async def test_all_members_misses_are_one_mget(models_dir, model, url, client, published):
    requests = [Request(item_ids=model.item_ids[10 * i : 10 * i + 15]) for i in range(16)]  # 5 ids shared by two
    async with running_store(models_dir, url) as s:
        await s.get(model.item_ids[:3])  # a few LRU hits: a mixed batch still makes one trip
        before, trips, hits = cmdstat_calls(client, "mget"), s.store.stats.redis_round_trips, s.store.stats.redis_hits
        reply = await s.stub.BatchGetEmbeddings(batch_of(requests), timeout=10)
        assert cmdstat_calls(client, "mget") - before == 1 and s.store.stats.redis_round_trips - trips == 1
        assert [len(r.response.item_ids) for r in reply.results] == [15] * 16
        assert not any(r.response.degraded for r in reply.results)
        stats = s.store.stats
        assert stats.requests == 17 and stats.lru_hits == 3 and stats.lru_misses == 3 + 16 * 15 - 3
        assert stats.redis_hits - hits == 16 * 10 + 5 - 3  # each unique item the LRU lacked, fetched once


@session_loop
async def test_misses_redis_lacks_come_from_the_bundle_and_are_written_back_once(models_dir, model, url, client):
    requests = [Request(item_ids=model.item_ids[300 + 4 * i : 310 + 4 * i]) for i in range(8)]  # nothing published
    async with running_store(models_dir, url) as s:
        before = cmdstat_calls(client, "mget")
        got = batch_outcomes(await s.stub.BatchGetEmbeddings(batch_of(requests), timeout=10))
        assert cmdstat_calls(client, "mget") - before == 1
        await asyncio.gather(*s.store._pending)
        unique = len(set(model.item_ids[300:338]))
        assert s.store.stats.bundle_reads == s.store.stats.write_backs == unique
    async with running_store(models_dir, url) as s:  # now Redis has them all
        assert await singles(s.stub.GetEmbeddings, requests) == got
        assert s.store.stats.bundle_reads == 0


@session_loop
async def test_invalid_members_and_an_unknown_version_fail_alone(models_dir, model, url, client, published):
    ids = model.item_ids
    requests = [
        Request(item_ids=ids[400:405]),
        Request(item_ids=[]),
        Request(item_ids=[ids[0], "x" * 257]),
        Request(item_ids=ids[:2], model_version="v-does-not-exist"),
        Request(item_ids=ids[405:410]),
    ]
    async with running_store(models_dir, url) as s:
        before = cmdstat_calls(client, "mget")
        got = batch_outcomes(await s.stub.BatchGetEmbeddings(batch_of(requests, 0, 0, 0, 0, 0), timeout=10))
        assert cmdstat_calls(client, "mget") - before == 1  # the good members' misses, in one trip
        want = await singles(s.stub.GetEmbeddings, requests)
    assert got == want
    assert [answer[0] for kind, answer in got if kind == "error"] == [INVALID_ARGUMENT, INVALID_ARGUMENT, NOT_FOUND]
    assert [kind for kind, _ in got] == ["response", "error", "error", "error", "response"]
    assert "v-does-not-exist" in got[3][1][1]


@session_loop
async def test_a_member_out_of_time_is_deadline_exceeded_and_not_looked_up(
    models_dir, model, url, published, late_clock
):
    ids = model.item_ids
    requests = [Request(item_ids=ids[500:504]), Request(item_ids=ids[504:508]), Request(item_ids=ids[508:512])]
    async with running_store(models_dir, url) as s:
        reply = await s.stub.BatchGetEmbeddings(batch_of(requests, 0, 5, 0), timeout=10)
        assert [r.WhichOneof("result") for r in reply.results] == ["response", "error", "response"]
        assert reply.results[1].error.code == DEADLINE_EXCEEDED and "5 ms" in reply.results[1].error.message
        stats = s.store.stats
        assert (stats.requests, stats.lru_misses, stats.redis_hits) == (2, 8, 8)  # member 1 never looked up
        assert all(s.store.lru.get((model.version, item)) is None for item in ids[504:508])


@session_loop
async def test_redis_down_degrades_exactly_the_members_that_needed_it(models_dir, model):
    dead = f"redis://127.0.0.1:{free_port()}/0"
    ids = model.item_ids
    warm, requests = Request(item_ids=ids[600:603]), [Request(item_ids=ids[600:603]), Request(item_ids=ids[603:606])]
    requests.append(Request(item_ids=ids[606:609]))
    async with running_store(models_dir, dead) as s:
        await s.stub.GetEmbeddings(warm, timeout=10)  # into the LRU: the first member needs no Redis
        before = counter(s.metrics, DEGRADED, component="embedding_store", reason="redis_down")
        got = batch_outcomes(await s.stub.BatchGetEmbeddings(batch_of(requests), timeout=10))
        assert counter(s.metrics, DEGRADED, component="embedding_store", reason="redis_down") - before == 2
        flags = [r.response.degraded for r in (await s.stub.BatchGetEmbeddings(batch_of(requests[:1]))).results]
        assert flags == [False]
    async with running_store(models_dir, dead) as s:
        await s.stub.GetEmbeddings(warm, timeout=10)
        assert await singles(s.stub.GetEmbeddings, requests) == got


@session_loop
async def test_too_many_members_fail_the_whole_call(models_dir, model, url, published):
    request = Request(item_ids=model.item_ids[:1])
    async with running_store(models_dir, url) as s:
        code, details = await whole_call_error(
            s.stub.BatchGetEmbeddings(batch_of([request] * (MAX_BATCH_MEMBERS + 1)), timeout=10)
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "at most 256" in details
        assert s.store.stats.requests == 0
