"""gRPC adapter of CandidateRanker: proto in, core call, proto out. Errors become statuses via @grpc_errors."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import grpc.aio

from recmesh.v1 import common_pb2
from recmesh.v1 import ranking_service_pb2 as pb
from recmesh.v1 import ranking_service_pb2_grpc as pb_grpc
from services.ranking.core import CandidateRanker
from serving.errors import InvalidArgument, grpc_errors
from serving.logs import bind_request_id
from serving.metrics import observe_rpc
from serving.vectors import WIRE_DTYPE, unpack

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["RankingService"].full_name


def candidates_of(request: pb.RankRequest) -> tuple[Sequence[str], Sequence[float]]:
    """The candidate ids and their retrieval scores (packed little-endian float32, one per id)."""
    ids = request.candidate_ids
    if len(request.candidate_scores) != WIRE_DTYPE.itemsize * len(ids):
        raise InvalidArgument(
            f"candidate_scores is {len(request.candidate_scores)} bytes; expected {WIRE_DTYPE.itemsize * len(ids)} "
            f"(one little-endian float32 per candidate id, {len(ids)} ids)"
        )
    return ids, unpack(request.candidate_scores, 1)[:, 0].tolist() if ids else []


class RankingServicer(pb_grpc.RankingServiceServicer):
    def __init__(self, ranker: CandidateRanker) -> None:
        self.ranker = ranker

    @grpc_errors
    @observe_rpc("ranking")
    async def Rank(self, request: pb.RankRequest, context: grpc.aio.ServicerContext) -> pb.RankResponse:
        bind_request_id(context)
        candidate_ids, retrieval_scores = candidates_of(request)
        ranked = await self.ranker.rank(
            session_item_ids=request.session_item_ids,
            candidate_ids=candidate_ids,
            retrieval_scores=retrieval_scores,
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
