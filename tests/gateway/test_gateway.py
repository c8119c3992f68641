"""The gateway against the real stage services on loopback (port 0), a real Redis and the tiny test bundle.

REST goes through httpx (ASGITransport for speed, plus one test over real HTTP on uvicorn), gRPC through a real
grpc.aio server. Served answers are compared with `Model.recommend`, the in-process reference.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import importlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import httpx
import numpy as np
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from gateway import core as gw
from gateway.__main__ import _HttpServer, serve
from gateway.app import create_app
from gateway.budget import Budget, server_timing
from gateway.clients import CandidateGenerationClient, Clients
from gateway.events import EventStore
from gateway.grpc_api import SERVICE_NAME, create_grpc_server
from gateway.settings import Settings
from recmesh.v1 import common_pb2, recommendation_service_pb2, recommendation_service_pb2_grpc
from serving import vectors
from serving.server import make_channel
from tests.conftest import free_port

session_loop = pytest.mark.asyncio(loop_scope="session")
pb = recommendation_service_pb2

STAGES = ("embedding_store", "candidate_generation", "ranking")


# -------------------------------------------------------------------------------------------------- harness
class Stage:
    """One real stage service (services/<name>/server.py) on 127.0.0.1:0."""

    def __init__(self, server: grpc.aio.Server, port: int, core: Any) -> None:
        self.server, self.port, self.core = server, port, core

    async def stop(self) -> None:
        await self.server.stop(None)
        aclose = getattr(self.core, "aclose", None)  # the embedding store's Redis client, closed before the loop
        if aclose is not None:
            await aclose()


async def start_stage(name: str, models_dir: Path, redis_url: str) -> Stage:
    settings_cls = importlib.import_module(f"services.{name}.settings").Settings
    create_server = importlib.import_module(f"services.{name}.server").create_server
    settings = settings_cls(RECMESH_MODELS_DIR=str(models_dir), REDIS_URL=redis_url)
    server, port, _health, core = await create_server(settings, "127.0.0.1:0")
    return Stage(server, port, core)


def gateway_settings(models_dir: Path, redis_url: str, **ports: int) -> Settings:
    env = {"RECMESH_MODELS_DIR": str(models_dir), "REDIS_URL": redis_url}
    for name, port in ports.items():
        env[f"{name.upper()}_ADDR"] = f"127.0.0.1:{port}"
    return Settings(**env)


@dataclass
class Gateway:
    """A gateway (REST app + gRPC server) wired to given stage servers."""

    app: Any
    clients: Clients
    http: httpx.AsyncClient
    stub: recommendation_service_pb2_grpc.RecommendationServiceStub
    channel: grpc.aio.Channel
    grpc_server: grpc.aio.Server
    grpc_port: int


@contextlib.asynccontextmanager
async def running_gateway(models_dir: Path, redis_url: str, ports: dict[str, int]) -> AsyncIterator[Gateway]:
    settings = gateway_settings(models_dir, redis_url, **ports)
    clients = Clients(
        make_channel(f"127.0.0.1:{ports['embedding_store']}"),
        make_channel(f"127.0.0.1:{ports['candidate_generation']}"),
        make_channel(f"127.0.0.1:{ports['ranking']}"),
        EventStore.from_url(redis_url),
    )
    app = create_app(settings, clients=clients)
    async with app.router.lifespan_context(app):
        grpc_server, grpc_port, _ = await create_grpc_server(app.state.core, "127.0.0.1:0")
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
            try:
                yield Gateway(
                    app,
                    clients,
                    http,
                    recommendation_service_pb2_grpc.RecommendationServiceStub(channel),
                    channel,
                    grpc_server,
                    grpc_port,
                )
            finally:
                await channel.close()
                await grpc_server.stop(None)
                await clients.close()


@dataclass
class Stack:
    gateway: Gateway
    ports: dict[str, int]


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def stack(models_dir: Path, redis_server) -> AsyncIterator[Stack]:  # type: ignore[no-untyped-def]
    stages = {name: await start_stage(name, models_dir, redis_server.url) for name in STAGES}
    ports = {name: stage.port for name, stage in stages.items()}
    async with running_gateway(models_dir, redis_server.url, ports) as gateway:
        yield Stack(gateway, ports)
    for stage in stages.values():
        await stage.stop()


@pytest.fixture(scope="session")
def session_items(model) -> list[str]:  # type: ignore[no-untyped-def]
    """A plausible session: a few items that follow each other in the catalogue's popularity order."""
    rows, _ = model.popular(40)
    return [model.item_ids[r] for r in rows[[3, 17, 5, 29, 11]]]


