"""A recommendation with options.sources (REST and gRPC) equals the offline pipeline with that recipe; a bad
recipe is a 400 / INVALID_ARGUMENT naming the problem and the field."""

from __future__ import annotations

import grpc
import grpc.aio
import pytest

from recmesh.pipeline import Model
from recmesh.v1 import recommendation_service_pb2 as pb
from tests.gateway.harness import Gateway, assert_error, field_violations, ids
from tests.helpers import sample_sessions

session_loop = pytest.mark.asyncio(loop_scope="session")

RECIPES = ["ann:60", "covisit:60", "ann:40,covisit:40", "covisit:30,ann:30,popular:10"]


def offline(model: Model, session: list[str], recipe: str, k: int = 10, rank: bool = True) -> list[str]:
    history, _ = model.lookup(session)
    rows, _ = model.recommend(history, k, rank=rank, recipe=model.recipe(recipe))
    return model.ids_of(rows)


@session_loop
async def test_each_recipe_served_equals_the_offline_pipeline(gateway: Gateway, model: Model) -> None:
    for recipe in RECIPES:
        for session in sample_sessions(6):
            body = await gateway.recommend(session=session, k=10, options={"sources": recipe})
            assert ids(body) == offline(model, session, recipe), recipe
            reply = await gateway.stub.Recommend(
                pb.RecommendRequest(session_item_ids=session, k=10, options=pb.RecommendOptions(sources=recipe)),
                timeout=5,
            )
            assert [i.item_id for i in reply.items] == ids(body)
        unranked = await gateway.recommend(session=session, k=10, options={"sources": recipe, "skip_ranking": True})
        assert ids(unranked) == offline(model, session, recipe, rank=False)


@session_loop
@pytest.mark.parametrize(
    ("sources", "says"),
    [
        ("ann:10,nearest:5", "unknown source 'nearest': valid sources are ann, covisit, popular, given"),
        ("", "the recipe is empty"),
        ("ann:2000", "must be >= 1 and <= 1000"),
    ],
)
async def test_a_bad_recipe_is_400_and_invalid_argument(gateway: Gateway, sources: str, says: str) -> None:
    session = sample_sessions(1)[0]
    response = await gateway.http.post("/v1/recommend", json={"session": session, "options": {"sources": sources}})
    error = assert_error(response, 400, "INVALID_ARGUMENT", says)
    assert "options.sources" in field_violations(error)
    if sources:  # proto: an empty string is "unset"
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await gateway.stub.Recommend(
                pb.RecommendRequest(session_item_ids=session, options=pb.RecommendOptions(sources=sources)), timeout=5
            )
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and says in (info.value.details() or "")
