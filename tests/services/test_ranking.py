"""Ranking against a real server on loopback (port 0): served order equals the in-process model's, and
candidate service + ranking service together equal `Model.recommend`."""

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
from recmesh.v1 import candidate_generation_service_pb2 as cg_pb
from recmesh.v1 import candidate_generation_service_pb2_grpc as cg_grpc
from recmesh.v1 import ranking_service_pb2 as pb
from recmesh.v1 import ranking_service_pb2_grpc as pb_grpc
from services.candidate_generation import server as cg_server
from services.candidate_generation.settings import Settings as CgSettings
from services.ranking import core
from services.ranking.servicer import SERVICE_NAME
from serving import limits
from serving.errors import InvalidArgument
from tests.helpers import sample_sessions, two_version_models_dir
from tests.services.stage_servers import Served, ids_of, rank_request, serve_ranking

session_loop = pytest.mark.asyncio(loop_scope="session")  # grpc.aio objects stay on one loop


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def served(models_dir: Path) -> AsyncIterator[Served]:
    async with serve_ranking(models_dir) as s:
        yield s


@pytest.fixture
def stub(served: Served) -> pb_grpc.RankingServiceStub:
    return served.rank


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def candidates_stub(models_dir: Path) -> AsyncIterator[cg_grpc.CandidateGenerationServiceStub]:
    settings = CgSettings(RECMESH_MODELS_DIR=str(models_dir), RECMESH_MODEL_VERSION="", METRICS_PORT=0)
    server, port, _health, _generator = await cg_server.create_server(settings, "127.0.0.1:0")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield cg_grpc.CandidateGenerationServiceStub(channel)
    await server.stop(None)


def ids_scores(reply: pb.RankResponse) -> tuple[list[str], np.ndarray]:
    return [i.item_id for i in reply.items], np.array([i.score for i in reply.items], dtype=np.float32)


