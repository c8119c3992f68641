"""serving against real gRPC servers on loopback (port 0)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import signal
from collections.abc import AsyncIterator

import grpc
import grpc.aio
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import CollectorRegistry

from recmesh.v1 import (
    common_pb2,
    embedding_store_service_pb2,
    embedding_store_service_pb2_grpc,
    recommendation_service_pb2,
    recommendation_service_pb2_grpc,
)
from serving import errors, logs, metrics, server, vectors

session_loop = pytest.mark.asyncio(loop_scope="session")  # grpc.aio objects stay on one loop

STORE = embedding_store_service_pb2.DESCRIPTOR.services_by_name["EmbeddingStoreService"].full_name
GATEWAY = recommendation_service_pb2.DESCRIPTOR.services_by_name["RecommendationService"].full_name
SECRET = "secret internal detail"


class FakeStore(embedding_store_service_pb2_grpc.EmbeddingStoreServiceServicer):
    """Every known item's vector is [len(id), 1]."""

    def __init__(self, unavailable_times: int = 0) -> None:
        self.calls = 0
        self.unavailable_times = unavailable_times

    @errors.grpc_errors
    async def GetEmbeddings(self, request, context):
        logs.bind_request_id(context)
        self.calls += 1
        if self.calls <= self.unavailable_times:
            raise errors.Unavailable("warming up")
        if not request.item_ids:
            raise errors.InvalidArgument("item_ids must not be empty")
        if "boom" in request.item_ids:
            raise ValueError(SECRET)
        ids = list(request.item_ids)
        matrix = np.array([[len(i), 1.0] for i in ids], dtype=np.float32)
        return embedding_store_service_pb2.GetEmbeddingsResponse(
            model_version="v1", dim=2, item_ids=ids, vectors=vectors.pack(matrix)
        )


class FakeEvents(recommendation_service_pb2_grpc.RecommendationServiceServicer):
    @errors.grpc_errors
    async def RecordEvents(self, request_iterator, context):
        stored = 0
        async for req in request_iterator:
            if not req.event.item_id:
                raise errors.InvalidArgument(f"event {stored} has no item_id")
            stored += 1
        return recommendation_service_pb2.RecordEventsResponse(stored=stored)


@contextlib.asynccontextmanager
async def running_store(
    store: FakeStore | None = None, max_connection_age_s: float = 30.0
) -> AsyncIterator[tuple[int, FakeStore, object, object]]:
    store = store or FakeStore()

    def register(srv: grpc.aio.Server) -> None:
        embedding_store_service_pb2_grpc.add_EmbeddingStoreServiceServicer_to_server(store, srv)
        recommendation_service_pb2_grpc.add_RecommendationServiceServicer_to_server(FakeEvents(), srv)

    srv, port, health = await server.create_server(
        "127.0.0.1:0", register, [STORE, GATEWAY], max_connection_age_s=max_connection_age_s
    )
    try:
        yield port, store, srv, health
    finally:
        await srv.stop(None)


def request(*ids: str) -> embedding_store_service_pb2.GetEmbeddingsRequest:
    return embedding_store_service_pb2.GetEmbeddingsRequest(item_ids=list(ids))


