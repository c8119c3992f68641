"""Degrade, don't fail: a stage down, or answering with another model version than the pinned one, still gets a
useful answer that says what it skipped; Redis down leaves recommendations without history and events failing
503. (A stage late past the request's budget: test_budget.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from devtools.stack import free_port
from gateway.hops import CANDIDATES_HOP, RANKING_HOP, Hop
from recmesh.v1 import candidate_generation_service_pb2, ranking_service_pb2, recommendation_service_pb2
from services.candidate_generation.servicer import CandidateGenerationServicer
from services.ranking.servicer import RankingServicer
from tests.gateway.harness import assert_error, ids, reference, running_gateway, start_model_stage, start_stage
from tests.helpers import two_version_models_dir

session_loop = pytest.mark.asyncio(loop_scope="session")
pb = recommendation_service_pb2


@session_loop
async def test_ranking_down_returns_retrieval_order_degraded(
    models_dir: Path, redis_server, stage_ports: dict[str, int], model, session_items
) -> None:  # type: ignore[no-untyped-def]
    ranking = await start_stage("ranking", models_dir, redis_server.url)
    ports = {**stage_ports, "ranking": ranking.port}
    async with running_gateway(models_dir, redis_server.url, ports) as gateway:
        healthy = (await gateway.http.post("/v1/recommend", json={"session": session_items})).json()
        assert ids(healthy) == reference(model, session_items) and not healthy["degraded"]
        await ranking.stop()
        body = (await gateway.http.post("/v1/recommend", json={"session": session_items})).json()
        assert ids(body) == reference(model, session_items, rank=False)
        assert body["degraded"] is True
        (degradation,) = body["degradations"]
        assert degradation["stage"] == "ranking" and "ranking unavailable" in degradation["reason"]
        reply = await gateway.stub.Recommend(pb.RecommendRequest(session_item_ids=session_items), timeout=5)
        assert reply.degraded and reply.degradations[0].stage == "ranking"
        ready = await gateway.http.get("/readyz")
        # Degraded is still ready (this process answers): the outage is in the body, not a 503.
        assert ready.status_code == 200 and "ranking" in ready.json()["degraded"]
        # A stage asked for on its own has no fallback: 503, not 500.
        direct = await gateway.http.post("/v1/rank", json={"session": session_items, "candidates": ["a"]})
        assert_error(direct, 503, "UNAVAILABLE", "ranking unavailable")


@session_loop
async def test_candidate_generation_down_returns_popular_items_degraded(
    models_dir: Path, redis_server, stage_ports: dict[str, int], model, session_items
) -> None:  # type: ignore[no-untyped-def]
    candidates = await start_stage("candidate_generation", models_dir, redis_server.url)
    await candidates.stop()
    ports = {**stage_ports, "candidate_generation": candidates.port}
    async with running_gateway(models_dir, redis_server.url, ports) as gateway:
        body = (await gateway.http.post("/v1/recommend", json={"session": session_items, "k": 5})).json()
        rows, _ = model.popular(5, model.lookup(session_items)[0])
        assert ids(body) == [model.item_ids[r] for r in rows]
        assert body["degraded"] is True
        assert [d["stage"] for d in body["degradations"]] == ["candidates"]
        assert "candidate-generation unavailable" in body["degradations"][0]["reason"]


@session_loop
async def test_embedding_store_down_lets_candidate_generation_build_the_query(
    models_dir: Path, redis_server, stage_ports: dict[str, int], model, session_items
) -> None:  # type: ignore[no-untyped-def]
    # Nothing listens at the store's address. (Starting and stopping a real store here instead hung the
    # session's grpc.aio loop about once in ten full runs; stopping a store is covered in test_embedding_store.)
    down = free_port()
    async with running_gateway(models_dir, redis_server.url, {**stage_ports, "embedding_store": down}) as gateway:
        body = (await gateway.http.post("/v1/recommend", json={"session": session_items})).json()
        assert body["degraded"] is True and body["degradations"][0]["stage"] == "embeddings"
        assert "embedding-store unavailable" in body["degradations"][0]["reason"]
        assert ids(body) == reference(model, session_items)  # candidate generation's query by items is the same
        only_unknown = (await gateway.http.post("/v1/recommend", json={"session": ["nope"], "k": 3})).json()
        rows, _ = model.popular(3)
        assert ids(only_unknown) == [model.item_ids[r] for r in rows]
        assert only_unknown["unknown_item_ids"] == ["nope"]


class OwnVersionRanking(RankingServicer):
    """The bug under test: a ranking service that ranks with its own current version, whatever the request pinned
    (the candidates' rows read in its own version's item table)."""

    async def rank(self, request: ranking_service_pb2.RankRequest) -> ranking_service_pb2.RankResponse:
        own = ranking_service_pb2.RankRequest()
        own.CopyFrom(request)
        own.model_version = (await self.ranker.registry.get()).version
        return await super().rank(own)


class OwnVersionCandidates(CandidateGenerationServicer):
    """The same bug in candidate generation."""

    async def retrieve(
        self, request: candidate_generation_service_pb2.RetrieveCandidatesRequest
    ) -> candidate_generation_service_pb2.RetrieveCandidatesResponse:
        own = candidate_generation_service_pb2.RetrieveCandidatesRequest()
        own.CopyFrom(request)
        own.model_version = ""
        return await super().retrieve(own)


def degraded_count(reason: str) -> float:
    return REGISTRY.get_sample_value("recmesh_degradations_total", {"component": "gateway", "reason": reason}) or 0.0


@session_loop
@pytest.mark.parametrize(
    ("stage", "servicer", "hop"),
    [("ranking", OwnVersionRanking, RANKING_HOP), ("candidate_generation", OwnVersionCandidates, CANDIDATES_HOP)],
)
async def test_a_hop_answering_with_another_version_than_the_pinned_one_is_a_failed_hop(
    stage: str,
    servicer: type,
    hop: Hop,
    tmp_path: Path,
    bundle_path: Path,
    models_dir: Path,
    redis_server,
    stage_ports: dict[str, int],
    model,
    session_items,
) -> None:  # type: ignore[no-untyped-def]
    """Hop 1 pins the version; a later hop that answers with another one (here: the stage's own newer version,
    the request's ignored) is not used: the answer degrades to that hop's fallback, says which versions met, and
    is counted. One answer never mixes versions."""
    own_models, pinned, other = two_version_models_dir(bundle_path, tmp_path)  # `other` is the stage's current
    rogue = await start_model_stage(stage, own_models, servicer)
    kind = f"{hop.service} version mismatch"
    before = degraded_count(kind)
    try:
        async with running_gateway(models_dir, redis_server.url, {**stage_ports, stage: rogue.port}) as gateway:
            body = (await gateway.post("/v1/recommend", {"session": session_items, "k": 5})).json()
    finally:
        await rogue.stop()
    assert pinned == model.version and body["model_version"] == pinned
    assert body["degradations"] == [
        {"stage": hop.stage, "reason": f"{kind}: answered {other!r}, pinned {pinned!r}; {hop.fallback}"}
    ]
    if hop is RANKING_HOP:
        assert ids(body) == reference(model, session_items, k=5, rank=False)
    else:
        rows, _ = model.popular(5, model.lookup(session_items)[0])
        assert ids(body) == [model.item_ids[r] for r in rows]
        assert "ranking" not in body["timings"]
    assert degraded_count(kind) == before + 1


@session_loop
async def test_redis_down_recommends_without_history_and_events_fail_503(
    models_dir: Path, redis_server, stage_ports: dict[str, int], model, session_items
) -> None:  # type: ignore[no-untyped-def]
    dead = f"redis://127.0.0.1:{free_port()}/0"
    async with running_gateway(models_dir, dead, stage_ports) as gateway:
        body = (await gateway.http.post("/v1/recommend", json={"user_id": "u", "session": session_items})).json()
        assert ids(body) == reference(model, session_items)
        assert [d["stage"] for d in body["degradations"]] == ["events"]
        failed = await gateway.http.post("/v1/events", json={"user_id": "u", "item_id": "a"})
        assert_error(failed, 503, "UNAVAILABLE", "redis")
        ready = await gateway.http.get("/readyz")
        assert ready.status_code == 200 and list(ready.json()["degraded"]) == ["redis"]


class RankingBeforeRows(RankingServicer):
    """A ranking replica from before RankRequest.candidate_rows: it does not know the field, so it never reads it."""

    async def rank(self, request: ranking_service_pb2.RankRequest) -> ranking_service_pb2.RankResponse:
        old = ranking_service_pb2.RankRequest()
        old.CopyFrom(request)
        old.ClearField("candidate_rows")
        return await super().rank(old)


@session_loop
async def test_a_ranking_replica_older_than_candidate_rows_is_asked_again_by_ids(
    models_dir: Path, redis_server, stage_ports: dict[str, int], model, session_items
) -> None:  # type: ignore[no-untyped-def]
    """During a rolling upgrade a new gateway may meet an old ranking replica: it sees no candidates and refuses;
    the gateway asks it again by ids, and the visitor gets the ranked answer, not a 400."""
    old = await start_model_stage("ranking", models_dir, RankingBeforeRows)
    try:
        async with running_gateway(models_dir, redis_server.url, {**stage_ports, "ranking": old.port}) as gateway:
            for _ in range(2):
                body = (await gateway.http.post("/v1/recommend", json={"session": session_items})).json()
                assert ids(body) == reference(model, session_items) and not body["degraded"], body
    finally:
        await old.stop()
