"""The gRPC face of the gateway: recmesh.v1.RecommendationService over :class:`gateway.core.GatewayCore`.

Proto semantics: 0 means "the default" for k, candidate_count and budget_ms, and values above a cap are capped
(REST rejects them instead, as its schema says). The caller's own gRPC deadline cuts the budget. Trailing
metadata carries ``x-request-id`` (also on errors) and ``server-timing`` (same format as the REST header).

    server, port, health = await create_grpc_server(core, "[::]:50050")
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import grpc
import grpc.aio
import numpy as np
from grpc_health.v1 import health

from gateway import core as gw
from gateway.budget import server_timing
from gateway.clients import Scored
from gateway.events import Event
from recmesh.v1 import common_pb2, recommendation_service_pb2, recommendation_service_pb2_grpc
from serving.errors import InvalidArgument, grpc_errors
from serving.logs import REQUEST_ID_KEY, bind_request_id
from serving.metrics import observe_rpc
from serving.server import create_server

pb = recommendation_service_pb2
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["RecommendationService"].full_name
MAX_STREAM_EVENTS = 10_000  # per RecordEvents stream: validated together, so a bad one stores nothing

EVENT_TYPES = {
    common_pb2.EVENT_TYPE_UNSPECIFIED: "view",
    common_pb2.EVENT_TYPE_VIEW: "view",
    common_pb2.EVENT_TYPE_CLICK: "click",
    common_pb2.EVENT_TYPE_ADD_TO_CART: "add_to_cart",
    common_pb2.EVENT_TYPE_PURCHASE: "purchase",
}


def _or_default(name: str, value: int, default: int, cap: int) -> int:
    if value < 0:
        raise InvalidArgument(f"{name} must be >= 0 (0 = default {default}), got {value}")
    return min(value or default, cap)


def _candidate_count(value: int) -> int | None:
    """0 = the model version's own count (None); values above the cap are capped, as for every count here."""
    if value < 0:
        raise InvalidArgument(f"candidate_count must be >= 0 (0 = the model's default), got {value}")
    return min(value, gw.MAX_CANDIDATES) or None


def _vector(data: bytes) -> np.ndarray | None:
    if not data:
        return None
    if len(data) % 4:
        raise InvalidArgument(f"query_vector is {len(data)} bytes, not a whole number of float32 values")
    return np.frombuffer(data, dtype="<f4").astype(np.float32)


def _item_scores(scored_ids: Sequence[str], scores: Sequence[float]) -> list[common_pb2.ItemScore]:
    return [common_pb2.ItemScore(item_id=i, score=s) for i, s in zip(scored_ids, scores, strict=True)]


def _scored(s: Scored) -> list[common_pb2.ItemScore]:
    return _item_scores(s.item_ids, s.scores)


def _event(e: common_pb2.Event, where: str = "") -> Event:
    kind = EVENT_TYPES.get(e.type)
    if kind is None:
        known = ", ".join(f"{common_pb2.EventType.Name(v)} ({v})" for v in EVENT_TYPES)
        raise InvalidArgument(f"{where}unknown event type {e.type}; expected one of {known}; nothing was stored")
    return Event(e.user_id, e.item_id, kind, e.timestamp_ms, e.session_id)