@session_loop
async def test_health_serving_and_reflection_lists_services():
    async with running_store() as (port, *_), grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", STORE, GATEWAY):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING

        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = set()
        async for reply in call:
            names |= {s.name for s in reply.list_services_response.service}
        assert {STORE, GATEWAY, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names


@session_loop
async def test_unary_ok_and_vectors_travel_packed():
    async with running_store() as (port, *_), grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = await embedding_store_service_pb2_grpc.EmbeddingStoreServiceStub(channel).GetEmbeddings(
            request("a", "bcd"), timeout=5
        )
        np.testing.assert_array_equal(vectors.unpack(reply.vectors, reply.dim), [[1, 1], [3, 1]])


@session_loop
async def test_invalid_argument_becomes_invalid_argument_status_with_message():
    async with running_store() as (port, *_), grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = embedding_store_service_pb2_grpc.EmbeddingStoreServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetEmbeddings(request(), timeout=5)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details() == "item_ids must not be empty"


@session_loop
async def test_unexpected_exception_becomes_internal_without_traceback(caplog):
    async with running_store() as (port, *_), grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = embedding_store_service_pb2_grpc.EmbeddingStoreServiceStub(channel)
        with (
            caplog.at_level(logging.ERROR, logger="serving.errors"),
            pytest.raises(grpc.aio.AioRpcError) as info,
        ):
            await stub.GetEmbeddings(request("boom"), timeout=5, metadata=(("x-request-id", "req-42"),))
    assert info.value.code() == grpc.StatusCode.INTERNAL
    details = info.value.details()
    assert details == "internal error (request_id=req-42)"
    assert SECRET not in details and "Traceback" not in details
    # ... but the traceback is in the server's log.
    logged = [r for r in caplog.records if r.exc_info]
    assert logged and SECRET in str(logged[0].exc_info[1])


@session_loop
async def test_stream_unary_handler_maps_errors():
    async with running_store() as (port, *_), grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = recommendation_service_pb2_grpc.RecommendationServiceStub(channel)

        def events(*items: str):
            return iter(
                [recommendation_service_pb2.RecordEventRequest(event=common_pb2.Event(item_id=i)) for i in items]
            )

        reply = await stub.RecordEvents(events("a", "b"), timeout=5)
        assert reply.stored == 2
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.RecordEvents(events("a", ""), timeout=5)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details() == "event 1 has no item_id"


@session_loop
async def test_sigterm_marks_not_serving_then_stops():
    async with (
        running_store() as (port, _store, srv, health),
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        before = signal.getsignal(signal.SIGTERM)
        task = asyncio.create_task(server.serve_until_signal(srv, health, grace_s=0.5, drain_s=1.0))
        for _ in range(100):  # wait until serve_until_signal has installed its handler
            if signal.getsignal(signal.SIGTERM) is not before:
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail("SIGTERM handler was not installed")
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.sleep(0.2)  # inside the drain window: still answering, but NOT_SERVING
        stub = health_pb2_grpc.HealthStub(channel)
        for name in ("", STORE):
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
        await asyncio.wait_for(task, timeout=10)
        assert signal.getsignal(signal.SIGTERM) is before
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
        assert info.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


@session_loop
async def test_stop_event_shuts_down_without_a_signal():
    async with running_store() as (_port, _store, srv, health):
        stop = asyncio.Event()
        task = asyncio.create_task(server.serve_until_signal(srv, health, grace_s=0.1, stop=stop))
        await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, timeout=5)


@session_loop
async def test_make_channel_spreads_calls_across_replicas():
    async with running_store() as (p1, s1, *_), running_store() as (p2, s2, *_):
        channel = server.make_channel(f"127.0.0.1:{p1},localhost:{p2}")
        stub = embedding_store_service_pb2_grpc.EmbeddingStoreServiceStub(channel)
        for _ in range(50):
            await stub.GetEmbeddings(request("a"), timeout=5)
            if s1.calls and s2.calls:
                break
        await channel.close()
    assert s1.calls > 0 and s2.calls > 0


class PeerStore(FakeStore):
    """Remembers the client address (and so the connection) of every call."""

    def __init__(self) -> None:
        super().__init__()
        self.peers: list[str] = []

    async def GetEmbeddings(self, request, context):
        self.peers.append(context.peer())
        return await super().GetEmbeddings(request, context)


@session_loop
async def test_connections_end_at_their_maximum_age_and_clients_reconnect():
    """What lets the gateway find replicas added after it connected: each connection ends after its maximum age
    and the client opens a new one (re-resolving the name) without a failed call."""
    store = PeerStore()
    async with (
        running_store(store, max_connection_age_s=0.3) as (port, *_),
        server.make_channel(f"127.0.0.1:{port}") as channel,
    ):
        stub = embedding_store_service_pb2_grpc.EmbeddingStoreServiceStub(channel)
        for _ in range(20):  # 2 s of calls: several connection lifetimes
            assert (await stub.GetEmbeddings(request("a"), timeout=5)).item_ids == ["a"]
            await asyncio.sleep(0.1)
    assert len(set(store.peers)) >= 2, store.peers


@session_loop
async def test_channel_retries_unavailable():
    async with (
        running_store(FakeStore(unavailable_times=1)) as (port, store, *_),
        server.make_channel(f"127.0.0.1:{port}") as channel,
    ):
        stub = embedding_store_service_pb2_grpc.EmbeddingStoreServiceStub(channel)
        reply = await stub.GetEmbeddings(request("a"), timeout=5)
    assert reply.item_ids == ["a"]
    assert store.calls == 2


def test_resolve_target():
    assert server.resolve_target("ranking:50051") == "ranking:50051"
    assert server.resolve_target("dns:///ranking.default.svc:50051") == "dns:///ranking.default.svc:50051"
    assert server.resolve_target("127.0.0.1:1, localhost:2") == "ipv4:127.0.0.1:1,127.0.0.1:2"
    assert server.resolve_target("[::1]:1,[::1]:2") == "ipv6:[::1]:1,[::1]:2"
    with pytest.raises(ValueError):
        server.resolve_target("127.0.0.1:1,nope")


def test_channel_options_service_config():
    options = dict(server.channel_options(8))
    assert options["grpc.max_receive_message_length"] == 8 * 1024 * 1024
    config = json.loads(options["grpc.service_config"])
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    assert config["methodConfig"][0]["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]


def test_vectors_round_trip_zero_copy():
    matrix = np.arange(12, dtype=np.float64).reshape(3, 4)
    data = vectors.pack(matrix)
    assert len(data) == 3 * 4 * 4
    rows = vectors.unpack(data, 4)
    assert rows.shape == (3, 4) and rows.dtype == np.float32
    np.testing.assert_array_equal(rows, matrix)
    assert not rows.flags.writeable  # a view on the bytes, not a copy
    assert data == np.asarray(matrix, dtype="<f4").tobytes()
    np.testing.assert_array_equal(vectors.unpack_vector(vectors.pack([1.0, 2.0]), 2), [1.0, 2.0])
    assert vectors.unpack(b"", 4).shape == (0, 4)


def test_vectors_bad_length_is_invalid_argument():
    with pytest.raises(errors.InvalidArgument, match="not a multiple of 16"):
        vectors.unpack(b"\x00" * 20, 4)
    with pytest.raises(errors.InvalidArgument, match="expected 8"):
        vectors.unpack_vector(b"\x00" * 16, 2)


def test_errors_know_grpc_code_and_http_status():
    assert (errors.InvalidArgument.grpc_code, errors.InvalidArgument.http_status) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        400,
    )
    assert errors.NotFound.http_status == 404
    assert errors.ResourceExhausted.http_status == 429
    assert errors.FailedPrecondition.http_status == 409
    assert errors.Unavailable.http_status == 503
    assert errors.DeadlineExceeded.http_status == 504
    assert errors.RecmeshError.grpc_code == grpc.StatusCode.INTERNAL
    assert all(issubclass(c, errors.RecmeshError) for c in (errors.NotFound, errors.Unavailable))


def test_json_log_line_has_request_id():
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    token = logs.set_request_id("req-7")
    try:
        logs.configure_logging("ranking", "INFO", stream=stream)
        try:
            raise RuntimeError("bad")
        except RuntimeError:
            logging.getLogger("recmesh.test").exception("ranked %d items", 3, extra={"model_version": "v2"})
    finally:
        logs.request_id_var.reset(token)
        root.handlers[:], root.level = saved[0], saved[1]
    entry = json.loads(stream.getvalue().strip())
    assert entry["service"] == "ranking"
    assert entry["level"] == "ERROR"
    assert entry["logger"] == "recmesh.test"
    assert entry["msg"] == "ranked 3 items"
    assert entry["request_id"] == "req-7"
    assert entry["model_version"] == "v2"
    assert "RuntimeError: bad" in entry["exc_info"]
    assert entry["ts"].endswith("+00:00")


def test_request_id_from_metadata():
    assert logs.request_id_from_metadata((("x-request-id", "abc"),)) == "abc"
    generated = logs.request_id_from_metadata((("other", "x"),))
    assert len(generated) == 32 and int(generated, 16) >= 0
    assert logs.request_id_from_metadata(None) != generated
    assert logs.outgoing_metadata("abc") == (("x-request-id", "abc"),)


@session_loop
async def test_observe_rpc_counts_latency_and_errors():
    registry = CollectorRegistry()
    m = metrics.Metrics(registry)

    @metrics.observe_rpc("ranking", metrics=m)
    async def Rank(request, context):
        if request == "bad":
            raise errors.InvalidArgument("bad")
        return "ok"

    assert await Rank("good", None) == "ok"
    with pytest.raises(errors.InvalidArgument):
        await Rank("bad", None)
    labels = {"service": "ranking", "method": "Rank"}
    assert registry.get_sample_value("recmesh_rpc_latency_seconds_count", labels) == 2
    assert registry.get_sample_value("recmesh_rpc_errors_total", {**labels, "code": "INVALID_ARGUMENT"}) == 1
    assert metrics.start_metrics_server(0) is None
