"""serving.errors.grpc_errors and serving.metrics.observe_rpc: replaced by serving.interceptor, kept while
gateway/grpc_api.py still decorates its methods. Delete this file with them."""

from __future__ import annotations

import logging

import grpc
import grpc.aio
import pytest
from prometheus_client import CollectorRegistry

from serving import errors, logs, metrics
from tests.serving.fake_servicers import FakeStore, request, running_server

session_loop = pytest.mark.asyncio(loop_scope="session")  # grpc.aio objects stay on one loop


class DecoratedStore(FakeStore):
    """A servicer as the gateway's still is: decorated, binding the request id itself."""

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self.bound: list[str] = []
        self.metrics = metrics.Metrics(registry)

    async def GetEmbeddings(self, request, context):  # type: ignore[no-untyped-def]
        @errors.grpc_errors
        @metrics.observe_rpc("gateway", "GetEmbeddings", metrics=self.metrics)
        async def handle(request, context):  # type: ignore[no-untyped-def]
            self.bound.append(logs.bind_request_id(context))
            return await FakeStore.GetEmbeddings(self, request, context)

        return await handle(request, context)


@session_loop
async def test_a_decorated_handler_behind_the_interceptor_is_answered_and_logged_once(caplog):
    registry = CollectorRegistry()
    store = DecoratedStore(registry)
    async with running_server(store) as served:
        stub = served.store_stub()
        with caplog.at_level(logging.ERROR, logger="serving.errors"), pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetEmbeddings(request("boom"), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as invalid:
            await stub.GetEmbeddings(request(), timeout=5)
        assert (await stub.GetEmbeddings(request("a"), timeout=5)).item_ids == ["a"]
    # The decorator answered INTERNAL with the interceptor's request id; the interceptor did not answer again.
    rid = store.request_ids[0]
    assert rid and store.bound[0] == rid
    assert (info.value.code(), info.value.details()) == (grpc.StatusCode.INTERNAL, f"internal error (request_id={rid})")
    assert len([r for r in caplog.records if r.exc_info]) == 1
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # Both count the calls for a while (under their own service labels).
    store_labels = {"service": "embedding_store", "method": "GetEmbeddings"}
    assert served.sample("recmesh_rpc_errors_total", **store_labels, code="INTERNAL") == 1
    assert served.sample("recmesh_rpc_errors_total", **store_labels, code="INVALID_ARGUMENT") == 1
    gateway_labels = {"service": "gateway", "method": "GetEmbeddings"}
    assert registry.get_sample_value("recmesh_rpc_errors_total", {**gateway_labels, "code": "INTERNAL"}) == 1
    assert registry.get_sample_value("recmesh_rpc_latency_seconds_count", gateway_labels) == 3


@session_loop
async def test_observe_rpc_counts_latency_and_errors():
    registry = CollectorRegistry()
    m = metrics.Metrics(registry)

    @metrics.observe_rpc("ranking", metrics=m)
    async def Rank(request, context):  # type: ignore[no-untyped-def]
        if request == "bad":
            raise errors.InvalidArgument("bad")
        return "ok"

    assert await Rank("good", None) == "ok"
    with pytest.raises(errors.InvalidArgument):
        await Rank("bad", None)
    labels = {"service": "ranking", "method": "Rank"}
    assert registry.get_sample_value("recmesh_rpc_latency_seconds_count", labels) == 2
    assert registry.get_sample_value("recmesh_rpc_errors_total", {**labels, "code": "INVALID_ARGUMENT"}) == 1
