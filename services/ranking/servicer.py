"""gRPC adapter of CandidateRanker: proto in, core call, proto out. Errors become statuses via @grpc_errors."""

from __future__ import annotations

import logging

import grpc.aio

from recmesh.v1 import common_pb2
from recmesh.v1 import ranking_service_pb2 as pb
from recmesh.v1 import ranking_service_pb2_grpc as pb_grpc
from services.common.errors import grpc_errors
from services.common.logs import bind_request_id
from services.common.metrics import observe_rpc
from services.ranking.core import CandidateRanker

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["RankingService"].full_name


class RankingServicer(pb_grpc.RankingServiceServicer):
    def __init__(self, ranker: CandidateRanker) -> None:
        self.ranker = ranker

    @grpc_errors
    @observe_rpc("ranking")
    async def Rank(self, request: pb.RankRequest, context: grpc.aio.ServicerContext) -> pb.RankResponse:
        bind_request_id(context)
        ranked = await self.ranker.rank(
            session_item_ids=request.session_item_ids,
            candidate_ids=[c.item_id for c in request.candidates],
            retrieval_scores=[c.score for c in request.candidates],
            k=request.k,
            model_version=request.model_version,
        )
        log.debug(
            "ranked candidates",
            extra={
                "model_version": ranked.model_version,
                "n": len(ranked.item_ids),
                "unknown": len(ranked.unknown_item_ids),
            },
        )
        return pb.RankResponse(
            items=[
                common_pb2.ItemScore(item_id=item, score=score)
                for item, score in zip(ranked.item_ids, ranked.scores.tolist(), strict=True)
            ],
            model_version=ranked.model_version,
            unknown_item_ids=ranked.unknown_item_ids,
        )
