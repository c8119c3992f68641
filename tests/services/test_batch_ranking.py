"""BatchRank against a real ranking server on loopback (port 0): each member answered exactly as Rank answers it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest
import pytest_asyncio

from recmesh.v1 import ranking_service_pb2 as pb
from recmesh.v1 import ranking_service_pb2_grpc as pb_grpc
from services.ranking import core
from serving import limits, logs
from serving.batch import MAX_BATCH_MEMBERS
from tests.helpers import sample_sessions
from tests.services.batch_helpers import (
    DEADLINE_EXCEEDED,
    INVALID_ARGUMENT,
    NOT_FOUND,
    batch_outcomes,
    members,
    singles,
    whole_call_error,
)
from tests.services.stage_servers import ids_of, rank_request
from tests.services.stage_servers import serve_ranking as serve

session_loop = pytest.mark.asyncio(loop_scope="session")  # grpc.aio objects stay on one loop


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stub(models_dir) -> AsyncIterator[pb_grpc.RankingServiceStub]:  # type: ignore[no-untyped-def]
    async with serve(models_dir) as served:
        yield served.rank


def requests_for(model, n: int) -> list[pb.RankRequest]:  # type: ignore[no-untyped-def]
    """n realistic Rank requests: sessions with their retrieved candidates, several k, an unknown id, a cold start."""
    out = []
    for i, session in enumerate(sample_sessions(n)):
        history = model.lookup(session)[0]
        candidates, scores = model.retrieve(model.query(history), 40 + i, np.unique(history))
        ids = ids_of(model, candidates)
        if i % 3 == 1:
            ids.insert(2, "ghost-candidate")
            scores = np.insert(scores, 2, 0.5)
        out.append(rank_request(session if i % 4 else [], ids, scores, k=(0, 5, 10)[i % 3]))
    return out


@session_loop
async def test_a_batch_answers_each_member_exactly_as_rank_does(stub, model):
    requests = requests_for(model, 12)
    want = await singles(stub.Rank, requests)
    assert all(kind == "response" for kind, _ in want)
    with_members = await stub.BatchRank(pb.BatchRankRequest(requests=requests, members=members(*[0] * 12)), timeout=10)
    without = await stub.BatchRank(pb.BatchRankRequest(requests=requests), timeout=10)
    assert batch_outcomes(with_members) == batch_outcomes(without) == want


@session_loop
async def test_invalid_members_fail_alone_with_the_single_calls_status(stub, model):
    good = requests_for(model, 2)
    one = [model.item_ids[0]]
    requests = [
        good[0],
        rank_request([], one, [0.5], k=limits.RANK_MAX_K + 1),  # k above the cap
        pb.RankRequest(session_item_ids=one),  # no candidates
        pb.RankRequest(candidate_ids=one, candidate_scores=b"\0" * 3),  # scores not float32
        rank_request([], one, [0.5], model_version="20990101T000000Z-nope"),  # unknown version
        good[1],
    ]
    want = await singles(stub.Rank, requests)
    got = batch_outcomes(await stub.BatchRank(pb.BatchRankRequest(requests=requests), timeout=10))
    assert got == want
    assert [kind for kind, _ in got] == ["response", "error", "error", "error", "error", "response"]
    assert [answer[0] for kind, answer in got if kind == "error"] == [INVALID_ARGUMENT] * 3 + [NOT_FOUND]
    assert f"<= {limits.RANK_MAX_K}" in got[1][1][1] and "20990101T000000Z-nope" in got[4][1][1]


@session_loop
async def test_a_member_out_of_time_is_deadline_exceeded_and_not_computed(stub, model, monkeypatch):
    ranked: list[int] = []
    original = core.rank_candidates

    def first_one_slow(m, query):  # type: ignore[no-untyped-def]
        ranked.append(len(query.candidate_ids))
        if len(ranked) == 1:
            time.sleep(0.05)  # member 0 takes 50 ms, so member 1's 20 ms are gone when it is reached
        return original(m, query)

    monkeypatch.setattr(core, "rank_candidates", first_one_slow)
    requests = requests_for(model, 4)
    reply = await stub.BatchRank(pb.BatchRankRequest(requests=requests, members=members(0, 20, 10_000, 0)), timeout=10)
    codes = [r.error.code if r.WhichOneof("result") == "error" else 0 for r in reply.results]
    assert codes == [0, DEADLINE_EXCEEDED, 0, 0]
    assert "20 ms" in reply.results[1].error.message
    sizes = [len(r.candidate_ids) for r in requests]
    assert ranked == [sizes[0], sizes[2], sizes[3]]  # member 1 was never ranked


@session_loop
async def test_each_member_is_handled_under_its_own_request_id(stub, model, monkeypatch):
    seen: list[str | None] = []
    original = core.validate_query

    def recording(**kwargs):  # type: ignore[no-untyped-def]
        seen.append(logs.get_request_id())
        return original(**kwargs)

    monkeypatch.setattr(core, "validate_query", recording)
    requests = requests_for(model, 3)
    await stub.BatchRank(pb.BatchRankRequest(requests=requests, members=members(0, 0, 0)), timeout=10)
    assert seen == ["member-0", "member-1", "member-2"]
    seen.clear()
    call = (("x-request-id", "the-call"),)
    await stub.BatchRank(pb.BatchRankRequest(requests=requests), timeout=10, metadata=call)
    assert seen == ["the-call"] * 3  # no members: every request is the call's


@session_loop
async def test_too_many_members_or_members_not_one_per_request_fail_the_whole_call(stub, model):
    request = requests_for(model, 1)[0]
    most = await stub.BatchRank(pb.BatchRankRequest(requests=[request] * MAX_BATCH_MEMBERS), timeout=30)
    assert len(most.results) == MAX_BATCH_MEMBERS == 256
    code, details = await whole_call_error(
        stub.BatchRank(pb.BatchRankRequest(requests=[request] * (MAX_BATCH_MEMBERS + 1)), timeout=30)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "at most 256" in details and "257" in details
    code, details = await whole_call_error(
        stub.BatchRank(pb.BatchRankRequest(requests=[request] * 3, members=members(0, 0)), timeout=10)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "one member per request" in details
    assert len((await stub.BatchRank(pb.BatchRankRequest(), timeout=10)).results) == 0
