"""Recommendations over REST and gRPC equal the offline pipeline's, with every option the API has."""

from __future__ import annotations

import grpc
import grpc.aio
import pytest

from recmesh.v1 import recommendation_service_pb2
from serving import vectors
from tests.gateway.harness import Gateway, assert_error, ids, reference

session_loop = pytest.mark.asyncio(loop_scope="session")
pb = recommendation_service_pb2


@session_loop
async def test_rest_recommendation_equals_the_offline_pipeline(gateway: Gateway, model, session_items) -> None:  # type: ignore[no-untyped-def]
    response = await gateway.http.post("/v1/recommend", json={"session": session_items, "k": 10})
    assert response.status_code == 200, response.text
    body = response.json()
    assert ids(body) == reference(model, session_items)
    assert body["model_version"] == model.version
    assert body["degraded"] is False and body["degradations"] == []
    assert body["unknown_item_ids"] == [] and body["session_items_dropped"] == 0
    assert not set(ids(body)) & set(session_items)
    assert len(body["recommendation_id"]) == 32
    assert {"embeddings", "candidates", "ranking", "total"} <= set(body["timings"])


@session_loop
async def test_grpc_recommendation_equals_the_offline_pipeline_with_timing_trailers(
    gateway: Gateway, model, session_items
) -> None:  # type: ignore[no-untyped-def]
    call = gateway.stub.Recommend(
        pb.RecommendRequest(session_item_ids=session_items, k=7), timeout=5, metadata=(("x-request-id", "grpc-req-1"),)
    )
    reply = await call
    assert [i.item_id for i in reply.items] == reference(model, session_items, k=7)
    assert reply.model_version == model.version and not reply.degraded
    trailers = dict(await call.trailing_metadata())
    assert trailers["x-request-id"] == "grpc-req-1"
    stages = [part.split(";")[0] for part in trailers["server-timing"].split(", ")]
    assert stages == ["embeddings", "candidates", "ranking", "total"]
    assert [t.stage for t in reply.timings] == stages


@session_loop
async def test_rest_sends_server_timing_and_echoes_the_request_id(gateway: Gateway, session_items) -> None:
    response = await gateway.http.post(
        "/v1/recommend", json={"session": session_items}, headers={"x-request-id": "rest-req-7"}
    )
    assert response.headers["x-request-id"] == "rest-req-7"
    timing = response.headers["server-timing"]
    assert [p.split(";")[0] for p in timing.split(", ")] == ["embeddings", "candidates", "ranking", "total"]
    assert all(float(p.split("dur=")[1]) >= 0 for p in timing.split(", "))
    generated = await gateway.http.post("/v1/recommend", json={"session": session_items})
    assert len(generated.headers["x-request-id"]) == 32


@session_loop
async def test_skip_ranking_returns_retrieval_order(gateway: Gateway, model, session_items) -> None:  # type: ignore[no-untyped-def]
    body = (
        await gateway.http.post(
            "/v1/recommend", json={"session": session_items, "k": 15, "options": {"skip_ranking": True}}
        )
    ).json()
    assert ids(body) == reference(model, session_items, k=15, rank=False)
    assert "ranking" not in body["timings"] and not body["degraded"]


@session_loop
async def test_candidate_count_defaults_to_the_bundles_and_a_callers_count_overrides_it(
    gateway: Gateway,
    model,
    session_items,  # type: ignore[no-untyped-def]
) -> None:
    trained = model.manifest["params"]["candidates"]
    assert trained != 200, "the fixture bundle must not use the gateway's fallback count, or this proves nothing"
    # Find a session whose answer depends on how many candidates are ranked, so the two counts are told apart.
    sessions = [session_items, *([model.item_ids[i], model.item_ids[i + 1]] for i in range(0, 400, 2))]
    session = next(s for s in sessions if reference(model, s) != reference(model, s, n=1000))
    default = (await gateway.http.post("/v1/recommend", json={"session": session})).json()
    asked = (
        await gateway.http.post("/v1/recommend", json={"session": session, "options": {"candidate_count": 1000}})
    ).json()
    assert ids(default) == reference(model, session)  # the bundle's default recipe
    assert ids(asked) == reference(model, session, n=1000)
    grpc_default = await gateway.stub.Recommend(pb.RecommendRequest(session_item_ids=session, k=10), timeout=5)
    assert [i.item_id for i in grpc_default.items] == ids(default)


