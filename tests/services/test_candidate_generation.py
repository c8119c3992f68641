"""Candidate generation against a real server on loopback (port 0): served candidates equal the in-process model's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import numpy as np
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from recmesh.pipeline import MAX_SESSION
from recmesh.publish import write_pointer_file
from recmesh.v1 import candidate_generation_service_pb2 as pb
from services.candidate_generation import core
from services.candidate_generation.servicer import SERVICE_NAME
from serving import limits
from serving.errors import InvalidArgument
from serving.vectors import pack, unpack_scores
from tests.helpers import sample_sessions, two_version_models_dir
from tests.services.stage_servers import Stub, serve_candidates

session_loop = pytest.mark.asyncio(loop_scope="session")  # grpc.aio objects stay on one loop


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def served(models_dir: Path) -> AsyncIterator[tuple[Stub, grpc.aio.Channel]]:
    async with serve_candidates(models_dir) as pair:
        yield pair


@pytest.fixture
def stub(served: tuple[Stub, grpc.aio.Channel]) -> Stub:
    return served[0]


def expected(model, query: np.ndarray, k: int, exclude_rows: np.ndarray | None) -> tuple[list[str], np.ndarray]:
    rows, scores = model.retrieve(query, k, exclude_rows)
    return [model.item_ids[r] for r in rows], scores


def ids_scores(reply: pb.RetrieveCandidatesResponse) -> tuple[list[str], np.ndarray]:
    scores = unpack_scores(reply.scores)
    assert len(scores) == len(reply.item_ids)
    return list(reply.item_ids), scores


async def invalid(stub: Stub, **fields) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.RetrieveCandidates(pb.RetrieveCandidatesRequest(**fields), timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    return info.value.details()


@session_loop
async def test_health_reports_serving(served):
    health = health_pb2_grpc.HealthStub(served[1])
    for name in ("", SERVICE_NAME):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


@session_loop
async def test_query_by_item_ids_equals_in_process_retrieval(stub, model):
    for session in sample_sessions(8):
        history, unknown = model.lookup(session)
        assert not unknown
        exclude = np.unique(history)
        reply = await stub.RetrieveCandidates(
            pb.RetrieveCandidatesRequest(item_ids=session, k=50, exclude_item_ids=session), timeout=5
        )
        want_ids, want_scores = expected(model, model.query(history), 50, exclude)
        got_ids, got_scores = ids_scores(reply)
        assert got_ids == want_ids
        np.testing.assert_array_equal(got_scores, want_scores)
        assert reply.model_version == model.version
        assert not set(got_ids) & set(session)


@session_loop
async def test_query_by_vector_equals_in_process_retrieval(stub, model):
    rng = np.random.default_rng(3)
    for _ in range(3):
        query = rng.standard_normal(model.dim).astype(np.float32)
        exclude = [model.item_ids[i] for i in rng.choice(model.n_items, 20, replace=False)]
        reply = await stub.RetrieveCandidates(
            pb.RetrieveCandidatesRequest(query_vector=pack(query), k=30, exclude_item_ids=exclude), timeout=5
        )
        want_ids, want_scores = expected(model, query, 30, np.unique(model.lookup(exclude)[0]))
        got_ids, got_scores = ids_scores(reply)
        assert got_ids == want_ids
        np.testing.assert_array_equal(got_scores, want_scores)
        assert not set(got_ids) & set(exclude)


@session_loop
async def test_similar_items_shape_excludes_the_item_itself(stub, model):
    item = sample_sessions(1)[0][0]
    reply = await stub.RetrieveCandidates(
        pb.RetrieveCandidatesRequest(item_ids=[item], k=10, exclude_item_ids=[item]), timeout=5
    )
    row = model.lookup([item])[0]
    assert ids_scores(reply)[0] == expected(model, model.query(row), 10, row)[0]
    assert item not in ids_scores(reply)[0] and len(reply.item_ids) == 10


@session_loop
async def test_exclusions_are_honoured_and_unknown_exclusions_ignored(stub, model):
    session = sample_sessions(2)[1]
    first = await stub.RetrieveCandidates(pb.RetrieveCandidatesRequest(item_ids=session, k=20), timeout=5)
    top = list(first.item_ids[:5])
    reply = await stub.RetrieveCandidates(
        pb.RetrieveCandidatesRequest(item_ids=session, k=20, exclude_item_ids=[*top, *top, "no-such-item"]),
        timeout=5,
    )
    got = ids_scores(reply)[0]
    assert len(got) == 20 and not set(got) & set(top)
    assert got[:15] == list(first.item_ids[5:])
    assert list(reply.unknown_item_ids) == []  # excluded ids are not reported


@session_loop
async def test_unknown_query_ids_are_listed_and_skipped(stub, model):
    session = sample_sessions(3)[2]
    mixed = ["ghost-1", session[0], "ghost-2", *session[1:], "ghost-1"]
    reply = await stub.RetrieveCandidates(pb.RetrieveCandidatesRequest(item_ids=mixed, k=25), timeout=5)
    assert list(reply.unknown_item_ids) == ["ghost-1", "ghost-2"]
    assert ids_scores(reply)[0] == expected(model, model.query(model.lookup(session)[0]), 25, None)[0]


@session_loop
async def test_all_unknown_query_ids_give_empty_candidates_not_an_error(stub, model):
    reply = await stub.RetrieveCandidates(pb.RetrieveCandidatesRequest(item_ids=["x", "y"]), timeout=5)
    assert list(reply.item_ids) == [] and reply.scores == b""
    assert list(reply.unknown_item_ids) == ["x", "y"]
    assert reply.model_version == model.version


@session_loop
async def test_long_query_session_uses_its_most_recent_items(stub, model):
    session = [item for s in sample_sessions(40) for item in s][: 3 * MAX_SESSION]
    history = model.lookup(session)[0][-MAX_SESSION:]
    reply = await stub.RetrieveCandidates(pb.RetrieveCandidatesRequest(item_ids=session, k=40), timeout=5)
    assert ids_scores(reply)[0] == expected(model, model.query(history), 40, None)[0]


@session_loop
async def test_k_defaults_to_100_and_more_than_1000_is_invalid_argument(stub, model):
    assert model.n_items > limits.CANDIDATES_MAX_K
    query = pack(np.ones(model.dim, dtype=np.float32))
    default = await stub.RetrieveCandidates(pb.RetrieveCandidatesRequest(query_vector=query), timeout=5)
    assert len(default.item_ids) == limits.CANDIDATES_DEFAULT_K == 100
    most = await stub.RetrieveCandidates(
        pb.RetrieveCandidatesRequest(query_vector=query, k=limits.CANDIDATES_MAX_K), timeout=5
    )
    assert len(most.item_ids) == limits.CANDIDATES_MAX_K == 1000
    message = await invalid(stub, query_vector=query, k=limits.CANDIDATES_MAX_K + 1)
    assert "k must be >= 0 and <= 1000" in message and "got 1001" in message


@session_loop
async def test_bad_inputs_are_invalid_argument_and_the_server_keeps_serving(stub, model):
    good = pack(np.ones(model.dim, dtype=np.float32))
    assert "neither" in await invalid(stub)
    assert "both" in await invalid(stub, query_vector=good, item_ids=["i1"])
    assert "k must be >= 0" in await invalid(stub, query_vector=good, k=-1)
    too_many = [f"i{i}" for i in range(limits.MAX_EXCLUDE + 1)]
    assert f"at most {limits.MAX_EXCLUDE}" in await invalid(stub, query_vector=good, exclude_item_ids=too_many)
    too_many = [model.item_ids[0]] * (limits.MAX_ITEMS + 1)
    assert f"at most {limits.MAX_ITEMS} item_ids" in await invalid(stub, item_ids=too_many)
    message = await invalid(stub, query_vector=pack(np.ones(model.dim + 3, dtype=np.float32)))
    assert f"{model.dim + 3} dims" in message and f"expects {model.dim} dims" in message
    assert f"expects {model.dim} dims" in await invalid(stub, query_vector=good[:-1])
    for bad in (np.nan, np.inf, -np.inf):
        vector = np.ones(model.dim, dtype=np.float32)
        vector[3] = bad
        assert "NaN or infinite" in await invalid(stub, query_vector=pack(vector))

    reply = await stub.RetrieveCandidates(pb.RetrieveCandidatesRequest(query_vector=good, k=5), timeout=5)
    assert len(reply.item_ids) == 5 and reply.model_version == model.version


@session_loop
async def test_unknown_model_version_is_not_found_naming_it(stub):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.RetrieveCandidates(
            pb.RetrieveCandidatesRequest(item_ids=["i1"], model_version="20990101T000000Z-nope"), timeout=5
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert "20990101T000000Z-nope" in info.value.details()


@session_loop
async def test_each_request_is_served_by_the_version_it_pins(bundle_path, model, tmp_path):
    models_dir, old, new = two_version_models_dir(bundle_path, tmp_path)
    session = sample_sessions(1)[0]
    want = expected(model, model.query(model.lookup(session)[0]), 10, None)[0]
    write_pointer_file(models_dir, old)  # published: old; then a flip to new (both pinnable: recmesh.registry)
    async with serve_candidates(models_dir) as (stub, _channel):
        current = await stub.RetrieveCandidates(pb.RetrieveCandidatesRequest(item_ids=session, k=10), timeout=5)
        assert current.model_version == old  # the published bundle is served by default
        write_pointer_file(models_dir, new)
        for version in (new, old, new, old):
            reply = await stub.RetrieveCandidates(
                pb.RetrieveCandidatesRequest(item_ids=session, k=10, model_version=version), timeout=5
            )
            assert reply.model_version == version
            assert ids_scores(reply)[0] == want  # the copy holds the same vectors and index


def test_core_validates_before_touching_a_model():
    with pytest.raises(InvalidArgument, match="exactly one"):
        core.validate_query()
    with pytest.raises(InvalidArgument, match="k must be"):
        core.validate_query(query_vector=b"\0" * 4, k=-5)
    with pytest.raises(InvalidArgument, match="k must be"):
        core.validate_query(query_vector=b"\0" * 4, k=10**6)
    assert core.validate_query(item_ids=["a"]).k == limits.CANDIDATES_DEFAULT_K
    assert core.validate_query(item_ids=["a"], k=7).k == 7


@session_loop
async def test_a_request_is_validated_once(stub, model, spy):
    calls = spy(core, "validate_query")
    await stub.RetrieveCandidates(pb.RetrieveCandidatesRequest(item_ids=model.item_ids[:3], k=5), timeout=5)
    assert len(calls) == 1


def test_recent_known_matches_lookup_then_trim(model):
    session = ["ghost", *[item for s in sample_sessions(30) for item in s], "ghost", "phantom"]
    rows, unknown = model.recent_known(session, limit=MAX_SESSION)
    np.testing.assert_array_equal(rows, model.lookup(session)[0][-MAX_SESSION:])
    assert unknown == ["ghost", "phantom"]  # "ghost" at the start is older than the items used