def reference(model, session: list[str], k: int = 10, n: int | None = None, rank: bool = True) -> list[str]:  # type: ignore[no-untyped-def]
    """The offline pipeline's answer, with the bundle's own candidate count unless `n` is given."""
    history, _ = model.lookup(session)
    rows, _ = model.recommend(history, k, n or model.manifest["params"]["candidates"], rank=rank)
    return [model.item_ids[r] for r in rows]


def ids(body: dict[str, Any], key: str = "items") -> list[str]:
    return [i["item_id"] for i in body[key]]


def assert_error(response: httpx.Response, status: int, code: str, says: str = "") -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    assert says.lower() in error["message"].lower(), error["message"]
    return error


# ------------------------------------------------------------------------------------------ recommendations
@session_loop
async def test_rest_recommendation_equals_the_offline_pipeline(stack: Stack, model, session_items) -> None:  # type: ignore[no-untyped-def]
    response = await stack.gateway.http.post("/v1/recommend", json={"session": session_items, "k": 10})
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
    stack: Stack, model, session_items
) -> None:  # type: ignore[no-untyped-def]
    call = stack.gateway.stub.Recommend(
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
async def test_rest_sends_server_timing_and_echoes_the_request_id(stack: Stack, session_items) -> None:
    response = await stack.gateway.http.post(
        "/v1/recommend", json={"session": session_items}, headers={"x-request-id": "rest-req-7"}
    )
    assert response.headers["x-request-id"] == "rest-req-7"
    timing = response.headers["server-timing"]
    assert [p.split(";")[0] for p in timing.split(", ")] == ["embeddings", "candidates", "ranking", "total"]
    assert all(float(p.split("dur=")[1]) >= 0 for p in timing.split(", "))
    generated = await stack.gateway.http.post("/v1/recommend", json={"session": session_items})
    assert len(generated.headers["x-request-id"]) == 32


@session_loop
async def test_skip_ranking_returns_retrieval_order(stack: Stack, model, session_items) -> None:  # type: ignore[no-untyped-def]
    body = (
        await stack.gateway.http.post(
            "/v1/recommend", json={"session": session_items, "k": 15, "options": {"skip_ranking": True}}
        )
    ).json()
    assert ids(body) == reference(model, session_items, k=15, rank=False)
    assert "ranking" not in body["timings"] and not body["degraded"]


@session_loop
async def test_candidate_count_defaults_to_the_bundles_and_a_callers_count_overrides_it(
    stack: Stack,
    model,
    session_items,  # type: ignore[no-untyped-def]
) -> None:
    trained = model.manifest["params"]["candidates"]
    assert trained != 200, "the fixture bundle must not use the gateway's fallback count, or this proves nothing"
    # Find a session whose answer depends on how many candidates are ranked, so the two counts are told apart.
    sessions = [session_items, *([model.item_ids[i], model.item_ids[i + 1]] for i in range(0, 400, 2))]
    session = next(s for s in sessions if reference(model, s, n=trained) != reference(model, s, n=1000))
    default = (await stack.gateway.http.post("/v1/recommend", json={"session": session})).json()
    asked = (
        await stack.gateway.http.post("/v1/recommend", json={"session": session, "options": {"candidate_count": 1000}})
    ).json()
    assert ids(default) == reference(model, session, n=trained)
    assert ids(asked) == reference(model, session, n=1000)
    grpc_default = await stack.gateway.stub.Recommend(pb.RecommendRequest(session_item_ids=session, k=10), timeout=5)
    assert [i.item_id for i in grpc_default.items] == ids(default)


@session_loop
async def test_bring_your_own_query_vector(stack: Stack, model, session_items) -> None:  # type: ignore[no-untyped-def]
    history, _ = model.lookup(session_items)
    query = model.query(history)
    # With the session's own query vector and the session, the answer is the session's recommendation.
    body = (
        await stack.gateway.http.post(
            "/v1/recommend", json={"session": session_items, "options": {"query_vector": query.tolist()}}
        )
    ).json()
    assert ids(body) == reference(model, session_items)
    assert "embeddings" not in body["timings"]
    # A vector alone: nearest items, nothing to rank against (retrieval order).
    rows, _ = model.retrieve(query, 200)
    reply = await stack.gateway.stub.Recommend(
        pb.RecommendRequest(k=5, options=pb.RecommendOptions(query_vector=vectors.pack(query))), timeout=5
    )
    assert [i.item_id for i in reply.items] == [model.item_ids[r] for r in rows[:5]]


@session_loop
async def test_exclusions_and_include_seen(stack: Stack, model, session_items) -> None:  # type: ignore[no-untyped-def]
    first = reference(model, session_items, k=3)
    body = (
        await stack.gateway.http.post(
            "/v1/recommend", json={"session": session_items, "options": {"exclude_item_ids": first}}
        )
    ).json()
    assert not set(ids(body)) & set(first)
    seen = (
        await stack.gateway.http.post(
            "/v1/recommend", json={"session": session_items, "k": 50, "options": {"include_seen": True}}
        )
    ).json()
    assert set(ids(seen)) & set(session_items)  # the session's own items are the nearest to its query


@session_loop
async def test_long_session_is_trimmed_and_reported(stack: Stack, model) -> None:  # type: ignore[no-untyped-def]
    session = model.item_ids[100:160]
    body = (await stack.gateway.http.post("/v1/recommend", json={"session": session})).json()
    assert body["session_items_dropped"] == 10
    assert ids(body) == reference(model, session)  # Model.recommend keeps the most recent 50 too


@session_loop
async def test_unknown_ids_are_listed_and_an_all_unknown_session_gets_popular_items(stack: Stack, model) -> None:  # type: ignore[no-untyped-def]
    known = model.item_ids[7]
    mixed = (await stack.gateway.http.post("/v1/recommend", json={"session": ["nope-1", known, "nope-2"]})).json()
    assert mixed["unknown_item_ids"] == ["nope-1", "nope-2"]
    assert ids(mixed) == reference(model, [known])
    unknown = (await stack.gateway.http.post("/v1/recommend", json={"session": ["nope-1", "nope-2"], "k": 5})).json()
    rows, _ = model.popular(5)
    assert ids(unknown) == [model.item_ids[r] for r in rows]
    assert unknown["unknown_item_ids"] == ["nope-1", "nope-2"] and not unknown["degraded"]
    assert unknown["model_version"] == model.version


# ------------------------------------------------------------------------------------------------ bad input
BAD_RECOMMENDS = [
    ("k zero", {"session": ["a"], "k": 0}, "k"),
    ("k above the cap", {"session": ["a"], "k": 201}, "k"),
    ("k of the wrong type", {"session": ["a"], "k": "ten"}, "k"),
    ("session not a list", {"session": "abc"}, "session"),
    ("session of numbers", {"session": [1, 2]}, "session"),
    ("unknown field", {"session": ["a"], "sesion": ["b"]}, "sesion"),
    ("candidate_count above the cap", {"session": ["a"], "options": {"candidate_count": 5000}}, "candidate_count"),
    ("budget above the cap", {"session": ["a"], "options": {"budget_ms": 20000}}, "budget_ms"),
    ("empty session", {"session": []}, "empty session"),
    ("no session at all", {}, "empty session"),
    ("query vector of the wrong dimension", {"options": {"query_vector": [0.1, 0.2, 0.3]}}, "dims"),
    ("query vector with NaN-like text", {"options": {"query_vector": ["x"]}}, "query_vector"),
]


@session_loop
@pytest.mark.parametrize(("what", "body", "says"), BAD_RECOMMENDS, ids=[b[0] for b in BAD_RECOMMENDS])
async def test_bad_recommend_input_is_a_400_with_a_message(stack: Stack, what: str, body: Any, says: str) -> None:
    assert_error(await stack.gateway.http.post("/v1/recommend", json=body), 400, "INVALID_ARGUMENT", says)


@session_loop
async def test_a_json_body_is_read_whatever_the_content_type_says(stack: Stack, model, session_items) -> None:  # type: ignore[no-untyped-def]
    """`curl -d '{...}'` sends application/x-www-form-urlencoded; the README's examples must still work."""
    body = json.dumps({"session": session_items, "k": 5}).encode()
    for content_type in ("application/x-www-form-urlencoded", "text/plain"):
        response = await stack.gateway.http.post("/v1/recommend", content=body, headers={"content-type": content_type})
        assert response.status_code == 200, response.text
        assert ids(response.json()) == reference(model, session_items)[:5]


@session_loop
async def test_malformed_json_is_a_400_not_a_422(stack: Stack) -> None:
    response = await stack.gateway.http.post(
        "/v1/recommend", content=b'{"session": ["a",', headers={"content-type": "application/json"}
    )
    assert_error(response, 400, "INVALID_ARGUMENT", "malformed JSON")
    not_an_object = await stack.gateway.http.post("/v1/recommend", json=["a", "b"])
    assert_error(not_an_object, 400, "INVALID_ARGUMENT")


@session_loop
async def test_oversized_body_is_a_413(stack: Stack) -> None:
    big = {"session": ["x" * 200] * 6000}  # ~1.2 MB
    assert_error(await stack.gateway.http.post("/v1/recommend", json=big), 413, "RESOURCE_EXHAUSTED", "larger")

    async def chunks() -> AsyncIterator[bytes]:  # no content-length: counted while reading
        yield b'{"session": ['
        for _ in range(6000):
            yield b'"' + b"x" * 200 + b'",'
        yield b'"y"]}'

    chunked = await stack.gateway.http.post(
        "/v1/recommend", content=chunks(), headers={"content-type": "application/json"}
    )
    assert_error(chunked, 413, "RESOURCE_EXHAUSTED")


@session_loop
async def test_chunked_body_under_the_cap_is_accepted(stack: Stack, model, session_items) -> None:  # type: ignore[no-untyped-def]
    async def chunks() -> AsyncIterator[bytes]:
        payload = json.dumps({"session": session_items}).encode()
        yield payload[:10]
        yield payload[10:]

    response = await stack.gateway.http.post(
        "/v1/recommend", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 200 and ids(response.json()) == reference(model, session_items)


@session_loop
async def test_unknown_model_version_is_a_404(stack: Stack, session_items) -> None:
    response = await stack.gateway.http.post(
        "/v1/recommend", json={"session": session_items, "model_version": "19990101T000000Z-deadbeef"}
    )
    assert_error(response, 404, "NOT_FOUND", "19990101T000000Z-deadbeef")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stack.gateway.stub.Recommend(
            pb.RecommendRequest(session_item_ids=session_items, model_version="nope"), timeout=5
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND and "nope" in info.value.details()


@session_loop
async def test_grpc_bad_input_is_invalid_argument_and_caps_apply(stack: Stack, model, session_items) -> None:  # type: ignore[no-untyped-def]
    stub = stack.gateway.stub
    for request in (
        pb.RecommendRequest(),
        pb.RecommendRequest(session_item_ids=["a"], k=-1),
        pb.RecommendRequest(options=pb.RecommendOptions(query_vector=b"\x00\x00\x80?")),
        pb.RecommendRequest(options=pb.RecommendOptions(query_vector=b"\x00\x00")),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Recommend(request, timeout=5, metadata=(("x-request-id", "bad-1"),))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and info.value.details()
        assert dict(info.value.trailing_metadata())["x-request-id"] == "bad-1"
    capped = await stub.Recommend(pb.RecommendRequest(session_item_ids=session_items, k=5000), timeout=5)
    assert len(capped.items) == gw.MAX_K  # proto: k is capped at 200
    default = await stub.Recommend(pb.RecommendRequest(session_item_ids=session_items), timeout=5)
    assert len(default.items) == gw.DEFAULT_K


# ---------------------------------------------------------------------------------------- stages on their own
@session_loop
async def test_embeddings_are_the_bundle_vectors(stack: Stack, model) -> None:  # type: ignore[no-untyped-def]
    wanted = [model.item_ids[3], "nope", model.item_ids[9]]
    body = (await stack.gateway.http.post("/v1/embeddings", json={"item_ids": wanted})).json()
    assert body["model_version"] == model.version and body["dim"] == model.dim
    assert body["unknown_item_ids"] == ["nope"]
    for row in (3, 9):
        np.testing.assert_allclose(body["embeddings"][model.item_ids[row]], model.space.vectors[row], rtol=1e-6)
    reply = await stack.gateway.stub.GetItemEmbeddings(pb.GetItemEmbeddingsRequest(item_ids=wanted), timeout=5)
    np.testing.assert_array_equal(vectors.unpack(reply.vectors, reply.dim), model.space.vectors[[3, 9]])
    assert_error(await stack.gateway.http.post("/v1/embeddings", json={"item_ids": []}), 400, "INVALID_ARGUMENT")


@session_loop
async def test_similar_items_and_an_unknown_item_is_404(stack: Stack, model) -> None:  # type: ignore[no-untyped-def]
    item = model.item_ids[12]
    response = await stack.gateway.http.get(f"/v1/items/{item}/similar", params={"k": 8})
    assert response.status_code == 200 and "candidates;dur=" in response.headers["server-timing"]
    rows, _ = model.retrieve(model.query(np.array([12])), 8, np.array([12]))
    assert ids(response.json()) == [model.item_ids[r] for r in rows]
    assert item not in ids(response.json())
    assert_error(await stack.gateway.http.get("/v1/items/nope/similar"), 404, "NOT_FOUND", "nope")
    assert_error(await stack.gateway.http.get(f"/v1/items/{item}/similar?k=0"), 400, "INVALID_ARGUMENT", "k")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stack.gateway.stub.GetSimilarItems(pb.GetSimilarItemsRequest(item_id="nope"), timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    reply = await stack.gateway.stub.GetSimilarItems(pb.GetSimilarItemsRequest(item_id=item), timeout=5)
    assert len(reply.items) == gw.DEFAULT_K


@session_loop
async def test_find_candidates_by_vector_or_by_items(stack: Stack, model, session_items) -> None:  # type: ignore[no-untyped-def]
    history, _ = model.lookup(session_items)
    query = model.query(history)
    rows, _ = model.retrieve(query, 20, np.unique(history))
    expected = [model.item_ids[r] for r in rows]
    by_items = await stack.gateway.http.post(
        "/v1/candidates", json={"item_ids": session_items, "k": 20, "exclude_item_ids": session_items}
    )
    assert ids(by_items.json(), "candidates") == expected
    by_vector = await stack.gateway.http.post(
        "/v1/candidates", json={"query_vector": query.tolist(), "k": 20, "exclude_item_ids": session_items}
    )
    assert ids(by_vector.json(), "candidates") == expected
    reply = await stack.gateway.stub.FindCandidates(
        pb.FindCandidatesRequest(query_vector=vectors.pack(query), k=20, exclude_item_ids=session_items), timeout=5
    )
    assert [c.item_id for c in reply.candidates] == expected
    both = await stack.gateway.http.post("/v1/candidates", json={"item_ids": ["a"], "query_vector": [1.0]})
    assert_error(both, 400, "INVALID_ARGUMENT", "exactly one")
    assert_error(await stack.gateway.http.post("/v1/candidates", json={}), 400, "INVALID_ARGUMENT", "exactly one")
    wrong_dim = await stack.gateway.http.post("/v1/candidates", json={"query_vector": [1.0, 2.0]})
    assert_error(wrong_dim, 400, "INVALID_ARGUMENT", "dims")


@session_loop
async def test_rank_candidates_the_caller_brings(stack: Stack, model, session_items) -> None:  # type: ignore[no-untyped-def]
    history, _ = model.lookup(session_items)
    rows, scores = model.retrieve(model.query(history), 30, np.unique(history))
    ranked_rows, _ = model.rank(history, rows, scores)
    expected = [model.item_ids[r] for r in ranked_rows]
    candidates = [{"item_id": model.item_ids[r], "score": float(s)} for r, s in zip(rows, scores, strict=True)]
    body = (await stack.gateway.http.post("/v1/rank", json={"session": session_items, "candidates": candidates})).json()
    assert ids(body) == expected
    plain = await stack.gateway.http.post(
        "/v1/rank", json={"session": session_items, "candidates": [model.item_ids[r] for r in rows] + ["nope"], "k": 5}
    )
    assert plain.status_code == 200 and len(ids(plain.json())) == 5
    assert plain.json()["unknown_item_ids"] == ["nope"]
    reply = await stack.gateway.stub.RankCandidates(
        pb.RankCandidatesRequest(
            session_item_ids=session_items,
            candidates=[common_pb2.ItemScore(item_id=c["item_id"], score=c["score"]) for c in candidates],
        ),
        timeout=5,
    )
    assert [i.item_id for i in reply.items] == expected
    empty = await stack.gateway.http.post("/v1/rank", json={"session": session_items, "candidates": []})
    assert_error(empty, 400, "INVALID_ARGUMENT", "candidates")


# --------------------------------------------------------------------------------------------------- events
@session_loop
async def test_an_event_is_reflected_in_the_very_next_recommendation(stack: Stack, model) -> None:  # type: ignore[no-untyped-def]
    user, item = f"user-{uuid.uuid4().hex}", model.item_ids[42]
    cold = (await stack.gateway.http.post("/v1/recommend", json={"user_id": user, "k": 10})).json()
    rows, _ = model.popular(10)
    assert ids(cold) == [model.item_ids[r] for r in rows]  # no events yet: popular items
    recorded = await stack.gateway.http.post("/v1/events", json={"user_id": user, "item_id": item, "type": "view"})
    assert recorded.json() == {"stored": True, "known_item": True}
    warm = (await stack.gateway.http.post("/v1/recommend", json={"user_id": user, "k": 10})).json()
    assert item not in ids(warm)
    assert ids(warm) == reference(model, [item])
    # Events come first, then the request's own items (views, as the event: equal weights, the offline query;
    # event types that weigh more are tested in tests/test_events.py).
    other = model.item_ids[43]
    both = (await stack.gateway.http.post("/v1/recommend", json={"user_id": user, "session": [other]})).json()
    assert ids(both) == reference(model, [item, other])


@session_loop
async def test_event_batches_streams_and_unknown_items(stack: Stack, model) -> None:  # type: ignore[no-untyped-def]
    user = f"user-{uuid.uuid4().hex}"
    batch = {"events": [{"user_id": user, "item_id": model.item_ids[i]} for i in (1, 2)]}
    batch["events"].append({"user_id": user, "item_id": "brand-new-item", "type": "purchase"})
    body = (await stack.gateway.http.post("/v1/events", json=batch)).json()
    assert body == {"stored": 3, "unknown_item_ids": ["brand-new-item"]}
    single = (await stack.gateway.http.post("/v1/events", json={"user_id": user, "item_id": "another-new"})).json()
    assert single == {"stored": True, "known_item": False}
    stored = await stack.gateway.clients.events.recent_items(user, timeout_s=1)
    assert stored == [model.item_ids[1], model.item_ids[2], "brand-new-item", "another-new"]

    def stream(*items: str) -> list[pb.RecordEventRequest]:
        return [pb.RecordEventRequest(event=common_pb2.Event(user_id=user, item_id=i)) for i in items]

    reply = await stack.gateway.stub.RecordEvents(iter(stream(model.item_ids[3], "zzz")), timeout=5)
    assert reply.stored == 2 and list(reply.unknown_item_ids) == ["zzz"]
    one = await stack.gateway.stub.RecordEvent(stream(model.item_ids[4])[0], timeout=5)
    assert one.stored and one.known_item
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stack.gateway.stub.RecordEvents(iter(stream("fine", "")), timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "events[1]" in info.value.details()
    assert len(await stack.gateway.clients.events.recent_items(user, timeout_s=1)) == 7  # nothing of the bad stream


BAD_EVENTS = [
    ("no user", {"item_id": "a"}, "user_id"),
    ("empty item", {"user_id": "u", "item_id": ""}, "item_id"),
    ("unknown type", {"user_id": "u", "item_id": "a", "type": "like"}, "type"),
    ("far future", {"user_id": "u", "item_id": "a", "timestamp_ms": 99_999_999_999_999}, "future"),
    ("negative time", {"user_id": "u", "item_id": "a", "timestamp_ms": -5}, "timestamp_ms"),
    ("empty batch", {"events": []}, "events"),
    ("bad event in a batch", {"events": [{"user_id": "u", "item_id": "a"}, {"user_id": "u"}]}, "events.1"),
]


@session_loop
@pytest.mark.parametrize(("what", "body", "says"), BAD_EVENTS, ids=[b[0] for b in BAD_EVENTS])
async def test_bad_events_are_400s(stack: Stack, what: str, body: Any, says: str) -> None:
    assert_error(await stack.gateway.http.post("/v1/events", json=body), 400, "INVALID_ARGUMENT", says)


@session_loop
async def test_event_history_is_bounded_and_expires(stack: Stack) -> None:
    user = f"user-{uuid.uuid4().hex}"
    start_ms = int(time.time() * 1000) - 3_600_000
    events = [{"user_id": user, "item_id": f"i{n}", "timestamp_ms": start_ms + n} for n in range(120)]
    for start in range(0, 120, 60):
        response = await stack.gateway.http.post("/v1/events", json={"events": events[start : start + 60]})
        assert response.status_code == 200
    redis = stack.gateway.clients.events.redis
    assert await redis.llen(f"recmesh:events:{user}") == 100
    assert 29 * 86400 < await redis.ttl(f"recmesh:events:{user}") <= 30 * 86400
    assert (await stack.gateway.clients.events.recent_items(user, timeout_s=1))[-1] == "i119"


# --------------------------------------------------------------------------------------------- degradation
@session_loop
async def test_ranking_down_returns_retrieval_order_degraded(
    models_dir, redis_server, stack: Stack, model, session_items
) -> None:  # type: ignore[no-untyped-def]
    ranking = await start_stage("ranking", models_dir, redis_server.url)
    ports = {**stack.ports, "ranking": ranking.port}
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
    models_dir, redis_server, stack: Stack, model, session_items
) -> None:  # type: ignore[no-untyped-def]
    candidates = await start_stage("candidate_generation", models_dir, redis_server.url)
    await candidates.stop()
    ports = {**stack.ports, "candidate_generation": candidates.port}
    async with running_gateway(models_dir, redis_server.url, ports) as gateway:
        body = (await gateway.http.post("/v1/recommend", json={"session": session_items, "k": 5})).json()
        rows, _ = model.popular(5, model.lookup(session_items)[0])
        assert ids(body) == [model.item_ids[r] for r in rows]
        assert body["degraded"] is True
        assert [d["stage"] for d in body["degradations"]] == ["candidates"]
        assert "candidate-generation unavailable" in body["degradations"][0]["reason"]


@session_loop
async def test_embedding_store_down_lets_candidate_generation_build_the_query(
    models_dir, redis_server, stack: Stack, model, session_items
) -> None:  # type: ignore[no-untyped-def]
    # Nothing listens at the store's address. (Starting and stopping a real store here instead hung the
    # session's grpc.aio loop about once in ten full runs; stopping a store is covered in test_embedding_store.)
    down = free_port()
    async with running_gateway(models_dir, redis_server.url, {**stack.ports, "embedding_store": down}) as gateway:
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
async def test_budget_used_up_before_ranking_skips_it(stack: Stack, model, session_items) -> None:  # type: ignore[no-untyped-def]
    clients = copy.copy(stack.gateway.clients)
    clients.candidates = SlowCandidates(clients.candidates, 0.06)
    slow = gw.GatewayCore(clients, stack.gateway.app.state.core.catalog)
    request = gw.RecommendRequest(session_items, options=gw.RecommendOptions(budget_ms=50))
    rec = await slow.recommend(request, slow.budget(50), "budget-test")
    assert rec.item_ids == reference(model, session_items, rank=False)
    assert [(d.stage, d.reason) for d in rec.degradations] == [("ranking", "budget exhausted: retrieval order served")]
    assert "ranking" not in rec.timings


@session_loop
async def test_redis_down_recommends_without_history_and_events_fail_503(
    models_dir, redis_server, stack: Stack, model, session_items
) -> None:  # type: ignore[no-untyped-def]
    dead = f"redis://127.0.0.1:{free_port()}/0"
    async with running_gateway(models_dir, dead, stack.ports) as gateway:
        body = (await gateway.http.post("/v1/recommend", json={"user_id": "u", "session": session_items})).json()
        assert ids(body) == reference(model, session_items)
        assert [d["stage"] for d in body["degradations"]] == ["events"]
        failed = await gateway.http.post("/v1/events", json={"user_id": "u", "item_id": "a"})
        assert_error(failed, 503, "UNAVAILABLE", "redis")
        ready = await gateway.http.get("/readyz")
        assert ready.status_code == 503 and list(ready.json()["failed"]) == ["redis"]


# ------------------------------------------------------------------------------------- health, docs, serving
@session_loop
async def test_health_readiness_metrics_and_openapi(stack: Stack) -> None:
    http = stack.gateway.http
    await http.post("/v1/recommend", json={"session": ["a"]})
    assert (await http.get("/healthz")).json() == {"status": "ok"}
    ready = await http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    assert set(ready.json()["checks"]) == {"embedding-store", "candidate-generation", "ranking", "redis"}
    metrics = await http.get("/metrics")
    assert "recmesh_rpc_latency_seconds" in metrics.text and 'method="POST /v1/recommend"' in metrics.text
    spec = (await http.get("/openapi.json")).json()
    assert {
        "/v1/recommend",
        "/v1/embeddings",
        "/v1/items/{item_id}/similar",
        "/v1/candidates",
        "/v1/rank",
        "/v1/events",
    } <= set(spec["paths"])
    assert (await http.get("/docs")).status_code == 200
    assert_error(await http.get("/v1/nothing-here"), 404, "NOT_FOUND")


@session_loop
async def test_gateway_grpc_server_has_health_and_reflection(stack: Stack) -> None:
    health = health_pb2_grpc.HealthStub(stack.gateway.channel)
    for name in ("", SERVICE_NAME):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(stack.gateway.channel)
    names = set()
    async for reply in stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])):
        names |= {s.name for s in reply.list_services_response.service}
    assert SERVICE_NAME in names


@session_loop
async def test_real_http_over_uvicorn(stack: Stack, model, session_items) -> None:  # type: ignore[no-untyped-def]
    import uvicorn

    port = free_port()
    config = uvicorn.Config(
        stack.gateway.app, host="127.0.0.1", port=port, http="httptools", lifespan="off", log_config=None
    )
    server = _HttpServer(config)
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(200):
            if server.started:
                break
            await asyncio.sleep(0.01)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            response = await http.post("/v1/recommend", json={"session": session_items})
            assert response.status_code == 200 and ids(response.json()) == reference(model, session_items)
            assert response.headers["content-type"] == "application/json"
            assert "total;dur=" in response.headers["server-timing"]
            bad = await http.post("/v1/recommend", content=b"{nope", headers={"content-type": "application/json"})
            assert_error(bad, 400, "INVALID_ARGUMENT", "malformed JSON")
    finally:
        server.should_exit = True
        await task


@session_loop
async def test_python_m_gateway_serves_rest_and_grpc_then_stops_gracefully(
    models_dir, redis_server, stack: Stack, model, session_items
) -> None:  # type: ignore[no-untyped-def]
    http_port, grpc_port = free_port(), free_port()
    settings = gateway_settings(models_dir, redis_server.url, **stack.ports)
    settings = settings.model_copy(update={"http_port": http_port, "grpc_port": grpc_port, "drain_s": 0.3})
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}") as http:
        for _ in range(300):
            with contextlib.suppress(httpx.TransportError):
                if (await http.get("/readyz")).status_code == 200:
                    break
            await asyncio.sleep(0.02)
        response = await http.post("/v1/recommend", json={"session": session_items})
        assert ids(response.json()) == reference(model, session_items)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = recommendation_service_pb2_grpc.RecommendationServiceStub(channel)
            reply = await stub.Recommend(pb.RecommendRequest(session_item_ids=session_items), timeout=5)
            assert [i.item_id for i in reply.items] == reference(model, session_items)
            stop.set()
            await asyncio.sleep(0.1)  # inside the drain: still answering, but not ready
            assert (await http.get("/readyz")).status_code == 503
            health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert health.status == health_pb2.HealthCheckResponse.NOT_SERVING
        await asyncio.wait_for(task, timeout=10)


# ------------------------------------------------------------------------------------------------ unit bits
def test_budget_leaves_a_reserve_and_formats_server_timing() -> None:
    budget = Budget(100)
    assert 97 < budget.remaining_ms() <= 98
    with budget.stage("embeddings"):
        pass
    budget.finish()
    assert list(budget.timings) == ["embeddings", "total"]
    assert server_timing({"embeddings": 1.234, "total": 3.9}) == "embeddings;dur=1.23, total;dur=3.90"
    assert Budget(1).reserve_ms == pytest.approx(0.1)
    assert Budget(0).exhausted
