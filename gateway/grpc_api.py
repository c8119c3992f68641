"""The gRPC face of the gateway: recmesh.v1.RecommendationService over :class:`gateway.core.GatewayCore`.

Proto semantics: an unset number is 0, and 0 means "the default" for k, candidate_count and budget_ms; any other
value goes to the use cases as sent, so a value out of range is INVALID_ARGUMENT with the same message as over
REST (:mod:`gateway.checks`). The caller's own gRPC deadline cuts the budget. Trailing metadata carries
``x-request-id`` (also on errors) and ``server-timing`` (same format as the REST header).

    server, port, health = await create_grpc_server(core, "[::]:50050", authenticator=app.state.auth)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

import grpc
import grpc.aio
import numpy as np
from google.protobuf import json_format
from grpc_health.v1 import health

from gateway import auth
from gateway.auth import Authenticator
from gateway.auth_grpc import AuthInterceptor
from gateway.budget import server_timing
from gateway.clients import Embeddings, Scored
from gateway.core import GatewayCore
from gateway.events import Event
from gateway.recommend import ItemExplanation, Recommendation, RecommendOptions, RecommendRequest
from gateway.recording import RecordedEvents
from gateway.rules import BoostRule, DiversityRule, PinRule, RuleOptions
from gateway.stages import StageAnswer
from recmesh.v1 import catalog_pb2, common_pb2, recommendation_service_pb2, recommendation_service_pb2_grpc
from serving import limits, vectors
from serving.errors import InvalidArgument
from serving.logs import REQUEST_ID_KEY, get_request_id
from serving.server import create_server

pb = recommendation_service_pb2
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["RecommendationService"].full_name

# The proto enum's value of each event type (EVENT_TYPE_CLICK -> "click"); unspecified is a view.
EVENT_TYPE_NAMES = {common_pb2.EVENT_TYPE_UNSPECIFIED: "view"} | {
    common_pb2.EventType.Value(f"EVENT_TYPE_{name.upper()}"): name for name in limits.EVENT_TYPES
}


def _query_vector(data: bytes) -> np.ndarray | None:
    """The packed float32 values of a query vector (its length is checked against the model later); None if
    unset."""
    return vectors.unpack(data, 1)[:, 0] if data else None


def _item_scores(item_ids: Sequence[str], scores: Sequence[float]) -> list[common_pb2.ItemScore]:
    return [common_pb2.ItemScore(item_id=i, score=s) for i, s in zip(item_ids, scores, strict=True)]


def _scored(s: Scored) -> list[common_pb2.ItemScore]:
    return _item_scores(s.item_ids, s.scores)


def _version_and_unknown(s: Scored) -> dict[str, Any]:
    """The model_version and unknown_item_ids fields of a FindCandidates or RankCandidates answer."""
    return {"model_version": s.model_version, "unknown_item_ids": s.unknown_item_ids}


def _event(e: common_pb2.Event, where: str = "") -> Event:
    kind = EVENT_TYPE_NAMES.get(e.type)
    if kind is None:
        known = ", ".join(f"{common_pb2.EventType.Name(v)} ({v})" for v in EVENT_TYPE_NAMES)
        raise InvalidArgument(
            f"{where}unknown event type {e.type}; expected one of {known}; nothing was stored",
            field=f"{where.rstrip(': ')}.type" if where else "event.type",
        )
    return Event(e.user_id, e.item_id, kind, e.timestamp_ms, e.session_id)


def _explanation(e: ItemExplanation) -> catalog_pb2.ItemExplanation:
    return catalog_pb2.ItemExplanation(
        item_id=e.item_id,
        sources=e.sources,
        logit=e.logit,
        intercept=e.intercept,
        contributions=[catalog_pb2.FeatureContribution(feature=f, value=v) for f, v in e.contributions],
        other=e.other,
        rules=e.rules,
    )


def _recommend_request(request: pb.RecommendRequest) -> RecommendRequest:
    o = request.options
    options = RecommendOptions(
        skip_ranking=o.skip_ranking,
        candidate_count=o.candidate_count or None,  # None: the model version's own count
        exclude_item_ids=list(o.exclude_item_ids),
        budget_ms=o.budget_ms or None,  # None: the gateway's default
        query_vector=_query_vector(o.query_vector),
        include_seen=o.include_seen,
        sources=o.sources or None,  # None: the default (RecommendOptions.sources)
        rules=RuleOptions(
            filter=o.filter,
            filter_strict=o.filter_strict,
            boosts=[
                BoostRule(b.filter, b.multiply if b.HasField("multiply") else 1.0, b.add, b.include, b.name)
                for b in o.boosts
            ],
            pins=[PinRule(p.item_id, p.position) for p in o.pins],
            diversity=DiversityRule(o.diversity.attribute, o.diversity.max_per_value)
            if o.HasField("diversity")
            else None,
        ),
        explain=o.explain,
    )
    k = request.k or limits.DEFAULT_K
    return RecommendRequest(
        list(request.session_item_ids),
        request.user_id,
        k,
        options,
        request.model_version,
        request.session_id,
        request.forced_variant,
    )


class _Timed(Protocol):
    @property
    def timings(self) -> dict[str, float]: ...


TimedT = TypeVar("TimedT", bound=_Timed)


class RecommendationServicer(recommendation_service_pb2_grpc.RecommendationServiceServicer):
    def __init__(self, core: GatewayCore) -> None:
        self.core = core

    @staticmethod
    def _begin(context: grpc.aio.ServicerContext) -> str:
        rid = get_request_id() or ""  # bound by the server's interceptor
        context.set_trailing_metadata(((REQUEST_ID_KEY, rid),))
        return rid

    @staticmethod
    def _end(context: grpc.aio.ServicerContext, rid: str, timings: dict[str, float]) -> None:
        context.set_trailing_metadata(((REQUEST_ID_KEY, rid), ("server-timing", server_timing(timings))))

    async def _serve(
        self, context: grpc.aio.ServicerContext, call: Callable[[float | None], Awaitable[TimedT]]
    ) -> TimedT:
        """Bind the request id (a trailer even on errors), run ``call(the caller's deadline)``, and send its
        timings as the server-timing trailer. Read the request inside ``call``: a bad one then has the id too."""
        rid = self._begin(context)
        answer = await call(context.time_remaining())
        self._end(context, rid, answer.timings)
        return answer

    async def Recommend(self, request: pb.RecommendRequest, context: grpc.aio.ServicerContext) -> pb.RecommendResponse:
        async def recommend(deadline_s: float | None) -> Recommendation:
            if request.user_id:  # a visitor's history shapes the answer (and its unknown_item_ids): theirs to read
                auth.require("history:read")
            return await self.core.recommender.recommend(_recommend_request(request), deadline_s)

        rec = await self._serve(context, recommend)
        return pb.RecommendResponse(
            items=_item_scores(rec.item_ids, rec.scores),
            model_version=rec.model_version,
            degraded=rec.degraded,
            degradations=[common_pb2.Degradation(stage=d.stage, reason=d.reason) for d in rec.degradations],
            unknown_item_ids=rec.unknown_item_ids,
            session_items_dropped=rec.session_items_dropped,
            timings=[common_pb2.StageTiming(stage=s, millis=ms) for s, ms in rec.timings.items()],
            recommendation_id=rec.recommendation_id,
            explanations=[_explanation(e) for e in rec.explanations or ()],
            filled_from_popular=rec.filled_from_popular,
            diversity_relaxed=rec.diversity_relaxed,
            experiment=rec.experiment,
            variant=rec.variant,
        )

    async def GetItemEmbeddings(
        self, request: pb.GetItemEmbeddingsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetItemEmbeddingsResponse:
        async def look_up(deadline_s: float | None) -> StageAnswer[Embeddings]:
            return await self.core.stages.item_embeddings(list(request.item_ids), request.model_version, deadline_s)

        found = (await self._serve(context, look_up)).result
        return pb.GetItemEmbeddingsResponse(
            model_version=found.model_version,
            dim=found.dim,
            item_ids=found.item_ids,
            vectors=vectors.pack(found.vectors),
            unknown_item_ids=found.unknown_item_ids,
            degraded=found.degraded,
            degraded_reason=found.degraded_reason,
        )

    async def GetSimilarItems(
        self, request: pb.GetSimilarItemsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetSimilarItemsResponse:
        k = request.k or limits.DEFAULT_K

        async def find_similar(deadline_s: float | None) -> StageAnswer[Scored]:
            return await self.core.stages.similar_items(request.item_id, k, request.model_version, deadline_s)

        similar = (await self._serve(context, find_similar)).result
        return pb.GetSimilarItemsResponse(items=_scored(similar), model_version=similar.model_version)

    async def FindCandidates(
        self, request: pb.FindCandidatesRequest, context: grpc.aio.ServicerContext
    ) -> pb.FindCandidatesResponse:
        async def find(deadline_s: float | None) -> StageAnswer[Scored]:
            return await self.core.stages.find_candidates(
                query_vector=_query_vector(request.query_vector),
                item_ids=list(request.item_ids),
                k=request.k or limits.CANDIDATES_DEFAULT_K,
                exclude_item_ids=list(request.exclude_item_ids),
                model_version=request.model_version,
                caller_deadline_s=deadline_s,
            )

        found = (await self._serve(context, find)).result
        return pb.FindCandidatesResponse(candidates=_scored(found), **_version_and_unknown(found))

    async def RankCandidates(
        self, request: pb.RankCandidatesRequest, context: grpc.aio.ServicerContext
    ) -> pb.RankCandidatesResponse:
        async def rank(deadline_s: float | None) -> StageAnswer[Scored]:
            ids, scores = [c.item_id for c in request.candidates], [c.score for c in request.candidates]
            session, k = list(request.session_item_ids), request.k  # k = 0: all of them, as over REST
            return await self.core.stages.rank_candidates(session, ids, scores, k, request.model_version, deadline_s)

        ranked = (await self._serve(context, rank)).result
        return pb.RankCandidatesResponse(items=_scored(ranked), **_version_and_unknown(ranked))

    async def RecordEvent(
        self, request: pb.RecordEventRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecordEventResponse:
        async def record(deadline_s: float | None) -> RecordedEvents:
            events = [_event(request.event)]
            return await self.core.events.record(
                events, max_events=limits.MAX_EVENTS_PER_CALL, unit="call", caller_deadline_s=deadline_s
            )

        recorded = await self._serve(context, record)
        return pb.RecordEventResponse(stored=True, known_item=recorded.known[0])

    async def RecordEvents(
        self, request_iterator: AsyncIterator[pb.RecordEventRequest], context: grpc.aio.ServicerContext
    ) -> pb.RecordEventsResponse:
        rid = get_request_id() or ""  # bound by the server's interceptor
        context.set_trailing_metadata(((REQUEST_ID_KEY, rid),))
        events: list[Event] = []
        async for req in request_iterator:
            events.append(_event(req.event, f"events[{len(events)}]: "))
            if len(events) > limits.MAX_EVENTS_PER_STREAM:
                break  # one over the cap refuses the whole stream: the rest need not be read
        if not events:
            return pb.RecordEventsResponse(stored=0)
        recorded = await self.core.events.record(
            events,
            max_events=limits.MAX_EVENTS_PER_STREAM,
            unit="stream",
            caller_deadline_s=context.time_remaining(),
        )
        self._end(context, rid, recorded.timings)
        return pb.RecordEventsResponse(stored=recorded.stored, unknown_item_ids=recorded.unknown_item_ids)

    async def UpsertItems(
        self, request: catalog_pb2.UpsertItemsRequest, context: grpc.aio.ServicerContext
    ) -> catalog_pb2.UpsertItemsResponse:
        items = [(item.item_id, json_format.MessageToDict(item.attributes)) for item in request.items]
        written = await self.core.items.upsert(items, merge=request.merge)
        return catalog_pb2.UpsertItemsResponse(upserted=written.count, catalog_seq=written.catalog_seq)

    async def GetItem(
        self, request: catalog_pb2.GetItemRequest, context: grpc.aio.ServicerContext
    ) -> catalog_pb2.GetItemResponse:
        attributes, known = await self.core.items.get(request.item_id)
        item = catalog_pb2.CatalogItem(item_id=request.item_id)
        item.attributes.update(attributes)
        return catalog_pb2.GetItemResponse(item=item, known_to_model=known)

    async def DeleteItems(
        self, request: catalog_pb2.DeleteItemsRequest, context: grpc.aio.ServicerContext
    ) -> catalog_pb2.DeleteItemsResponse:
        written = await self.core.items.delete(list(request.item_ids))
        return catalog_pb2.DeleteItemsResponse(deleted=written.count, catalog_seq=written.catalog_seq)


async def create_grpc_server(
    core: GatewayCore,
    address: str,
    max_message_mb: int = 4,
    max_connection_age_s: float = 30.0,
    *,
    authenticator: Authenticator,
    max_concurrent_rpcs: int | None = None,
) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
    """The gateway's gRPC server (RecommendationService + health + reflection), bound and started; every
    RecommendationService call is checked by ``authenticator`` (gateway/auth_grpc.py)."""

    def register(server: grpc.aio.Server) -> None:
        recommendation_service_pb2_grpc.add_RecommendationServiceServicer_to_server(
            RecommendationServicer(core), server
        )

    return await create_server(
        address,
        register,
        [SERVICE_NAME],
        max_message_mb,
        max_connection_age_s,
        interceptors=[AuthInterceptor(authenticator, SERVICE_NAME)],
        maximum_concurrent_rpcs=max_concurrent_rpcs,  # more at once: RESOURCE_EXHAUSTED (MAX_IN_FLIGHT)
    )
