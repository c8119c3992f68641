"""serving.server against real gRPC servers on loopback (port 0): health, reflection, shutdown, background work."""

from __future__ import annotations

import asyncio
import os
import signal

import grpc
import grpc.aio
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from serving import metrics, server, vectors
from tests.serving.fake_servicers import GATEWAY, STORE, Running, request

session_loop = pytest.mark.asyncio(loop_scope="session")  # grpc.aio objects stay on one loop


@session_loop
async def test_health_serving_and_reflection_lists_services(running: Running):
    health = health_pb2_grpc.HealthStub(running.channel)
    for name in ("", STORE, GATEWAY):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING

    stub = reflection_pb2_grpc.ServerReflectionStub(running.channel)
    call = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = set()
    async for reply in call:
        names |= {s.name for s in reply.list_services_response.service}
    assert {STORE, GATEWAY, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names


@session_loop
async def test_unary_ok_and_vectors_travel_packed(running: Running):
    reply = await running.store_stub().GetEmbeddings(request("a", "bcd"), timeout=5)
    np.testing.assert_array_equal(vectors.unpack(reply.vectors, reply.dim), [[1, 1], [3, 1]])


@session_loop
async def test_sigterm_marks_not_serving_then_stops(running: Running):
    before = signal.getsignal(signal.SIGTERM)
    task = asyncio.create_task(server.serve_until_signal(running.server, running.health, grace_s=0.5, drain_s=1.0))
    for _ in range(100):  # wait until serve_until_signal has installed its handler
        if signal.getsignal(signal.SIGTERM) is not before:
            break
        await asyncio.sleep(0.01)
    else:
        pytest.fail("SIGTERM handler was not installed")
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.sleep(0.2)  # inside the drain window: still answering, but NOT_SERVING
    stub = health_pb2_grpc.HealthStub(running.channel)
    for name in ("", STORE):
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
    await asyncio.wait_for(task, timeout=10)
    assert signal.getsignal(signal.SIGTERM) is before
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
    assert info.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


@session_loop
async def test_stop_event_shuts_down_without_a_signal(running: Running):
    stop = asyncio.Event()
    task = asyncio.create_task(server.serve_until_signal(running.server, running.health, grace_s=0.1, stop=stop))
    await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, timeout=5)


@session_loop
async def test_background_work_is_cancelled_and_cleaned_up_before_serve_until_signal_returns(running: Running):
    events: list[str] = []

    async def watch() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            events.append("work cancelled")

    async def cleanup() -> None:
        await asyncio.sleep(0.2)  # e.g. closing a Redis client: takes a while
        events.append("cleaned up")

    server.run_while_serving(running.server, watch(), cleanup=cleanup)
    stop = asyncio.Event()
    task = asyncio.create_task(server.serve_until_signal(running.server, running.health, grace_s=0.1, stop=stop))
    await asyncio.sleep(0.05)
    assert events == []
    stop.set()
    await asyncio.wait_for(task, timeout=5)
    assert events == ["work cancelled", "cleaned up"]


def test_server_options_end_connections_at_their_maximum_age():
    options = dict(server.server_options(8, max_connection_age_s=2.5))
    assert options["grpc.max_receive_message_length"] == 8 * 1024 * 1024
    assert options["grpc.max_connection_age_ms"] == 2500
    assert "grpc.max_connection_age_ms" not in dict(server.server_options(4, max_connection_age_s=0))


def test_the_metrics_server_is_off_for_port_zero():
    assert metrics.start_metrics_server(0) is None
