"""Build the embedding-store server: registry + Redis client + EmbeddingStore + gRPC server (port 0 for tests).

Usage::

    server, port, health, store = await create_server(Settings(), "127.0.0.1:0")
"""

from __future__ import annotations

import grpc.aio

from recmesh.v1 import embedding_store_service_pb2_grpc as pb_grpc
from services.embedding_store.caches import redis_client
from services.embedding_store.core import EmbeddingStore
from services.embedding_store.servicer import SERVICE_NAME, EmbeddingStoreServicer
from services.embedding_store.settings import Settings
from serving.metrics import Metrics
from serving.server import run_while_serving
from serving.stage_service import Started, load_registry, start_server


async def create_server(
    settings: Settings, address: str | None = None, metrics: Metrics | None = None
) -> Started[EmbeddingStore]:
    """Load the bundle, read Redis' version pointer once, start serving and the background refreshers.

    Stopping the server is enough: when it terminates, the store's background tasks (the pointer
    refresher, which also switches the registry; pending write-backs) are cancelled and its Redis client closed
    (`store.aclose()`, idempotent).
    """
    registry = await load_registry(settings)
    timeout_s = settings.redis_timeout_ms / 1000
    cache_url = settings.redis_cache_url or settings.redis_url
    store = EmbeddingStore(
        registry,
        redis_client(cache_url, timeout_s),
        pointer_client=redis_client(settings.redis_url, timeout_s) if cache_url != settings.redis_url else None,
        lru_size=settings.lru_size,
        redis_timeout_s=timeout_s,
        retry_after_s=settings.redis_retry_after_ms / 1000,
        ttl_s=settings.redis_vector_ttl_s,
        metrics=metrics,
    )
    if not settings.model_version:  # a pinned process ignores the published pointer
        await store.refresh_version()
        store.start(every_s=settings.version_refresh_ms / 1000)

    def register(server: grpc.aio.Server) -> None:
        pb_grpc.add_EmbeddingStoreServiceServicer_to_server(EmbeddingStoreServicer(store), server)

    server, port, health = await start_server(settings, address, register, [SERVICE_NAME], metrics)
    run_while_serving(server, cleanup=store.aclose)
    return server, port, health, store
