"""Candidate sources served: a recipe over gRPC gives the offline pipeline's pool, and the served pool ranked by
the ranking service gives the offline recommendation, for several recipes; bad recipes are INVALID_ARGUMENT."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import numpy as np
import pytest
import pytest_asyncio

from recmesh.pipeline import MAX_SESSION, Model
from recmesh.v1 import candidate_generation_service_pb2 as pb
from services.candidate_generation import core
from serving.errors import InvalidArgument
from serving.vectors import unpack_scores
from tests.helpers import sample_sessions
from tests.services.stage_servers import Served, Stub, rank_request, serve_candidates, serve_ranking

session_loop = pytest.mark.asyncio(loop_scope="session")  # grpc.aio objects stay on one loop

RECIPES = [
    "ann:50",
    "covisit:40",
    "ann:30,covisit:30",
    "covisit:20,ann:20,popular:10",
    "popular:15",
    "slist:40",  # the slist source, and the ranker's slist features (the test bundle has them)
    "ann:30,slist:30",
    "slist:20,covisit:20,ann:20,popular:10",
]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stages(models_dir: Path) -> AsyncIterator[tuple[Stub, Served]]:
    async with serve_candidates(models_dir) as (stub, _), serve_ranking(models_dir) as ranking:
        yield stub, ranking


@session_loop
async def test_served_pool_and_ranking_equal_the_offline_pipeline_for_every_recipe(stages, model: Model):
    assert "slist" in model.sources and "slist_score" in model.ranker.names
    stub, ranking = stages
    for recipe_text in [*RECIPES, str(model.default_recipe)]:
        recipe = model.recipe(recipe_text)
        for session in sample_sessions(12):
            history = model.lookup(session)[0][-MAX_SESSION:]
            reply = await stub.RetrieveCandidates(
                pb.RetrieveCandidatesRequest(item_ids=session, exclude_item_ids=session, sources=recipe_text),
                timeout=5,
            )
            pool = model.candidates(history, recipe)
            assert list(reply.item_ids) == model.ids_of(pool.rows), recipe_text
            assert unpack_scores(reply.scores).tobytes() == pool.scores.tobytes()
            ranked = await ranking.rank.Rank(
                rank_request(session, reply.item_ids, unpack_scores(reply.scores), k=10), timeout=5
            )
            want_rows, want_scores = model.recommend(np.array(history), 10, recipe=recipe)
            assert [item.item_id for item in ranked.items] == model.ids_of(want_rows), recipe_text
            np.testing.assert_allclose([item.score for item in ranked.items], want_scores, rtol=1e-6)


@session_loop
async def test_given_ids_and_k_with_a_recipe(stages, model: Model):
    stub, _ = stages
    session = sample_sessions(1)[0]
    given = [model.item_ids[r] for r in (5, 3, 5, 9)] + ["no-such-item"]
    reply = await stub.RetrieveCandidates(
        pb.RetrieveCandidatesRequest(item_ids=session, sources="given:10,ann:20", given_item_ids=given, k=12),
        timeout=5,
    )
    wanted = [model.item_ids[r] for r in (5, 3, 9) if model.item_ids[r] not in session]
    assert list(reply.item_ids)[: len(wanted)] == wanted
    assert len(reply.item_ids) == 12


@session_loop
@pytest.mark.parametrize(
    ("sources", "message"),
    [
        ("ann:10,nearest:5", "unknown source 'nearest': valid sources are ann, covisit, popular, given"),
        (",", "the recipe is empty"),
        ("ann:5000", "must be >= 1 and <= 1000"),
        ("ann", "not source:count"),
    ],
)
async def test_bad_recipes_are_invalid_argument_naming_the_problem(stages, sources: str, message: str):
    stub, _ = stages
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.RetrieveCandidates(pb.RetrieveCandidatesRequest(item_ids=["x"], sources=sources), timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (info.value.details() or "")


def test_a_source_the_bundle_lacks_is_invalid_argument(model: Model):
    lacking = type(model).__new__(type(model))
    lacking.__dict__.update(model.__dict__)
    lacking.sources = {name: s for name, s in model.sources.items() if name != "covisit"}  # an older bundle
    query = core.validate_query(item_ids=sample_sessions(1)[0], sources="ann:10,covisit:10")
    with pytest.raises(InvalidArgument, match="'covisit' is not in this bundle"):
        core.retrieve_candidates(lacking, query)
    served = core.retrieve_candidates(lacking, core.validate_query(item_ids=sample_sessions(1)[0], sources="ann:10"))
    assert len(served.item_ids) == 10  # what it has still works
