"""EmbeddingStoreService over gRPC: a thin adapter around `EmbeddingStore.get` / `get_many`, vectors packed as
float32.

Usage::

    pb_grpc.add_EmbeddingStoreServiceServicer_to_server(EmbeddingStoreServicer(store), server)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import grpc.aio

from recmesh.v1 import embedding_store_service_pb2 as pb
from recmesh.v1 import embedding_store_service_pb2_grpc as pb_grpc
from services.embedding_store.core import EmbeddingStore, Lookup
from serving.batch import answer_together
from serving.vectors import pack

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["EmbeddingStoreService"].full_name


class EmbeddingStoreServicer(pb_grpc.EmbeddingStoreServiceServicer):
    """GetEmbeddings and BatchGetEmbeddings, answered by an EmbeddingStore (in-process LRU, then Redis, then the
    bundle).

    Every tier holds the same float32 bytes, so they go out as they were read.
    """

    def __init__(self, store: EmbeddingStore) -> None:
        self.store = store

    async def GetEmbeddings(
        self, request: pb.GetEmbeddingsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetEmbeddingsResponse:
        return response(await self.store.get(list(request.item_ids), request.model_version))

    async def BatchGetEmbeddings(
        self, request: pb.BatchGetEmbeddingsRequest, context: grpc.aio.ServicerContext
    ) -> pb.BatchGetEmbeddingsResponse:
        """Each member as GetEmbeddings answers it, all their LRU misses read from Redis with one MGET."""

        async def lookups(requests: Sequence[pb.GetEmbeddingsRequest]) -> list[Lookup | Exception]:
            return await self.store.get_many([(list(r.item_ids), r.model_version) for r in requests])

        results = await answer_together(
            request, lookups, response, pb.GetEmbeddingsResult, f"/{SERVICE_NAME}/BatchGetEmbeddings"
        )
        return pb.BatchGetEmbeddingsResponse(results=results)


def response(found: Lookup) -> pb.GetEmbeddingsResponse:
    """The answer to one GetEmbeddings request."""
    log.debug(
        "GetEmbeddings",
        extra={
            "items": len(found.item_ids) + len(found.unknown_item_ids),
            "unknown": len(found.unknown_item_ids),
            "version": found.version,
            "degraded": found.degraded,
        },
    )
    return pb.GetEmbeddingsResponse(
        model_version=found.version,
        dim=found.dim,
        item_ids=found.item_ids,
        vectors=pack(found.vectors),
        unknown_item_ids=found.unknown_item_ids,
        degraded=found.degraded,
        degraded_reason=found.degraded_reason,
    )