async def invalid(stub: pb_grpc.RankingServiceStub, request: pb.RankRequest) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Rank(request, timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    return info.value.details()


@session_loop
async def test_health_reports_serving(served):
    health = health_pb2_grpc.HealthStub(served.channel)
    for name in ("", SERVICE_NAME):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


@session_loop
async def test_served_order_equals_in_process_rank(stub, model):
    reordered = 0
    for session in sample_sessions(8):
        history = model.lookup(session)[0]
        candidates, scores = model.retrieve(model.query(history), 100, np.unique(history))
        want_rows, want_probs = model.rank(history, candidates, scores)
        reply = await stub.Rank(rank_request(session, ids_of(model, candidates), scores), timeout=5)
        got_ids, got_probs = ids_scores(reply)
        assert got_ids == [model.item_ids[r] for r in want_rows]
        np.testing.assert_allclose(got_probs, want_probs, rtol=1e-6)
        assert reply.model_version == model.version and list(reply.unknown_item_ids) == []
        reordered += not np.array_equal(want_rows, candidates)
    assert reordered  # the ranker did change the order, so the comparison means something


@session_loop
async def test_k_truncates_the_ranking_and_zero_returns_all(stub, model):
    session = sample_sessions(1)[0]
    history = model.lookup(session)[0]
    candidates, scores = model.retrieve(model.query(history), 50, np.unique(history))
    request = rank_request(session, ids_of(model, candidates), scores)
    everything = ids_scores(await stub.Rank(request, timeout=5))[0]
    assert len(everything) == 50
    request.k = 7
    assert ids_scores(await stub.Rank(request, timeout=5))[0] == everything[:7]


@session_loop
async def test_unknown_ids_are_listed_and_skipped(stub, model):
    session = sample_sessions(2)[1]
    history = model.lookup(session)[0]
    candidates, scores = model.retrieve(model.query(history), 40, np.unique(history))
    want_rows, _ = model.rank(history, candidates, scores)
    mixed_ids = ids_of(model, candidates)
    mixed_ids.insert(3, "ghost-candidate")
    mixed_scores = np.insert(scores, 3, 0.9)
    reply = await stub.Rank(
        rank_request(["ghost-session", *session, "ghost-session"], mixed_ids, mixed_scores), timeout=5
    )
    assert list(reply.unknown_item_ids) == ["ghost-session", "ghost-candidate"]
    assert ids_scores(reply)[0] == [model.item_ids[r] for r in want_rows]


@session_loop
async def test_duplicate_candidates_keep_their_first_occurrence(stub, model):
    session = sample_sessions(3)[2]
    history = model.lookup(session)[0]
    candidates, scores = model.retrieve(model.query(history), 30, np.unique(history))
    want_rows, _ = model.rank(history, candidates, scores)
    ids = [*ids_of(model, candidates), model.item_ids[candidates[0]]]  # a later duplicate
    reply = await stub.Rank(rank_request(session, ids, [*scores, -5.0]), timeout=5)
    assert ids_scores(reply)[0] == [model.item_ids[r] for r in want_rows]


@session_loop
async def test_empty_or_unknown_session_returns_candidates_in_given_order(stub, model):
    given = ids_of(model, [5, 9, 1])
    for session in ([], ["nobody-knows"]):
        reply = await stub.Rank(rank_request(session, given, [0.1, 0.7, 0.4]), timeout=5)
        got_ids, got_scores = ids_scores(reply)
        assert got_ids == given
        np.testing.assert_allclose(got_scores, [0.1, 0.7, 0.4], rtol=1e-6)
        assert list(reply.unknown_item_ids) == session


@session_loop
async def test_long_session_is_trimmed_to_its_most_recent_items(stub, model):
    session = [item for s in sample_sessions(40) for item in s][: 3 * MAX_SESSION]
    history = model.lookup(session)[0][-MAX_SESSION:]
    candidates, scores = model.retrieve(model.query(history), 60, np.unique(history))
    want_rows, _ = model.rank(history, candidates, scores)
    reply = await stub.Rank(rank_request(session, ids_of(model, candidates), scores), timeout=5)
    assert ids_scores(reply)[0] == [model.item_ids[r] for r in want_rows]


@session_loop
async def test_bad_inputs_are_invalid_argument_and_the_server_keeps_serving(stub, model):
    one = [model.item_ids[0]]
    too_many = model.item_ids[: limits.MAX_ITEMS + 1]
    assert f"at most {limits.MAX_ITEMS}" in await invalid(stub, rank_request([], too_many, np.zeros(len(too_many))))
    assert "k must be >= 0" in await invalid(stub, rank_request([], one, [0.5], k=-1))
    message = await invalid(stub, rank_request([], one, [0.5], k=limits.RANK_MAX_K + 1))
    assert f"k must be >= 0 and <= {limits.RANK_MAX_K}" in message
    assert "must not be empty" in await invalid(stub, pb.RankRequest(session_item_ids=[model.item_ids[1]]))
    for bad in (float("nan"), float("inf")):
        assert "finite" in await invalid(stub, rank_request([], one, [bad]))
    assert "2 candidates but 1 retrieval scores" in await invalid(stub, rank_request([], [*one, *one], [0.5]))
    bad_bytes = pb.RankRequest(candidate_ids=one, candidate_scores=b"\0" * 3)
    assert "candidate_scores is 3 bytes" in await invalid(stub, bad_bytes)

    reply = await stub.Rank(rank_request([model.item_ids[1]], one, [0.5]), timeout=5)
    assert [i.item_id for i in reply.items] == [model.item_ids[0]] and reply.model_version == model.version


@session_loop
async def test_unknown_model_version_is_not_found_naming_it(stub, model):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Rank(rank_request([], [model.item_ids[0]], [0.5], model_version="20990101T000000Z-nope"), timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert "20990101T000000Z-nope" in info.value.details()


@session_loop
async def test_each_request_is_served_by_the_version_it_pins(bundle_path, model, tmp_path):
    models_dir, old, new = two_version_models_dir(bundle_path, tmp_path)
    session = sample_sessions(1)[0]
    history = model.lookup(session)[0]
    candidates, scores = model.retrieve(model.query(history), 20, np.unique(history))
    want = [model.item_ids[r] for r in model.rank(history, candidates, scores)[0]]
    request = rank_request(session, ids_of(model, candidates), scores)
    write_pointer_file(models_dir, old)  # published: old; then a flip to new (both pinnable: recmesh.registry)
    async with serve_ranking(models_dir) as s:
        assert (await s.rank.Rank(request, timeout=5)).model_version == old  # the published bundle by default
        write_pointer_file(models_dir, new)
        for version in (new, old, new, old):
            request.model_version = version
            reply = await s.rank.Rank(request, timeout=5)
            assert reply.model_version == version
            assert ids_scores(reply)[0] == want  # the copy holds the same ranker


def test_core_ranks_like_the_model_without_grpc(model):
    session = sample_sessions(5)[4]
    history = model.lookup(session)[0]
    candidates, scores = model.retrieve(model.query(history), 25, np.unique(history))
    query = core.validate_query(
        session_item_ids=session, candidate_ids=ids_of(model, candidates), retrieval_scores=scores.tolist(), k=5
    )
    ranked = core.rank_candidates(model, query)
    assert ranked.item_ids == [model.item_ids[r] for r in model.rank(history, candidates, scores)[0][:5]]
    with pytest.raises(InvalidArgument, match="retrieval scores"):
        core.validate_query(session_item_ids=[], candidate_ids=["a", "b"], retrieval_scores=[1.0])


@session_loop
async def test_a_request_is_validated_once(stub, model, spy):
    calls = spy(core, "validate_query")
    await stub.Rank(rank_request([], model.item_ids[:3], [0.3, 0.2, 0.1]), timeout=5)
    assert len(calls) == 1


# ------------------------------------------------------------------------------------ candidates by row
@session_loop
async def test_candidates_then_ranking_by_row_or_by_id_equal_model_recommend(stub, candidates_stub, model):
    """Hop 2's answer passed on as it came (packed scores; rows as the gateway sends them, or ids as other callers do)
    is ranked alike either way, and equals the offline pipeline's recommendation."""
    for session in sample_sessions(12)[4:]:
        history = model.lookup(session)[0]
        found = await candidates_stub.RetrieveCandidates(
            cg_pb.RetrieveCandidatesRequest(item_ids=session, k=200, exclude_item_ids=session), timeout=5
        )
        assert np.frombuffer(found.rows, "<i4").tolist() == [model.index_of[i] for i in found.item_ids]
        common = dict(session_item_ids=session, candidate_scores=found.scores, k=10, model_version=found.model_version)
        by_row = await stub.Rank(pb.RankRequest(candidate_rows=found.rows, **common), timeout=5)
        by_id = await stub.Rank(pb.RankRequest(candidate_ids=found.item_ids, **common), timeout=5)
        assert by_row == by_id
        want_rows, want_scores = model.recommend(history, 10, 200)
        got_ids, got_scores = ids_scores(by_row)
        assert got_ids == [model.item_ids[r] for r in want_rows]
        np.testing.assert_allclose(got_scores, want_scores, rtol=1e-6)


@session_loop
async def test_repeated_candidate_rows_keep_their_first_occurrence(stub, model):
    session = sample_sessions(3)[2]
    history = model.lookup(session)[0]
    candidates, scores = model.retrieve(model.query(history), 30, np.unique(history))
    want_rows, _ = model.rank(history, candidates, scores)
    rows = np.append(candidates, candidates[0]).astype("<i4")  # a later repeat with another score
    request = pb.RankRequest(
        session_item_ids=session,
        candidate_rows=rows.tobytes(),
        candidate_scores=np.append(scores, -5.0).astype("<f4").tobytes(),
        model_version=model.version,
    )
    assert ids_scores(await stub.Rank(request, timeout=5))[0] == [model.item_ids[r] for r in want_rows]


@session_loop
async def test_bad_candidate_rows_are_invalid_argument(stub, model):
    one_row, score = np.array([0], "<i4").tobytes(), np.array([0.5], "<f4").tobytes()
    v = model.version
    both = pb.RankRequest(
        candidate_ids=[model.item_ids[0]], candidate_rows=one_row, candidate_scores=score, model_version=v
    )
    assert "not both" in await invalid(stub, both)
    assert "need the model_version" in await invalid(
        stub, pb.RankRequest(candidate_rows=one_row, candidate_scores=score)
    )
    ragged = pb.RankRequest(candidate_rows=b"\0" * 5, candidate_scores=score, model_version=v)
    assert "not a whole number of little-endian int32 rows" in await invalid(stub, ragged)
    for row in (-1, model.n_items):
        outside = pb.RankRequest(
            candidate_rows=np.array([row], "<i4").tobytes(), candidate_scores=score, model_version=v
        )
        assert f"= {row} is not a row of the model version's {model.n_items} items" in await invalid(stub, outside)
    two_rows = pb.RankRequest(candidate_rows=np.array([0, 1], "<i4").tobytes(), candidate_scores=score, model_version=v)
    assert "2 candidates but 1 retrieval scores" in await invalid(stub, two_rows)
    reply = await stub.Rank(pb.RankRequest(candidate_rows=one_row, candidate_scores=score, model_version=v), timeout=5)
    assert [i.item_id for i in reply.items] == [model.item_ids[0]]
