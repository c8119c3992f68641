"""Every stage on its own (embeddings, similar items, candidates, ranking) over REST and gRPC, against the
offline pipeline."""

from __future__ import annotations

import grpc
import grpc.aio
import numpy as np
import pytest

from recmesh.v1 import common_pb2, recommendation_service_pb2
from serving import limits, vectors
from tests.gateway.harness import Gateway, assert_error, ids

session_loop = pytest.mark.asyncio(loop_scope="session")
pb = recommendation_service_pb2


@session_loop
async def test_embeddings_are_the_bundle_vectors(gateway: Gateway, model) -> None:  # type: ignore[no-untyped-def]
    wanted = [model.item_ids[3], "nope", model.item_ids[9]]
    body = (await gateway.http.post("/v1/embeddings", json={"item_ids": wanted})).json()
    assert body["model_version"] == model.version and body["dim"] == model.dim
    assert body["unknown_item_ids"] == ["nope"]
    for row in (3, 9):
        np.testing.assert_allclose(body["embeddings"][model.item_ids[row]], model.space.vectors[row], rtol=1e-6)
    reply = await gateway.stub.GetItemEmbeddings(pb.GetItemEmbeddingsRequest(item_ids=wanted), timeout=5)
    np.testing.assert_array_equal(vectors.unpack(reply.vectors, reply.dim), model.space.vectors[[3, 9]])
    assert_error(await gateway.http.post("/v1/embeddings", json={"item_ids": []}), 400, "INVALID_ARGUMENT")


@session_loop
async def test_similar_items_and_an_unknown_item_is_404(gateway: Gateway, model) -> None:  # type: ignore[no-untyped-def]
    item = model.item_ids[12]
    response = await gateway.http.get(f"/v1/items/{item}/similar", params={"k": 8})
    assert response.status_code == 200 and "candidates;dur=" in response.headers["server-timing"]
    rows, _ = model.retrieve(model.query(np.array([12])), 8, np.array([12]))
    assert ids(response.json()) == [model.item_ids[r] for r in rows]
    assert item not in ids(response.json())
    assert_error(await gateway.http.get("/v1/items/nope/similar"), 404, "NOT_FOUND", "nope")
    assert_error(await gateway.http.get(f"/v1/items/{item}/similar?k=0"), 400, "INVALID_ARGUMENT", "k")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await gateway.stub.GetSimilarItems(pb.GetSimilarItemsRequest(item_id="nope"), timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    reply = await gateway.stub.GetSimilarItems(pb.GetSimilarItemsRequest(item_id=item), timeout=5)
    assert len(reply.items) == limits.DEFAULT_K


@session_loop
async def test_find_candidates_by_vector_or_by_items(gateway: Gateway, model, session_items) -> None:  # type: ignore[no-untyped-def]
    history, _ = model.lookup(session_items)
    query = model.query(history)
    rows, _ = model.retrieve(query, 20, np.unique(history))
    expected = [model.item_ids[r] for r in rows]
    by_items = await gateway.http.post(
        "/v1/candidates", json={"item_ids": session_items, "k": 20, "exclude_item_ids": session_items}
    )
    assert ids(by_items.json(), "candidates") == expected
    by_vector = await gateway.http.post(
        "/v1/candidates", json={"query_vector": query.tolist(), "k": 20, "exclude_item_ids": session_items}
    )
    assert ids(by_vector.json(), "candidates") == expected
    reply = await gateway.stub.FindCandidates(
        pb.FindCandidatesRequest(query_vector=vectors.pack(query), k=20, exclude_item_ids=session_items), timeout=5
    )
    assert [c.item_id for c in reply.candidates] == expected
    both = await gateway.http.post("/v1/candidates", json={"item_ids": ["a"], "query_vector": [1.0]})
    assert_error(both, 400, "INVALID_ARGUMENT", "exactly one")
    assert_error(await gateway.http.post("/v1/candidates", json={}), 400, "INVALID_ARGUMENT", "exactly one")
    wrong_dim = await gateway.http.post("/v1/candidates", json={"query_vector": [1.0, 2.0]})
    assert_error(wrong_dim, 400, "INVALID_ARGUMENT", "dims")


@session_loop
async def test_rank_candidates_the_caller_brings(gateway: Gateway, model, session_items) -> None:  # type: ignore[no-untyped-def]
    history, _ = model.lookup(session_items)
    rows, scores = model.retrieve(model.query(history), 30, np.unique(history))
    ranked_rows, _ = model.rank(history, rows, scores)
    expected = [model.item_ids[r] for r in ranked_rows]
    candidates = [{"item_id": model.item_ids[r], "score": float(s)} for r, s in zip(rows, scores, strict=True)]
    body = (await gateway.http.post("/v1/rank", json={"session": session_items, "candidates": candidates})).json()
    assert ids(body) == expected
    plain = await gateway.http.post(
        "/v1/rank", json={"session": session_items, "candidates": [model.item_ids[r] for r in rows] + ["nope"], "k": 5}
    )
    assert plain.status_code == 200 and len(ids(plain.json())) == 5
    assert plain.json()["unknown_item_ids"] == ["nope"]
    reply = await gateway.stub.RankCandidates(
        pb.RankCandidatesRequest(
            session_item_ids=session_items,
            candidates=[common_pb2.ItemScore(item_id=c["item_id"], score=c["score"]) for c in candidates],
        ),
        timeout=5,
    )
    assert [i.item_id for i in reply.items] == expected
    empty = await gateway.http.post("/v1/rank", json={"session": session_items, "candidates": []})
    assert_error(empty, 400, "INVALID_ARGUMENT", "candidates")
