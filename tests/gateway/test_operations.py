"""Running the gateway: health, readiness, metrics and the OpenAPI document; real HTTP on uvicorn; ``python -m
gateway`` serving REST and gRPC and stopping gracefully; the budget's bookkeeping."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from devtools.stack import free_port
from gateway.__main__ import _HttpServer, serve
from gateway.budget import Budget, server_timing
from recmesh.v1 import recommendation_service_pb2, recommendation_service_pb2_grpc
from tests.gateway.harness import Gateway, assert_error, gateway_settings, ids, reference
from tests.helpers import auth_headers, keyed_channel

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
    assert "http_server_request_duration_seconds" in metrics.text and 'http_route="/v1/recommend"' in metrics.text
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
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=auth_headers()) as http:
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
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", headers=auth_headers()) as http:
        for _ in range(300):
            with contextlib.suppress(httpx.TransportError):
                if (await http.get("/readyz")).status_code == 200:
                    break
            await asyncio.sleep(0.02)
        response = await http.post("/v1/recommend", json={"session": session_items})
        assert ids(response.json()) == reference(model, session_items)
        async with keyed_channel(f"127.0.0.1:{grpc_port}") as channel:
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


def http_requests(route: str, status: str, method: str = "GET") -> float:
    labels = {"http_request_method": method, "http_route": route, "http_response_status_code": status}
    return REGISTRY.get_sample_value("http_server_request_duration_seconds_count", labels) or 0.0


@session_loop
async def test_rest_requests_are_timed_by_route_and_status_and_probes_are_not(gateway: Gateway) -> None:
    before = http_requests("/v1/items/{item_id}/similar", "400")
    await gateway.http.get("/v1/items/i1/similar", params={"k": 0})
    assert http_requests("/v1/items/{item_id}/similar", "400") == before + 1  # the route's template, not the path
    unmatched = http_requests("", "404")
    await gateway.http.get("/v1/no/such/path")
    assert http_requests("", "404") == unmatched + 1  # no route: one series, whatever the path
    for probe in ("/healthz", "/readyz", "/metrics"):
        await gateway.http.get(probe)
    counted = {
        s.labels.get("http_route")
        for metric in REGISTRY.collect()
        for s in metric.samples
        if s.name == "http_server_request_duration_seconds_count"
    }
    assert not counted & {"/healthz", "/readyz", "/metrics"}


@session_loop
async def test_no_metric_has_a_label_named_service(gateway: Gateway, session_items: list[str]) -> None:
    """prometheus-operator sets `service` on every target it scrapes: a label of ours by that name would clash."""
    await gateway.http.post("/v1/recommend", json={"session": session_items})
    await gateway.stub.Recommend(pb.RecommendRequest(session_item_ids=session_items), timeout=5)
    labels = {name for metric in REGISTRY.collect() for s in metric.samples for name in s.labels}
    assert "rpc_service" in labels and "http_route" in labels  # the families exist, with samples
    assert "service" not in labels
