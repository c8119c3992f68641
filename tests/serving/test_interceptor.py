"""The one server interceptor against a real grpc.aio server (port 0): statuses, metrics, request ids."""

from __future__ import annotations

import asyncio
import logging

import grpc
import grpc.aio
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from prometheus_client import CollectorRegistry

from recmesh.v1 import common_pb2, recommendation_service_pb2
from serving import errors, interceptor, logs, server
from serving.metrics import Metrics
from tests.serving.fake_servicers import SECRET, FakeStore, Running, request, running_server

session_loop = pytest.mark.asyncio(loop_scope="session")  # grpc.aio objects stay on one loop
CALLS = "rpc_server_call_duration_seconds_count"
STORE_LABELS = {"rpc_system": "grpc", "rpc_service": "recmesh.v1.EmbeddingStoreService", "rpc_method": "GetEmbeddings"}
EVENTS_LABELS = {"rpc_system": "grpc", "rpc_service": "recmesh.v1.RecommendationService", "rpc_method": "RecordEvents"}


def code(status: grpc.StatusCode) -> str:
    """The rpc_grpc_status_code label of a status: its number."""
    return str(status.value[0])


def all_calls(running: Running, labels: dict[str, str]) -> float:
    return sum(running.sample(CALLS, **labels, rpc_grpc_status_code=code(c)) for c in grpc.StatusCode)


def events(*items: str):  # type: ignore[no-untyped-def]
    return iter([recommendation_service_pb2.RecordEventRequest(event=common_pb2.Event(item_id=i)) for i in items])


async def failed(call) -> grpc.aio.AioRpcError:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


@session_loop
async def test_invalid_argument_raised_in_a_handler_is_invalid_argument_with_its_message(running: Running):
    err = await failed(running.store_stub().GetEmbeddings(request(), timeout=5))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "item_ids must not be empty"


@session_loop
async def test_invalid_argument_carries_bad_request_field_violations_a_client_can_decode(running: Running):
    err = await failed(running.store_stub().GetEmbeddings(request(), timeout=5))
    status = rpc_status.from_call(err)  # checks the trailer's code and message equal the call's
    assert status is not None and status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    bad = error_details_pb2.BadRequest()
    assert len(status.details) == 1 and status.details[0].Unpack(bad)
    assert [(v.field, v.description) for v in bad.field_violations] == [("item_ids", "item_ids must not be empty")]
    assert errors.from_rpc_error(err).violations == (errors.FieldViolation("item_ids", "item_ids must not be empty"),)


@session_loop
async def test_an_error_without_details_has_no_status_details_trailer(running: Running):
    err = await failed(running.store_stub().GetEmbeddings(request("boom"), timeout=5))
    assert rpc_status.from_call(err) is None


@session_loop
async def test_unexpected_exception_is_internal_with_the_request_id_and_no_internals(running: Running, caplog):
    with caplog.at_level(logging.ERROR, logger="serving.errors"):
        err = await failed(
            running.store_stub().GetEmbeddings(request("boom"), timeout=5, metadata=(("x-request-id", "req-42"),))
        )
    assert err.code() == grpc.StatusCode.INTERNAL
    assert err.details() == "internal error (request_id=req-42)"
    assert SECRET not in err.details() and "Traceback" not in err.details()
    # ... but the traceback is in the server's log, once.
    logged = [r for r in caplog.records if r.exc_info]
    assert len(logged) == 1 and SECRET in str(logged[0].exc_info[1])
    assert "/recmesh.v1.EmbeddingStoreService/GetEmbeddings" in logged[0].getMessage()


@session_loop
async def test_metrics_time_every_call_and_count_errors_by_code(running: Running):
    stub = running.store_stub()
    await stub.GetEmbeddings(request("a"), timeout=5)
    await failed(stub.GetEmbeddings(request(), timeout=5))
    await failed(stub.GetEmbeddings(request(), timeout=5))
    await failed(stub.GetEmbeddings(request("boom"), timeout=5))
    assert all_calls(running, STORE_LABELS) == 4
    assert running.sample(CALLS, **STORE_LABELS, rpc_grpc_status_code="0") == 1
    assert running.sample(CALLS, **STORE_LABELS, rpc_grpc_status_code=code(grpc.StatusCode.INVALID_ARGUMENT)) == 2
    assert running.sample(CALLS, **STORE_LABELS, rpc_grpc_status_code=code(grpc.StatusCode.INTERNAL)) == 1


@session_loop
async def test_a_call_the_handler_aborted_itself_keeps_its_status_and_is_counted(running: Running, caplog):
    with caplog.at_level(logging.DEBUG, logger="serving.errors"):
        err = await failed(running.store_stub().GetEmbeddings(request("abort"), timeout=5))
    assert (err.code(), err.details()) == (grpc.StatusCode.PERMISSION_DENIED, "aborted by the handler")
    # The handler's abort sent the status before the interceptor saw it: counted a moment after the caller knows.
    denied = {**STORE_LABELS, "rpc_grpc_status_code": code(grpc.StatusCode.PERMISSION_DENIED)}
    for _ in range(500):
        if running.sample(CALLS, **denied):
            break
        await asyncio.sleep(0.01)
    assert running.sample(CALLS, **denied) == 1
    assert not [r for r in caplog.records if r.name == "serving.errors"]  # not mapped (or logged) a second time


