"""RetrieveCandidates (and BatchRetrieveCandidates, several in one call) over gRPC: proto in, CandidateGenerator
call, proto out (the scores packed as float32).

Usage::

    pb_grpc.add_CandidateGenerationServiceServicer_to_server(CandidateGenerationServicer(generator), server)
"""

from __future__ import annotations

import logging

import grpc.aio

from recmesh.v1 import candidate_generation_service_pb2 as pb
from recmesh.v1 import candidate_generation_service_pb2_grpc as pb_grpc
from services.candidate_generation.core import CandidateGenerator
from serving.batch import answer_each
from serving.vectors import pack, pack_item_rows

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["CandidateGenerationService"].full_name


class CandidateGenerationServicer(pb_grpc.CandidateGenerationServiceServicer):
    """RetrieveCandidates and BatchRetrieveCandidates, answered by a CandidateGenerator in the model version each
    request pins."""

    def __init__(self, generator: CandidateGenerator) -> None:
        self.generator = generator

    async def RetrieveCandidates(
        self, request: pb.RetrieveCandidatesRequest, context: grpc.aio.ServicerContext
    ) -> pb.RetrieveCandidatesResponse:
        await self.generator.refresh_catalog()
        return await self.retrieve(request)

    async def BatchRetrieveCandidates(
        self, request: pb.BatchRetrieveCandidatesRequest, context: grpc.aio.ServicerContext
    ) -> pb.BatchRetrieveCandidatesResponse:
        """Each member as RetrieveCandidates answers it, one after the other, after one catalogue refresh for all."""
        await self.generator.refresh_catalog()
        results = await answer_each(
            request, self.retrieve, pb.RetrieveCandidatesResult, f"/{SERVICE_NAME}/BatchRetrieveCandidates"
        )
        return pb.BatchRetrieveCandidatesResponse(results=results)

    async def retrieve(self, request: pb.RetrieveCandidatesRequest) -> pb.RetrieveCandidatesResponse:
        """The answer to one RetrieveCandidates request."""
        found = await self.generator.retrieve(
            query_vector=request.query_vector,
            item_ids=request.item_ids,
            k=request.k,
            exclude_item_ids=request.exclude_item_ids,
            model_version=request.model_version,
            sources=request.sources,
            given_item_ids=request.given_item_ids,
            filter=request.filter,
            fill_from_popular=request.fill_from_popular,
            with_provenance=request.with_provenance,
        )
        log.debug(
            "retrieved %d candidates",
            len(found.item_ids),
            extra={"model_version": found.model_version, "unknown": len(found.unknown_item_ids)},
        )
        return pb.RetrieveCandidatesResponse(
            item_ids=found.item_ids,
            scores=pack(found.scores),
            model_version=found.model_version,
            unknown_item_ids=found.unknown_item_ids,
            source_names=found.source_names,
            found_by=found.found_by,
            filled=found.filled,
            catalog_seq=found.catalog_seq,
            catalog_stale_reason=found.catalog_stale_reason,
            rows=pack_item_rows(found.rows),
        )
