"""The request's budget bounds a recommendation whatever the stages do: a real stage service that answers long
after its deadline is cut at the deadline (gRPC DEADLINE_EXCEEDED), the answer falls back to what the gateway
can serve without it and says why, and it reaches the caller within the budget, not after the stage's delay.

The late stages are the real services (registry, core, interceptor, Rank and BatchRank) whose servicer sleeps
before answering; the gateway in front of them is the real one, with a small budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.budget import RESERVE_MS
from recmesh.v1 import candidate_generation_service_pb2, ranking_service_pb2
from services.candidate_generation.servicer import CandidateGenerationServicer
from services.ranking.servicer import RankingServicer
from tests.gateway.harness import (
    SLOW_MACHINE_BUDGET_MS,
    Gateway,
    ids,
    reference,
    running_gateway,
    start_model_stage,
)

session_loop = pytest.mark.asyncio(loop_scope="session")

LATE_S = 1.0  # how late the slow stages answer: far past any budget below
BUDGET_MS = 120  # hops 1 and 2 take a few ms on a warm stack; this leaves a loaded 2-core machine room
SLACK_MS = 60  # the gateway's own work after the deadline on a loaded machine: wake-up, answer, JSON, ASGI


class LateRanking(RankingServicer):
    """The real ranking servicer, answering every Rank (alone or in a BatchRank) LATE_S late."""

    reached = 0

    async def rank(self, request: ranking_service_pb2.RankRequest) -> ranking_service_pb2.RankResponse:
        LateRanking.reached += 1
        await asyncio.sleep(LATE_S)
        return await super().rank(request)


class LateCandidates(CandidateGenerationServicer):
    """The real candidate-generation servicer, answering every retrieval LATE_S late."""

    reached = 0

    async def retrieve(
        self, request: candidate_generation_service_pb2.RetrieveCandidatesRequest
    ) -> candidate_generation_service_pb2.RetrieveCandidatesResponse:
        LateCandidates.reached += 1
        await asyncio.sleep(LATE_S)
        return await super().retrieve(request)


async def recommend_within(gateway: Gateway, budget_ms: int, **body: Any) -> tuple[dict[str, Any], float]:
    """POST /v1/recommend with ``budget_ms``: the 200 answer and the wall-clock milliseconds it took."""
    start = time.perf_counter()
    response = await gateway.post("/v1/recommend", {**body, "options": {"budget_ms": budget_ms}})
    wall_ms = (time.perf_counter() - start) * 1000
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer, wall_ms


def assert_cut_at_the_budget(answer: dict[str, Any], wall_ms: float) -> None:
    """Answered within the budget (plus the gateway's own work), not after the stage's delay; and not early:
    the late hop was waited for until its deadline (the budget less the answer's reserve)."""
    total = answer["timings"]["total"]
    assert BUDGET_MS - RESERVE_MS - 5 <= total <= BUDGET_MS + SLACK_MS, answer["timings"]
    assert wall_ms <= BUDGET_MS + SLACK_MS, f"{wall_ms:.0f} ms on the wall clock; timings {answer['timings']}"


@contextlib.asynccontextmanager
async def gateway_with_late(
    name: str, servicer: type, models_dir: Path, redis_url: str, stage_ports: dict[str, int], session: list[str]
) -> AsyncIterator[Gateway]:
    """The gateway in front of the real stages, but with stage ``name`` served by ``servicer`` (late); the
    stages before it warmed up first (in a budget no machine runs out of)."""
    late = await start_model_stage(name, models_dir, servicer)
    try:
        async with running_gateway(models_dir, redis_url, {**stage_ports, name: late.port}) as gateway:
            warm = await gateway.post("/v1/embeddings", {"item_ids": session})
            assert warm.status_code == 200, warm.text
            if name == "ranking":
                options = {"skip_ranking": True, "budget_ms": SLOW_MACHINE_BUDGET_MS}
                warm = await gateway.post("/v1/recommend", {"session": session, "options": options})
                assert warm.status_code == 200 and not warm.json()["degraded"], warm.text
            yield gateway
    finally:
        await late.stop()


@session_loop
async def test_a_ranking_stage_late_past_its_deadline_is_cut_at_the_budget_and_retrieval_order_served(
    models_dir: Path, redis_server, stage_ports: dict[str, int], model, session_items
) -> None:  # type: ignore[no-untyped-def]
    args = (models_dir, redis_server.url, stage_ports, session_items)
    async with gateway_with_late("ranking", LateRanking, *args) as gateway:
        reached = LateRanking.reached
        answer, wall_ms = await recommend_within(gateway, BUDGET_MS, session=session_items)
        assert LateRanking.reached == reached + 1  # the call reached the stage: it was late, not refused
    assert answer["degradations"] == [
        {"stage": "ranking", "reason": "ranking unavailable (DEADLINE_EXCEEDED): retrieval order served"}
    ]
    assert answer["degraded"] is True and answer["model_version"] == model.version
    assert ids(answer) == reference(model, session_items, rank=False)
    assert_cut_at_the_budget(answer, wall_ms)


@session_loop
async def test_a_candidate_stage_late_past_its_deadline_is_cut_at_the_budget_and_popular_items_served(
    models_dir: Path, redis_server, stage_ports: dict[str, int], model, session_items
) -> None:  # type: ignore[no-untyped-def]
    args = (models_dir, redis_server.url, stage_ports, session_items)
    async with gateway_with_late("candidate_generation", LateCandidates, *args) as gateway:
        reached = LateCandidates.reached
        answer, wall_ms = await recommend_within(gateway, BUDGET_MS, session=session_items, k=5)
        assert LateCandidates.reached == reached + 1
    assert answer["degradations"] == [
        {"stage": "candidates", "reason": "candidate-generation unavailable (DEADLINE_EXCEEDED): popular items served"}
    ]
    rows, _ = model.popular(5, model.lookup(session_items)[0])
    assert ids(answer) == [model.item_ids[r] for r in rows]
    assert answer["model_version"] == model.version
    assert "ranking" not in answer["timings"]  # nothing to rank: ranking was not called
    assert_cut_at_the_budget(answer, wall_ms)


@session_loop
async def test_a_history_read_that_uses_up_the_budget_leaves_no_hop_called(
    models_dir: Path, stage_ports: dict[str, int], model, session_items
) -> None:  # type: ignore[no-untyped-def]
    """A Redis that accepts connections and never answers: the visitor's history read waits until the budget's
    deadline, then hops 1 and 2 are not called at all ("budget exhausted") and popular items are served."""
    connections: list[asyncio.StreamWriter] = []

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        await reader.read()  # until the client hangs up

    silent = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    try:
        async with running_gateway(models_dir, f"redis://127.0.0.1:{port}/0", stage_ports) as gateway:
            answer, wall_ms = await recommend_within(gateway, BUDGET_MS, user_id="u1", session=session_items, k=5)
    finally:
        silent.close()
        for writer in connections:
            writer.close()
    assert [(d["stage"], d["reason"]) for d in answer["degradations"]] == [
        ("events", "redis unavailable: visitor history not read"),
        ("embeddings", "budget exhausted: query built by candidate-generation"),
        ("candidates", "budget exhausted: popular items served"),
    ]
    assert "embeddings" not in answer["timings"] and "candidates" not in answer["timings"]
    rows, _ = model.popular(5, model.lookup(session_items)[0])
    assert ids(answer) == [model.item_ids[r] for r in rows]
    assert_cut_at_the_budget(answer, wall_ms)
