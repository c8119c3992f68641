"""Fake servicers behind a real grpc.aio server (127.0.0.1, port 0) for the serving-kit tests.

    async with running_server(FakeStore(unavailable_times=1)) as running:
        reply = await running.store_stub().GetEmbeddings(request("a"), timeout=5)

The fakes only raise (serving.errors classes or anything else): what the caller sees is the interceptor's doing.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
import numpy as np
from grpc_health.v1.health import HealthServicer
from prometheus_client import CollectorRegistry

from recmesh.v1 import (
    embedding_store_service_pb2,
    embedding_store_service_pb2_grpc,
    recommendation_service_pb2,
    recommendation_service_pb2_grpc,
)
from serving import errors, logs, server, vectors
from serving.metrics import Metrics

STORE = embedding_store_service_pb2.DESCRIPTOR.services_by_name["EmbeddingStoreService"].full_name
GATEWAY = recommendation_service_pb2.DESCRIPTOR.services_by_name["RecommendationService"].full_name
SECRET = "secret internal detail"


class FakeStore(embedding_store_service_pb2_grpc.EmbeddingStoreServiceServicer):
    """Every known item's vector is [len(id), 1]. Remembers the request id and peer of every call."""

    def __init__(self, unavailable_times: int = 0) -> None:
        self.calls = 0
        self.unavailable_times = unavailable_times
        self.request_ids: list[str | None] = []
        self.peers: list[str] = []

    async def GetEmbeddings(self, request, context):  # type: ignore[no-untyped-def]
        self.calls += 1
        self.request_ids.append(logs.get_request_id())
        self.peers.append(context.peer())
        if self.calls <= self.unavailable_times:
            raise errors.Unavailable("warming up")
        if not request.item_ids:
            raise errors.InvalidArgument("item_ids must not be empty", field="item_ids")
        if "boom" in request.item_ids:
            raise ValueError(SECRET)
        if "abort" in request.item_ids:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "aborted by the handler")
        ids = list(request.item_ids)
        matrix = np.array([[len(i), 1.0] for i in ids], dtype=np.float32)
        return embedding_store_service_pb2.GetEmbeddingsResponse(
            model_version="v1", dim=2, item_ids=ids, vectors=vectors.pack(matrix)
        )


class FakeEvents(recommendation_service_pb2_grpc.RecommendationServiceServicer):
    """RecordEvents (stream-unary) counts events; an event without item_id is INVALID_ARGUMENT, "boom" a bug."""

    def __init__(self) -> None:
        self.request_ids: list[str | None] = []

    async def RecordEvents(self, request_iterator, context):  # type: ignore[no-untyped-def]
        self.request_ids.append(logs.get_request_id())
        stored = 0
        async for req in request_iterator:
            if not req.event.item_id:
                raise errors.InvalidArgument(f"event {stored} has no item_id")
            if req.event.item_id == "boom":
                raise RuntimeError(SECRET)
            stored += 1
        return recommendation_service_pb2.RecordEventsResponse(stored=stored)


@dataclass
class Running:
    port: int
    store: FakeStore
    events: FakeEvents
    server: grpc.aio.Server
    health: HealthServicer
    channel: grpc.aio.Channel
    metrics: Metrics = field(repr=False)

    def store_stub(self) -> embedding_store_service_pb2_grpc.EmbeddingStoreServiceStub:
        return embedding_store_service_pb2_grpc.EmbeddingStoreServiceStub(self.channel)

    def events_stub(self) -> recommendation_service_pb2_grpc.RecommendationServiceStub:
        return recommendation_service_pb2_grpc.RecommendationServiceStub(self.channel)

    def sample(self, name: str, **labels: str) -> float:
        assert isinstance(self.metrics.registry, CollectorRegistry)
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


@contextlib.asynccontextmanager
async def running_server(
    store: FakeStore | None = None,
    events: FakeEvents | None = None,
    max_connection_age_s: float = 30.0,
    **create_options: Any,
) -> AsyncIterator[Running]:
    """FakeStore + FakeEvents behind serving.server.create_server, with their own metrics registry."""
    store = store or FakeStore()
    events = events or FakeEvents()
    metrics = Metrics(CollectorRegistry())

    def register(srv: grpc.aio.Server) -> None:
        embedding_store_service_pb2_grpc.add_EmbeddingStoreServiceServicer_to_server(store, srv)
        recommendation_service_pb2_grpc.add_RecommendationServiceServicer_to_server(events, srv)

    srv, port, health = await server.create_server(
        "127.0.0.1:0",
        register,
        [STORE, GATEWAY],
        max_connection_age_s=max_connection_age_s,
        metrics=metrics,
        **create_options,
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield Running(port, store, events, srv, health, channel, metrics)
    finally:
        await srv.stop(None)


def request(*ids: str) -> embedding_store_service_pb2.GetEmbeddingsRequest:
    return embedding_store_service_pb2.GetEmbeddingsRequest(item_ids=list(ids))
