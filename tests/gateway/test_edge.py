"""The hardened edge: bad numbers and strict types on both faces, and a real gateway process against slow clients,
a concurrency cap and an overloaded event loop (gateway/edge.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import httpx
import numpy as np
import pytest

from devtools.stack import free_port
from gateway.budget import Budget, arrived_at
from gateway.edge import EdgeLimits, EdgeMiddleware, LoopLag
from recmesh.v1 import common_pb2
from recmesh.v1 import recommendation_service_pb2 as pb
from serving import limits
from serving.errors import from_rpc_error
from tests.gateway.harness import Gateway, assert_error, field_violations
from tests.serving.fake_servicers import request, running_server

session_loop = pytest.mark.asyncio(loop_scope="session")
HUGE = 3e38  # finite in float32, but a vector of them has scores (dot products) that overflow


# ------------------------------------------------------------------------------------------- bad numbers
@session_loop
async def test_a_huge_finite_query_vector_is_refused_naming_the_field_on_both_faces(gateway: Gateway, model) -> None:  # type: ignore[no-untyped-def]
    vector = [HUGE] * model.dim
    for options in ({"query_vector": vector}, {"query_vector": vector, "skip_ranking": True}):
        response = await gateway.post("/v1/recommend", {"options": options})
        error = assert_error(response, 400, "INVALID_ARGUMENT", "squared norm overflows float32")
        assert list(field_violations(error)) == ["options.query_vector"]
    error = assert_error(await gateway.post("/v1/candidates", {"query_vector": vector}), 400, "INVALID_ARGUMENT")
    assert list(field_violations(error)) == ["query_vector"]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        request = pb.RecommendRequest(
            options=pb.RecommendOptions(query_vector=np.full(model.dim, HUGE, "<f4").tobytes())
        )
        await gateway.stub.Recommend(request, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in from_rpc_error(info.value).violations] == ["options.query_vector"]


@session_loop
async def test_a_large_but_safe_query_vector_has_finite_scores_on_both_faces(gateway: Gateway, model) -> None:  # type: ignore[no-untyped-def]
    vector = [1e18] + [0.0] * (model.dim - 1)
    for skip_ranking in (True, False):
        options = {"query_vector": vector, "skip_ranking": skip_ranking, "budget_ms": 10_000}
        response = await gateway.post("/v1/recommend", {"options": options, "k": 5})
        assert response.status_code == 200, response.text
        assert all(isinstance(i["score"], float) and np.isfinite(i["score"]) for i in response.json()["items"])
    request = pb.RecommendRequest(
        options=pb.RecommendOptions(query_vector=np.asarray(vector, "<f4").tobytes(), budget_ms=10_000), k=5
    )
    reply = await gateway.stub.Recommend(request, timeout=10)
    assert reply.items and all(np.isfinite(i.score) for i in reply.items)


@session_loop
async def test_a_candidate_score_beyond_float32_blames_that_candidate(gateway: Gateway, session_items) -> None:  # type: ignore[no-untyped-def]
    body = {"session": session_items, "candidates": [session_items[0], {"item_id": session_items[1], "score": 1e308}]}
    error = assert_error(await gateway.post("/v1/rank", body), 400, "INVALID_ARGUMENT", "candidate scores")
    assert list(field_violations(error)) == ["candidates[1].score"]


@session_loop
async def test_a_bool_is_not_a_number_and_a_number_is_not_a_bool(gateway: Gateway, session_items) -> None:  # type: ignore[no-untyped-def]
    for body in (
        {"session": session_items, "k": False},
        {"session": session_items, "k": "5"},
        {"session": session_items, "k": 5.0},
        {"session": session_items, "options": {"budget_ms": True}},
        {"session": session_items, "options": {"skip_ranking": 1}},
        {"session": session_items, "options": {"include_seen": "true"}},
    ):
        assert_error(await gateway.post("/v1/recommend", body), 400, "INVALID_ARGUMENT")
    assert_error(await gateway.post("/v1/candidates", {"item_ids": session_items, "k": True}), 400, "INVALID_ARGUMENT")
    event = {"user_id": "u-strict", "item_id": session_items[0], "timestamp_ms": False}
    assert_error(await gateway.post("/v1/events", event), 400, "INVALID_ARGUMENT")


@session_loop
async def test_a_session_over_the_cap_is_invalid_argument_on_both_faces(gateway: Gateway) -> None:
    session = [f"i{i}" for i in range(limits.MAX_SESSION_ITEMS + 1)]
    says = f"at most {limits.MAX_SESSION_ITEMS} session_item_ids"
    error = assert_error(await gateway.post("/v1/recommend", {"session": session}), 400, "INVALID_ARGUMENT", says)
    assert list(field_violations(error)) == ["session"]
    error = assert_error(
        await gateway.post("/v1/rank", {"session": session, "candidates": ["i1"]}), 400, "INVALID_ARGUMENT", says
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await gateway.stub.Recommend(pb.RecommendRequest(session_item_ids=session), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and says in (info.value.details() or "")


# ------------------------------------------------------------------------------------------- the budget
def test_time_queued_before_the_handler_ran_is_spent_from_the_budget() -> None:
    token = arrived_at.set(time.perf_counter() - 0.150)  # the request arrived 150 ms ago
    try:
        budget = Budget(200)
        assert budget.elapsed_ms() >= 150 and budget.remaining_ms() <= 50
    finally:
        arrived_at.reset(token)
    assert Budget(200).remaining_ms() > 190  # outside a request: from now


async def _ok_app(scope: Any, receive: Any, send: Any) -> None:
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b"{}"})


class _LaggingLoop(LoopLag):
    """A fixed lag: what a saturated CPU looks like to the edge."""

    def __init__(self, lag_s: float) -> None:
        super().__init__()
        self._samples.append(lag_s)
        self._samples.popleft()


@session_loop
async def test_an_overloaded_loop_or_too_many_requests_are_shed_at_once_with_retry_after() -> None:
    async def post(edge: EdgeMiddleware) -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=edge), base_url="http://edge") as http:
            return await http.post("/v1/recommend", json={})

    assert (await post(EdgeMiddleware(_ok_app, EdgeLimits(), _LaggingLoop(0.0)))).status_code == 200
    lagging = await post(EdgeMiddleware(_ok_app, EdgeLimits(shed_loop_lag_ms=100), _LaggingLoop(0.5)))
    assert lagging.status_code == 503 and lagging.headers["retry-after"] == "1"
    assert lagging.json()["error"]["status"] == "UNAVAILABLE" and "event loop" in lagging.json()["error"]["message"]
    queued = await post(
        EdgeMiddleware(_ok_app, EdgeLimits(shed_queue_ms=50, shed_loop_lag_ms=1000), _LaggingLoop(0.08))
    )
    assert queued.status_code == 503 and "waited" in queued.json()["error"]["message"]
    full = EdgeMiddleware(_ok_app, EdgeLimits(max_in_flight=1), _LaggingLoop(0.0))
    full.in_flight = 1  # one request already being handled
    crowded = await post(full)
    assert crowded.status_code == 503 and "in flight" in crowded.json()["error"]["message"]


# ------------------------------------------------------------------------------------------- a real process
TIMEOUT_S = 2.0
SLOW_CLIENTS = int(os.environ.get("SLOW_CLIENTS", "200"))  # the bench: SLOW_CLIENTS=1000 (docs/security.md)


@contextlib.contextmanager
def gateway_process(models_dir: Path, redis_url: str, stage_ports: dict[str, int], **env: str) -> Iterator[int]:
    """``python -m gateway`` (the uvicorn settings of gateway/__main__.py), its HTTP port once /healthz answers."""
    http_port = free_port()
    environ = {
        **os.environ,
        "HTTP_PORT": str(http_port),
        "GRPC_PORT": str(free_port()),
        "RECMESH_MODELS_DIR": str(models_dir),
        "REDIS_URL": redis_url,
        "AUTH": "disabled",
        "HEADER_TIMEOUT_S": str(TIMEOUT_S),
        "BODY_TIMEOUT_S": str(TIMEOUT_S),
        "LOG_LEVEL": "WARNING",
        **{f"{name.upper()}_ADDR": f"127.0.0.1:{port}" for name, port in stage_ports.items()},
        **env,
    }
    proc = subprocess.Popen([sys.executable, "-m", "gateway"], env=environ, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, "the gateway exited"
            try:
                if httpx.get(f"http://127.0.0.1:{http_port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        yield http_port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def hold(port: int, first_bytes: bytes) -> tuple[float, bytes]:
    """Send ``first_bytes`` and nothing more; (seconds until the server closed the connection, what it sent)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    start = time.perf_counter()
    writer.write(first_bytes)
    await writer.drain()
    try:
        answer = await asyncio.wait_for(reader.read(), timeout=TIMEOUT_S * 5)  # read() returns at EOF
    finally:
        writer.close()
    return time.perf_counter() - start, answer