@session_loop
async def test_the_request_id_of_the_metadata_is_bound_in_the_handler(running: Running):
    stub = running.store_stub()
    await stub.GetEmbeddings(request("a"), timeout=5, metadata=(("x-request-id", "req-7"),))
    await stub.GetEmbeddings(request("a"), timeout=5)
    await stub.GetEmbeddings(request("a"), timeout=5)
    given, fresh, other = running.store.request_ids
    assert given == "req-7"
    assert fresh and other and fresh != other and len(fresh) == 32  # made per call when absent
    assert logs.get_request_id() is None  # nothing leaks into the caller's context


@session_loop
async def test_a_failed_downstream_call_keeps_its_code(running: Running):
    store = FakeStore(unavailable_times=1)  # raises serving.errors.Unavailable once
    async with running_server(store) as served:
        err = await failed(served.store_stub().GetEmbeddings(request("a"), timeout=5))
    assert (err.code(), err.details()) == (grpc.StatusCode.UNAVAILABLE, "warming up")


@session_loop
async def test_stream_unary_handlers_get_the_same_treatment(running: Running, caplog):
    stub = running.events_stub()
    reply = await stub.RecordEvents(events("a", "b"), timeout=5, metadata=(("x-request-id", "stream-1"),))
    assert reply.stored == 2
    err = await failed(stub.RecordEvents(events("a", ""), timeout=5))
    assert (err.code(), err.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "event 1 has no item_id")
    with caplog.at_level(logging.ERROR, logger="serving.errors"):
        err = await failed(stub.RecordEvents(events("boom"), timeout=5, metadata=(("x-request-id", "stream-3"),)))
    assert (err.code(), err.details()) == (grpc.StatusCode.INTERNAL, "internal error (request_id=stream-3)")
    assert [r for r in caplog.records if r.exc_info]
    assert running.events.request_ids[0] == "stream-1" and running.events.request_ids[1]
    assert all_calls(running, EVENTS_LABELS) == 3
    assert running.sample(CALLS, **EVENTS_LABELS, rpc_grpc_status_code=code(grpc.StatusCode.INVALID_ARGUMENT)) == 1
    assert running.sample(CALLS, **EVENTS_LABELS, rpc_grpc_status_code=code(grpc.StatusCode.INTERNAL)) == 1


@session_loop
async def test_each_method_is_wrapped_once_and_library_services_are_left_alone(running: Running, monkeypatch):
    wrapped: list[str] = []
    wrap = interceptor.RpcInterceptor._wrap

    def counting_wrap(self, path, handler):  # type: ignore[no-untyped-def]
        wrapped.append(path)
        return wrap(self, path, handler)

    monkeypatch.setattr(interceptor.RpcInterceptor, "_wrap", counting_wrap)
    async with running_server() as served:
        for _ in range(5):
            await served.store_stub().GetEmbeddings(request("a"), timeout=5)
            await served.events_stub().RecordEvents(events("a"), timeout=5)
        assert sorted(wrapped) == [
            "/recmesh.v1.EmbeddingStoreService/GetEmbeddings",
            "/recmesh.v1.RecommendationService/RecordEvents",
        ]
        unknown = served.channel.unary_unary("/recmesh.v1.EmbeddingStoreService/Nope")
        assert (await failed(unknown(b"", timeout=5))).code() == grpc.StatusCode.UNIMPLEMENTED
        assert len(wrapped) == 2  # an unknown method is neither wrapped nor cached
        health = health_pb2_grpc.HealthStub(served.channel)
        await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
        probes = [
            s
            for metric in served.metrics.registry.collect()  # type: ignore[union-attr]
            for s in metric.samples
            if s.labels.get("rpc_service", "").startswith("grpc.")
        ]
        assert probes == []  # probes stay out of the metrics


@session_loop
async def test_unary_stream_handlers_get_the_same_treatment():
    """No recmesh RPC streams its answer today; a generic handler stands in for one."""

    async def count_to(request: bytes, context):  # type: ignore[no-untyped-def]
        for i in range(int(request)):
            yield str(i).encode()
        raise errors.InvalidArgument(f"stopped after {request.decode()} ({logs.get_request_id()})")

    def register(srv: grpc.aio.Server) -> None:
        handler = grpc.unary_stream_rpc_method_handler(count_to)
        srv.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Counter", {"Count": handler}),))

    metrics = Metrics(CollectorRegistry())
    srv, port, _health = await server.create_server("127.0.0.1:0", register, ["test.Counter"], metrics=metrics)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_stream("/test.Counter/Count")(b"2", timeout=5, metadata=(("x-request-id", "s-1"),))
            received = []
            with pytest.raises(grpc.aio.AioRpcError) as info:
                async for message in call:
                    received.append(message)
    finally:
        await srv.stop(None)
    assert received == [b"0", b"1"]
    assert (info.value.code(), info.value.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "stopped after 2 (s-1)")
    labels = {"rpc_system": "grpc", "rpc_service": "test.Counter", "rpc_method": "Count"}
    assert metrics.registry.get_sample_value(CALLS, {**labels, "rpc_grpc_status_code": "3"}) == 1