class RecommendationServicer(recommendation_service_pb2_grpc.RecommendationServiceServicer):
    def __init__(self, core: gw.GatewayCore) -> None:
        self.core = core

    def _begin(self, context: grpc.aio.ServicerContext, budget_ms: int | None = None) -> tuple[str, gw.Budget]:
        rid = bind_request_id(context)
        context.set_trailing_metadata(((REQUEST_ID_KEY, rid),))
        return rid, self.core.budget(budget_ms, context.time_remaining())

    @staticmethod
    def _end(context: grpc.aio.ServicerContext, rid: str, timings: dict[str, float]) -> None:
        context.set_trailing_metadata(((REQUEST_ID_KEY, rid), ("server-timing", server_timing(timings))))

    @grpc_errors
    @observe_rpc("gateway")
    async def Recommend(self, request: pb.RecommendRequest, context: grpc.aio.ServicerContext) -> pb.RecommendResponse:
        o = request.options
        if o.budget_ms < 0:
            raise InvalidArgument(f"budget_ms must be >= 0 (0 = default), got {o.budget_ms}")
        budget_ms = min(o.budget_ms, gw.MAX_BUDGET_MS) or None
        rid, budget = self._begin(context, budget_ms)
        options = gw.RecommendOptions(
            skip_ranking=o.skip_ranking,
            candidate_count=_candidate_count(o.candidate_count),
            exclude_item_ids=list(o.exclude_item_ids),
            budget_ms=budget_ms,
            query_vector=_vector(o.query_vector),
            include_seen=o.include_seen,
        )
        query = gw.RecommendRequest(
            list(request.session_item_ids),
            request.user_id,
            _or_default("k", request.k, gw.DEFAULT_K, gw.MAX_K),
            options,
            request.model_version,
        )
        rec = await self.core.recommend(query, budget, rid)
        self._end(context, rid, rec.timings)
        return pb.RecommendResponse(
            items=_item_scores(rec.item_ids, rec.scores),
            model_version=rec.model_version,
            degraded=rec.degraded,
            degradations=[common_pb2.Degradation(stage=d.stage, reason=d.reason) for d in rec.degradations],
            unknown_item_ids=rec.unknown_item_ids,
            session_items_dropped=rec.session_items_dropped,
            timings=[common_pb2.StageTiming(stage=s, millis=ms) for s, ms in rec.timings.items()],
            recommendation_id=rec.recommendation_id,
        )

    @grpc_errors
    @observe_rpc("gateway")
    async def GetItemEmbeddings(
        self, request: pb.GetItemEmbeddingsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetItemEmbeddingsResponse:
        rid, budget = self._begin(context)
        found = await self.core.item_embeddings(list(request.item_ids), request.model_version, budget, rid)
        self._end(context, rid, budget.timings)
        return pb.GetItemEmbeddingsResponse(
            model_version=found.model_version,
            dim=found.dim,
            item_ids=found.item_ids,
            vectors=found.vectors.tobytes(),
            unknown_item_ids=found.unknown_item_ids,
            degraded=found.degraded,
            degraded_reason=found.degraded_reason,
        )

    @grpc_errors
    @observe_rpc("gateway")
    async def GetSimilarItems(
        self, request: pb.GetSimilarItemsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetSimilarItemsResponse:
        rid, budget = self._begin(context)
        k = _or_default("k", request.k, gw.DEFAULT_K, gw.MAX_K)
        found = await self.core.similar_items(request.item_id, k, request.model_version, budget, rid)
        self._end(context, rid, budget.timings)
        return pb.GetSimilarItemsResponse(items=_scored(found), model_version=found.model_version)

    @grpc_errors
    @observe_rpc("gateway")
    async def FindCandidates(
        self, request: pb.FindCandidatesRequest, context: grpc.aio.ServicerContext
    ) -> pb.FindCandidatesResponse:
        rid, budget = self._begin(context)
        found = await self.core.find_candidates(
            query_vector=_vector(request.query_vector),
            item_ids=list(request.item_ids),
            k=_or_default("k", request.k, gw.DEFAULT_FIND_K, gw.MAX_CANDIDATES),
            exclude_item_ids=list(request.exclude_item_ids),
            model_version=request.model_version,
            budget=budget,
            request_id=rid,
        )
        self._end(context, rid, budget.timings)
        return pb.FindCandidatesResponse(
            candidates=_scored(found), model_version=found.model_version, unknown_item_ids=found.unknown_item_ids
        )

    @grpc_errors
    @observe_rpc("gateway")
    async def RankCandidates(
        self, request: pb.RankCandidatesRequest, context: grpc.aio.ServicerContext
    ) -> pb.RankCandidatesResponse:
        rid, budget = self._begin(context)
        ranked = await self.core.rank_candidates(
            list(request.session_item_ids),
            [c.item_id for c in request.candidates],
            [c.score for c in request.candidates],
            request.k,
            request.model_version,
            budget,
            rid,
        )
        self._end(context, rid, budget.timings)
        return pb.RankCandidatesResponse(
            items=_scored(ranked), model_version=ranked.model_version, unknown_item_ids=ranked.unknown_item_ids
        )

    @grpc_errors
    @observe_rpc("gateway")
    async def RecordEvent(
        self, request: pb.RecordEventRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecordEventResponse:
        rid, budget = self._begin(context)
        recorded = await self.core.record_events([_event(request.event)], budget)
        self._end(context, rid, budget.timings)
        return pb.RecordEventResponse(stored=True, known_item=recorded.known[0])

    @grpc_errors
    @observe_rpc("gateway")
    async def RecordEvents(
        self, request_iterator: AsyncIterator[pb.RecordEventRequest], context: grpc.aio.ServicerContext
    ) -> pb.RecordEventsResponse:
        rid = bind_request_id(context)
        context.set_trailing_metadata(((REQUEST_ID_KEY, rid),))
        events: list[Event] = []
        async for req in request_iterator:
            if len(events) >= MAX_STREAM_EVENTS:
                raise InvalidArgument(f"at most {MAX_STREAM_EVENTS} events per stream; nothing was stored")
            events.append(_event(req.event, f"events[{len(events)}]: "))
        if not events:
            return pb.RecordEventsResponse(stored=0)
        budget = self.core.budget(None, context.time_remaining())
        recorded = await self.core.record_events(events, budget, limit=MAX_STREAM_EVENTS)
        self._end(context, rid, budget.timings)
        return pb.RecordEventsResponse(stored=recorded.stored, unknown_item_ids=recorded.unknown_item_ids)


async def create_grpc_server(
    core: gw.GatewayCore, address: str, max_message_mb: int = 4, max_connection_age_s: float = 30.0
) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
    """The gateway's gRPC server (RecommendationService + health + reflection), bound and started."""

    def register(server: grpc.aio.Server) -> None:
        recommendation_service_pb2_grpc.add_RecommendationServiceServicer_to_server(
            RecommendationServicer(core), server
        )

    return await create_server(address, register, [SERVICE_NAME], max_message_mb, max_connection_age_s)
