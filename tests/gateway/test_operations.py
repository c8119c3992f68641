"""Running the gateway: health, readiness, metrics and the OpenAPI document; real HTTP on uvicorn; ``python -m
gateway`` serving REST and gRPC and stopping gracefully; the budget's bookkeeping."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import grpc
import grpc.aio
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devtools.stack import free_port
from gateway.__main__ import _HttpServer, serve
from gateway.budget import Budget, server_timing
from recmesh.v1 import recommendation_service_pb2, recommendation_service_pb2_grpc
from tests.gateway.harness import Gateway, assert_error, gateway_settings, ids, reference

session_loop = pytest.mark.asyncio(loop_scope="session")
pb = recommendation_service_pb2


@session_loop
async def test_health_readiness_metrics_and_openapi(gateway: Gateway) -> None:
    http = gateway.http
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
async def test_real_http_over_uvicorn(gateway: Gateway, model, session_items) -> None:  # type: ignore[no-untyped-def]
    import uvicorn

    port = free_port()
    config = uvicorn.Config(gateway.app, host="127.0.0.1", port=port, http="httptools", lifespan="off", log_config=None)
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
    models_dir: Path, redis_server, stage_ports: dict[str, int], model, session_items
) -> None:  # type: ignore[no-untyped-def]
    http_port, grpc_port = free_port(), free_port()
    settings = gateway_settings(models_dir, redis_server.url, **stage_ports)
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
    assert Budget.within(200, caller_deadline_s=0.05).budget_ms == pytest.approx(50)  # the caller's deadline cuts it
    assert Budget.within(200).budget_ms == 200
