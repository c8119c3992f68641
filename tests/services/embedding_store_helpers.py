"""Helpers for the embedding-store tests: a running store, Redis probes.

Each test module talks to its own Redis database of the shared session `redis_server` (its module-level ``DB``;
the ``url``/``client``/``published`` fixtures of conftest.py), so flushing it or moving its version pointer never
touches what other tests see in db 0.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc.aio
import numpy as np
import redis
from prometheus_client import CollectorRegistry

from recmesh.v1 import embedding_store_service_pb2 as pb
from recmesh.v1 import embedding_store_service_pb2_grpc as pb_grpc
from services.embedding_store.core import EmbeddingStore
from services.embedding_store.server import create_server
from services.embedding_store.settings import Settings
from serving.metrics import Metrics
from serving.server import shutdown
from serving.vectors import pack


def cmdstat_calls(client: redis.Redis, command: str) -> int:
    """How many times Redis has executed `command` since it started (INFO commandstats)."""
    stats = client.info("commandstats").get(f"cmdstat_{command}")
    return int(stats["calls"]) if stats else 0


def counter(metrics: Metrics, name: str, **labels: str) -> float:
    assert isinstance(metrics.registry, CollectorRegistry)
    return metrics.registry.get_sample_value(name, labels) or 0.0


@dataclass
class RunningStore:
    stub: pb_grpc.EmbeddingStoreServiceStub
    store: EmbeddingStore
    metrics: Metrics

    async def get(self, ids: list[str], version: str = "") -> pb.GetEmbeddingsResponse:
        return await self.stub.GetEmbeddings(pb.GetEmbeddingsRequest(item_ids=ids, model_version=version), timeout=10)


@contextlib.asynccontextmanager
async def running_store(models_dir: Path, url: str, **overrides: Any) -> AsyncIterator[RunningStore]:
    """A real embedding-store gRPC server on 127.0.0.1:0 with its own metrics registry."""
    values = {
        "RECMESH_MODELS_DIR": str(models_dir),
        "REDIS_URL": url,
        "METRICS_PORT": 0,
        "REDIS_TIMEOUT_MS": 500,  # the shared 2-core test machine: no spurious timeouts
        "VERSION_REFRESH_MS": 100,
        **overrides,
    }
    settings = Settings(**values)
    metrics = Metrics(CollectorRegistry())
    server, port, health, store = await create_server(settings, "127.0.0.1:0", metrics=metrics)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield RunningStore(pb_grpc.EmbeddingStoreServiceStub(channel), store, metrics)
    finally:
        await shutdown(server, health, grace_s=0)
        await store.aclose()


def rows_bytes(vectors: np.ndarray, rows: list[int]) -> bytes:
    return pack(vectors[rows])
