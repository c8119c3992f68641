"""BatchRetrieveCandidates against a real server on loopback (port 0): each member answered exactly as
RetrieveCandidates answers it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest
import pytest_asyncio

from recmesh.v1 import candidate_generation_service_pb2 as pb
from services.candidate_generation import core
from serving import limits
from serving.batch import MAX_BATCH_MEMBERS
from serving.vectors import pack
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
from tests.services.stage_servers import Stub
from tests.services.stage_servers import serve_candidates as serve

session_loop = pytest.mark.asyncio(loop_scope="session")  # grpc.aio objects stay on one loop
Request = pb.RetrieveCandidatesRequest


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stub(models_dir) -> AsyncIterator[Stub]:  # type: ignore[no-untyped-def]
    async with serve(models_dir) as (served, _channel):
        yield served


def requests_for(model, n: int) -> list[Request]:  # type: ignore[no-untyped-def]
    """n requests of every form: by items (with exclusions, an unknown id), by vector, default k."""
    out = []
    rng = np.random.default_rng(5)
    for i, session in enumerate(sample_sessions(n)):
        if i % 3 == 0:
            out.append(Request(item_ids=session, k=50, exclude_item_ids=session))
        elif i % 3 == 1:
            out.append(Request(item_ids=["ghost", *session], k=20 + i))
        else:
            query = rng.standard_normal(model.dim).astype(np.float32)
            out.append(Request(query_vector=pack(query), exclude_item_ids=session[:3]))
    return out


@session_loop
async def test_a_batch_answers_each_member_exactly_as_retrieve_candidates_does(stub, model):
    requests = requests_for(model, 9)
    want = await singles(stub.RetrieveCandidates, requests)
    assert all(kind == "response" for kind, _ in want)
    batch = pb.BatchRetrieveCandidatesRequest(requests=requests, members=members(*[0] * 9))
    assert batch_outcomes(await stub.BatchRetrieveCandidates(batch, timeout=10)) == want


@session_loop
async def test_invalid_members_fail_alone_with_the_single_calls_status(stub, model):
    good = requests_for(model, 2)
    vector = pack(np.ones(model.dim + 3, dtype=np.float32))
    requests = [
        good[0],
        Request(query_vector=vector),  # wrong vector size
        Request(item_ids=["i1"], k=limits.CANDIDATES_MAX_K + 1),  # k above the cap
        Request(),  # neither query form
        Request(item_ids=["i1"], model_version="20990101T000000Z-nope"),  # unknown version
        good[1],
    ]
    want = await singles(stub.RetrieveCandidates, requests)
    got = batch_outcomes(
        await stub.BatchRetrieveCandidates(pb.BatchRetrieveCandidatesRequest(requests=requests), timeout=10)
    )
    assert got == want
    assert [kind for kind, _ in got] == ["response", "error", "error", "error", "error", "response"]
    assert [answer[0] for kind, answer in got if kind == "error"] == [INVALID_ARGUMENT] * 3 + [NOT_FOUND]
    assert f"expects {model.dim} dims" in got[1][1][1]


@session_loop
async def test_a_member_out_of_time_is_deadline_exceeded_and_not_computed(stub, model, monkeypatch):
    retrieved: list[int] = []
    original = core.retrieve_candidates

    def first_one_slow(m, query, allowed=None):  # type: ignore[no-untyped-def]
        retrieved.append(query.k)
        if len(retrieved) == 1:
            time.sleep(0.05)  # member 0 takes 50 ms, so member 1's 20 ms are gone when it is reached
        return original(m, query, allowed)

    monkeypatch.setattr(core, "retrieve_candidates", first_one_slow)
    session = sample_sessions(1)[0]
    requests = [Request(item_ids=session, k=k) for k in (11, 12, 13)]
    batch = pb.BatchRetrieveCandidatesRequest(requests=requests, members=members(0, 20, 0))
    reply = await stub.BatchRetrieveCandidates(batch, timeout=10)
    assert [r.WhichOneof("result") for r in reply.results] == ["response", "error", "response"]
    assert reply.results[1].error.code == DEADLINE_EXCEEDED
    assert retrieved == [11, 13]  # member 1 was never retrieved


@session_loop
async def test_too_many_members_fail_the_whole_call(stub):
    request = Request(item_ids=["i1"], k=1)
    code, details = await whole_call_error(
        stub.BatchRetrieveCandidates(
            pb.BatchRetrieveCandidatesRequest(requests=[request] * (MAX_BATCH_MEMBERS + 1)), timeout=10
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "at most 256" in details
