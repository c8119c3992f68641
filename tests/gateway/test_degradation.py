"""Degrade, don't fail: a stage down, late or out of budget still gets a useful answer that says what it skipped;
Redis down leaves recommendations without history and events failing 503."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import pytest

from gateway.clients import CandidateGenerationClient
from gateway.recommend import Recommender, RecommendOptions, RecommendRequest
from recmesh.v1 import recommendation_service_pb2
from tests.conftest import free_port
from tests.gateway.harness import Gateway, assert_error, ids, reference, running_gateway, start_stage

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
        assert ready.status_code == 503 and "ranking" in ready.json()["failed"]
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


class SlowCandidates(CandidateGenerationClient):
    """The real client, after a pause that eats the rest of the request's budget."""

    def __init__(self, inner: CandidateGenerationClient, pause_s: float) -> None:
        self.inner, self.pause_s = inner, pause_s

    async def retrieve(self, **kwargs: Any) -> Any:  # type: ignore[override]
        await asyncio.sleep(self.pause_s)
        return await self.inner.retrieve(**{**kwargs, "timeout_s": 5})


@session_loop
async def test_budget_used_up_before_ranking_skips_it(gateway: Gateway, model, session_items) -> None:  # type: ignore[no-untyped-def]
    clients = copy.copy(gateway.clients)
    clients.candidates = SlowCandidates(clients.candidates, 0.06)
    slow = Recommender(clients, gateway.app.state.core.versions, default_budget_ms=200)
    # The request's own budget_ms is the budget (the default, 200 ms, would leave time to rank).
    rec = await slow.recommend(RecommendRequest(session_items, options=RecommendOptions(budget_ms=50)))
    assert rec.item_ids == reference(model, session_items, rank=False)
    assert [(d.stage, d.reason) for d in rec.degradations] == [("ranking", "budget exhausted: retrieval order served")]
    assert "ranking" not in rec.timings


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
        assert ready.status_code == 503 and list(ready.json()["failed"]) == ["redis"]