@session_loop
async def test_bring_your_own_query_vector(gateway: Gateway, model, session_items) -> None:  # type: ignore[no-untyped-def]
    history, _ = model.lookup(session_items)
    query = model.query(history)
    # With the session's own query vector and the session, the answer is the session's recommendation.
    body = (
        await gateway.http.post(
            "/v1/recommend", json={"session": session_items, "options": {"query_vector": query.tolist()}}
        )
    ).json()
    assert ids(body) == reference(model, session_items)
    assert "embeddings" not in body["timings"]
    # A vector alone: nearest items, nothing to rank against (retrieval order).
    rows, _ = model.retrieve(query, 200)
    reply = await gateway.stub.Recommend(
        pb.RecommendRequest(k=5, options=pb.RecommendOptions(query_vector=vectors.pack(query))), timeout=5
    )
    assert [i.item_id for i in reply.items] == [model.item_ids[r] for r in rows[:5]]


@session_loop
async def test_exclusions_and_include_seen(gateway: Gateway, model, session_items) -> None:  # type: ignore[no-untyped-def]
    first = reference(model, session_items, k=3)
    body = (
        await gateway.http.post(
            "/v1/recommend", json={"session": session_items, "options": {"exclude_item_ids": first}}
        )
    ).json()
    assert not set(ids(body)) & set(first)
    seen = (
        await gateway.http.post(
            "/v1/recommend", json={"session": session_items, "k": 50, "options": {"include_seen": True}}
        )
    ).json()
    assert set(ids(seen)) & set(session_items)  # the session's own items are the nearest to its query


@session_loop
async def test_long_session_is_trimmed_and_reported(gateway: Gateway, model) -> None:  # type: ignore[no-untyped-def]
    session = model.item_ids[100:160]
    body = (await gateway.http.post("/v1/recommend", json={"session": session})).json()
    assert body["session_items_dropped"] == 10
    assert ids(body) == reference(model, session)  # Model.recommend keeps the most recent 50 too


@session_loop
async def test_unknown_ids_are_listed_and_an_all_unknown_session_gets_popular_items(gateway: Gateway, model) -> None:  # type: ignore[no-untyped-def]
    known = model.item_ids[7]
    mixed = (await gateway.http.post("/v1/recommend", json={"session": ["nope-1", known, "nope-2"]})).json()
    assert mixed["unknown_item_ids"] == ["nope-1", "nope-2"]
    assert ids(mixed) == reference(model, [known])
    unknown = (await gateway.http.post("/v1/recommend", json={"session": ["nope-1", "nope-2"], "k": 5})).json()
    rows, _ = model.popular(5)
    assert ids(unknown) == [model.item_ids[r] for r in rows]
    assert unknown["unknown_item_ids"] == ["nope-1", "nope-2"] and not unknown["degraded"]
    assert unknown["model_version"] == model.version


@session_loop
async def test_unknown_model_version_is_a_404(gateway: Gateway, session_items) -> None:
    response = await gateway.http.post(
        "/v1/recommend", json={"session": session_items, "model_version": "19990101T000000Z-deadbeef"}
    )
    assert_error(response, 404, "NOT_FOUND", "19990101T000000Z-deadbeef")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await gateway.stub.Recommend(
            pb.RecommendRequest(session_item_ids=session_items, model_version="nope"), timeout=5
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND and "nope" in info.value.details()
