"""Rank (and BatchRank, several Ranks in one call) over gRPC: the packed candidate scores decoded, CandidateRanker
called, its order returned.

Usage::

    pb_grpc.add_RankingServiceServicer_to_server(RankingServicer(ranker), server)

Errors are raised, not aborted: the server's interceptor answers them (serving.interceptor).
"""

from __future__ import annotations

import logging

import grpc.aio

from recmesh.v1 import common_pb2
from recmesh.v1 import ranking_service_pb2 as pb
from recmesh.v1 import ranking_service_pb2_grpc as pb_grpc
from services.ranking.core import CandidateRanker
from serving.batch import answer_each
from serving.vectors import ROW_DTYPE, unpack_scores

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["RankingService"].full_name


class RankingServicer(pb_grpc.RankingServiceServicer):
    """Rank and BatchRank, answered by a CandidateRanker with the ranker of the model version each request pins."""

    def __init__(self, ranker: CandidateRanker) -> None:
        self.ranker = ranker

    async def Rank(self, request: pb.RankRequest, context: grpc.aio.ServicerContext) -> pb.RankResponse:
        return await self.rank(request)

    async def BatchRank(self, request: pb.BatchRankRequest, context: grpc.aio.ServicerContext) -> pb.BatchRankResponse:
        """Each member as Rank answers it, one after the other."""
        results = await answer_each(request, self.rank, pb.RankResult, f"/{SERVICE_NAME}/BatchRank")
        return pb.BatchRankResponse(results=results)

    async def rank(self, request: pb.RankRequest) -> pb.RankResponse:
        """The answer to one Rank request."""
        ranked = await self.ranker.rank(
            session_item_ids=request.session_item_ids,
            candidate_ids=request.candidate_ids,
            retrieval_scores=unpack_scores(request.candidate_scores, "candidate_scores"),
            k=request.k,
            model_version=request.model_version,
            explain=request.explain,
            candidate_rows=request.candidate_rows,
        )
        log.debug(
            "ranked %d of %d candidates",
            len(ranked.item_ids),
            len(request.candidate_ids) or len(request.candidate_rows) // ROW_DTYPE.itemsize,
            extra={"model_version": ranked.model_version, "unknown": len(ranked.unknown_item_ids)},
        )
        return pb.RankResponse(
            items=[
                common_pb2.ItemScore(item_id=item, score=score)
                for item, score in zip(ranked.item_ids, ranked.scores.tolist(), strict=True)
            ],
            model_version=ranked.model_version,
            unknown_item_ids=ranked.unknown_item_ids,
            explanations=[
                pb.ScoreExplanation(
                    logit=e.logit,
                    intercept=e.intercept,
                    features=[name for name, _ in e.contributions],
                    contributions=[value for _, value in e.contributions],
                    other=e.other,
                )
                for e in ranked.explanations
            ],
        )