SLOW_BODY = b"POST /v1/events HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{"
SLOW_HEADERS = b"POST /v1/events HTTP/1.1\r\nhost: x\r\ncontent-"


@pytest.fixture(scope="module")
def edge_port(models_dir: Path, redis_server, stage_ports: dict[str, int]) -> Iterator[int]:  # type: ignore[no-untyped-def]
    with gateway_process(models_dir, redis_server.url, stage_ports) as port:
        yield port


@session_loop
async def test_slow_clients_are_closed_within_the_timeout_while_normal_requests_are_answered(
    edge_port: int, session_items: list[str]
) -> None:
    """SLOW_CLIENTS connections announce Content-Length: 1000 and send one byte (and a tenth as many stop
    mid-headers); the server closes each within the timeout (+ slack for a busy machine) while normal requests
    keep being answered."""
    holders = [asyncio.ensure_future(hold(edge_port, SLOW_BODY)) for _ in range(SLOW_CLIENTS)]
    holders += [asyncio.ensure_future(hold(edge_port, SLOW_HEADERS)) for _ in range(SLOW_CLIENTS // 10)]
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{edge_port}", timeout=10) as http:
        while not all(h.done() for h in holders):
            body = {"session": session_items, "k": 5, "options": {"budget_ms": 10_000}}
            start = time.perf_counter()
            response = await http.post("/v1/recommend", json=body)
            latencies.append(time.perf_counter() - start)
            assert response.status_code == 200, response.text
            await asyncio.sleep(0.05)
    results = [h.result() for h in holders]
    slowest = max(seconds for seconds, _ in results)
    print(
        f"\n{len(results)} slow connections, the last closed after {slowest:.2f} s (timeout {TIMEOUT_S:g} s); "
        f"{len(latencies)} normal requests meanwhile, all 200, max {max(latencies) * 1000:.0f} ms"
    )
    assert slowest < TIMEOUT_S + 3.0, slowest
    body_answers = [answer for _, answer in results[:SLOW_CLIENTS]]
    assert all(a.startswith(b"HTTP/1.1 408") and b'"DEADLINE_EXCEEDED"' in a for a in body_answers), body_answers[0]
    assert all(answer.startswith(b"HTTP/1.1 408") for _, answer in results[SLOW_CLIENTS:])
    assert len(latencies) >= 5


@session_loop
async def test_an_idle_connection_that_sends_nothing_is_closed(edge_port: int) -> None:
    seconds, answer = await hold(edge_port, b"")
    assert seconds < TIMEOUT_S + 3.0 and answer.startswith(b"HTTP/1.1 408")


@session_loop
async def test_the_shed_counter_is_exported(edge_port: int) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{edge_port}", timeout=10) as http:
        metrics = (await http.get("/metrics")).text
    assert "# TYPE recmesh_shed_requests_total counter" in metrics


@session_loop
async def test_the_grpc_face_refuses_calls_over_its_concurrency_cap_at_once() -> None:
    """grpc's maximum_concurrent_rpcs (the gateway passes MAX_IN_FLIGHT): one call held open, the next is
    RESOURCE_EXHAUSTED at once, and once the first ends calls are served again."""
    async with running_server(maximum_concurrent_rpcs=1) as running:
        release = asyncio.Event()

        async def held_events() -> AsyncIterator[pb.RecordEventRequest]:
            yield pb.RecordEventRequest(event=common_pb2.Event(item_id="a"))
            await release.wait()

        held = running.events_stub().RecordEvents(held_events(), timeout=10)
        await asyncio.sleep(0.2)  # the stream is open on the server
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await running.store_stub().GetEmbeddings(request("a"), timeout=5)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        release.set()
        assert (await held).stored == 1
        assert (await running.store_stub().GetEmbeddings(request("a"), timeout=5)).item_ids == ["a"]
