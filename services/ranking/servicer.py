"""gRPC adapter of CandidateRanker: proto in, core call, proto out. Errors become statuses via @grpc_errors."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import grpc.aio
import numpy as np

from recmesh.v1 import common_pb2
from recmesh.v1 import ranking_service_pb2 as pb
from recmesh.v1 import ranking_service_pb2_grpc as pb_grpc
from serving.errors import InvalidArgument, grpc_errors
from serving.logs import bind_request_id
from serving.metrics import observe_rpc
from services.ranking.core import CandidateRanker

log = logging.getLogger(__name__)

FLOAT32_BYTES = 4

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["RankingService"].full_name


def candidates_of(request: pb.RankRequest) -> tuple[Sequence[str], Sequence[float]]:
    """The candidates and their retrieval scores, from either form: `candidates` (one message each) or the
    packed `candidate_ids` + `candidate_scores` (little-endian float32, one per id)."""
    if not request.candidate_ids and not request.candidate_scores:
        return [c.item_id for c in request.candidates], [c.score for c in request.candidates]
    if request.candidates:
        raise InvalidArgument("set candidates or candidate_ids + candidate_scores, not both")
    ids = request.candidate_ids
    if len(request.candidate_scores) != FLOAT32_BYTES * len(ids):
        raise InvalidArgument(
            f"candidate_scores is {len(request.candidate_scores)} bytes; expected {FLOAT32_BYTES * len(ids)} "
            f"(one little-endian float32 per candidate id, {len(ids)} ids)"
        )
    return ids, np.frombuffer(request.candidate_scores, dtype="<f4").tolist()


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
