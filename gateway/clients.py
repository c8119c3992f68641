"""Typed wrappers over the three internal stubs: plain Python/numpy in, plain Python/numpy out.

Every call takes a deadline in seconds (what is left of the caller's budget); the current request id (the
:mod:`serving.logs` context variable) travels as ``x-request-id`` metadata. A failed call raises the matching
:mod:`serving.errors` class:

- ``InvalidArgument`` / ``NotFound``: the service refused the input (the caller's mistake, 400/404);
- ``DeadlineExceeded``: the deadline passed (or there was no time left to make the call);
- ``Unavailable``: anything else (down, overloaded, no model loaded yet, an internal error upstream) - the
  gateway degrades, or answers 503 when no useful answer exists.

    clients = Clients.open(settings)           # channels (round robin over replicas) + Redis
    found = await clients.candidates.retrieve(query_vector=q, k=200, timeout_s=0.15)
    await clients.close()
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
import grpc.aio
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.event_store import EventStore
from gateway.settings import Settings
from recmesh.v1 import (
    candidate_generation_service_pb2,
    candidate_generation_service_pb2_grpc,
    common_pb2,
    embedding_store_service_pb2,
    embedding_store_service_pb2_grpc,
    ranking_service_pb2,
    ranking_service_pb2_grpc,
)
from serving import vectors
from serving.errors import (
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    RecmeshError,
    Unavailable,
)
from serving.logs import outgoing_metadata
from serving.server import make_channel

log = logging.getLogger(__name__)

EMBEDDING_STORE = "embedding-store"
CANDIDATE_GENERATION = "candidate-generation"
RANKING = "ranking"

_CALLER_MISTAKES: dict[grpc.StatusCode, type[RecmeshError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
}


class UpstreamError(Unavailable):
    """A hop failed for a reason that is not the caller's: the gateway degrades, or answers 503."""

    def __init__(self, service: str, code: str, details: str) -> None:
        # The caller sees which stage and the status; upstream details (addresses, internals) go to the log.
        super().__init__(f"{service} unavailable ({code})")
        self.service, self.code, self.details = service, code, details


class UpstreamDeadline(DeadlineExceeded):
    """A hop ran out of time (gRPC DEADLINE_EXCEEDED, or no budget left to call it)."""

    def __init__(self, service: str) -> None:
        super().__init__(f"{service} deadline exceeded")
        self.service, self.code = service, "DEADLINE_EXCEEDED"


def _error(service: str, err: grpc.aio.AioRpcError) -> RecmeshError:
    code = err.code()
    details = err.details() or ""
    if code in _CALLER_MISTAKES:
        return _CALLER_MISTAKES[code](details or f"{service}: {code.name}")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return UpstreamDeadline(service)
    log.warning("%s call failed: %s: %s", service, code.name, details)
    return UpstreamError(service, code.name, details)


def _check_time(service: str, timeout_s: float) -> None:
    if timeout_s <= 0:
        raise UpstreamDeadline(service)


@dataclass(frozen=True)
class Embeddings:
    """Vectors of the known items among the requested ones (request order, one row per occurrence)."""

    model_version: str
    dim: int
    item_ids: list[str]
    vectors: np.ndarray  # (len(item_ids), dim) float32, read-only
    unknown_item_ids: list[str]
    degraded: bool = False
    degraded_reason: str = ""


@dataclass(frozen=True)
class Scored:
    """Items best first with their scores (similarity for candidates, probability for rankings)."""

    item_ids: list[str]
    scores: list[float]
    model_version: str
    unknown_item_ids: list[str]

    def __len__(self) -> int:
        return len(self.item_ids)


def _scored(items: Sequence[common_pb2.ItemScore], model_version: str, unknown: Sequence[str]) -> Scored:
    return Scored([c.item_id for c in items], [c.score for c in items], model_version, list(unknown))


class EmbeddingStoreClient:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = embedding_store_service_pb2_grpc.EmbeddingStoreServiceStub(channel)

    async def get_embeddings(self, item_ids: Sequence[str], model_version: str = "", *, timeout_s: float) -> Embeddings:
        _check_time(EMBEDDING_STORE, timeout_s)
        request = embedding_store_service_pb2.GetEmbeddingsRequest(item_ids=item_ids, model_version=model_version)
        try:
            reply = await self._stub.GetEmbeddings(request, timeout=timeout_s, metadata=outgoing_metadata())
        except grpc.aio.AioRpcError as err:
            raise _error(EMBEDDING_STORE, err) from err
        ids = list(reply.item_ids)
        dim = reply.dim
        matrix = vectors.unpack(reply.vectors, dim) if dim > 0 else np.zeros((0, 0), np.float32)
        if matrix.shape[0] != len(ids):
            raise UpstreamError(EMBEDDING_STORE, "INTERNAL", f"{len(ids)} ids but {matrix.shape[0]} vectors")
        return Embeddings(
            reply.model_version,
            dim,
            ids,
            matrix,
            list(reply.unknown_item_ids),
            reply.degraded,
            reply.degraded_reason,
        )


class CandidateGenerationClient:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = candidate_generation_service_pb2_grpc.CandidateGenerationServiceStub(channel)

    async def retrieve(
        self,
        *,
        query_vector: bytes = b"",
        item_ids: Sequence[str] = (),
        k: int,
        exclude_item_ids: Sequence[str] = (),
        model_version: str = "",
        timeout_s: float,
    ) -> Scored:
        """Nearest items for a packed float32 query vector, or for item ids (exactly one of the two)."""
        _check_time(CANDIDATE_GENERATION, timeout_s)
        request = candidate_generation_service_pb2.RetrieveCandidatesRequest(
            query_vector=query_vector,
            item_ids=item_ids,
            k=k,
            exclude_item_ids=exclude_item_ids,
            model_version=model_version,
        )
        try:
            reply = await self._stub.RetrieveCandidates(request, timeout=timeout_s, metadata=outgoing_metadata())
        except grpc.aio.AioRpcError as err:
            raise _error(CANDIDATE_GENERATION, err) from err
        scores = vectors.unpack(reply.scores, 1)[:, 0] if reply.scores else np.zeros(0, np.float32)
        if len(scores) != len(reply.item_ids):
            raise UpstreamError(CANDIDATE_GENERATION, "INTERNAL", f"{len(reply.item_ids)} ids but {len(scores)} scores")
        return Scored(list(reply.item_ids), scores.tolist(), reply.model_version, list(reply.unknown_item_ids))


class RankingClient:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = ranking_service_pb2_grpc.RankingServiceStub(channel)

    async def rank(
        self,
        session_item_ids: Sequence[str],
        candidate_ids: Sequence[str],
        candidate_scores: Sequence[float],
        k: int = 0,
        model_version: str = "",
        *,
        timeout_s: float,
    ) -> Scored:
        """Candidates (with their retrieval scores) ordered best first for the session; k = 0 returns all."""
        _check_time(RANKING, timeout_s)
        if len(candidate_ids) != len(candidate_scores):
            raise ValueError(f"{len(candidate_ids)} candidates but {len(candidate_scores)} scores")
        request = ranking_service_pb2.RankRequest(
            session_item_ids=session_item_ids,
            k=k,
            model_version=model_version,
            candidate_ids=candidate_ids,
            candidate_scores=vectors.pack(candidate_scores),
        )
        try:
            reply = await self._stub.Rank(request, timeout=timeout_s, metadata=outgoing_metadata())
        except grpc.aio.AioRpcError as err:
            raise _error(RANKING, err) from err
        return _scored(reply.items, reply.model_version, reply.unknown_item_ids)


class HealthClient:
    """grpc.health.v1 checks of the upstream services, for /readyz."""

    def __init__(self, channels: dict[str, grpc.aio.Channel]) -> None:
        self._stubs = {name: health_pb2_grpc.HealthStub(ch) for name, ch in channels.items()}

    async def check(self, timeout_s: float = 0.5) -> dict[str, str]:
        """{service: "SERVING" | what it said | why it could not be asked}, all asked concurrently."""

        async def one(stub: health_pb2_grpc.HealthStub) -> str:
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=timeout_s)
            except grpc.aio.AioRpcError as err:
                return f"{err.code().name}: {err.details()}"
            return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

        results = await asyncio.gather(*(one(stub) for stub in self._stubs.values()))
        return dict(zip(self._stubs, results, strict=True))


class Clients:
    """The gateway's backends: the three stage services and the Redis event store.

    Built from open channels (tests pass their own); :meth:`open` builds everything from the settings.
    """

    def __init__(
        self,
        embedding_store: grpc.aio.Channel,
        candidate_generation: grpc.aio.Channel,
        ranking: grpc.aio.Channel,
        events: EventStore,
    ) -> None:
        self.channels = {
            EMBEDDING_STORE: embedding_store,
            CANDIDATE_GENERATION: candidate_generation,
            RANKING: ranking,
        }
        self.embeddings = EmbeddingStoreClient(embedding_store)
        self.candidates = CandidateGenerationClient(candidate_generation)
        self.ranking = RankingClient(ranking)
        self.health = HealthClient(self.channels)
        self.events = events

    @classmethod
    def open(cls, settings: Settings) -> Clients:
        """Channels to the three services (round robin over comma-separated replicas) and the Redis client.

        Resolving replica host names blocks: call at startup."""
        mb = settings.max_message_mb
        return cls(
            make_channel(settings.embedding_store_addr, mb),
            make_channel(settings.candidate_generation_addr, mb),
            make_channel(settings.ranking_addr, mb),
            EventStore.from_url(
                settings.redis_url,
                timeout_ms=settings.redis_timeout_ms,
                weights=settings.event_weights,
                keep=settings.events_per_user,
                rate_limit=settings.event_rate_limit,
            ),
        )

    async def close(self) -> None:
        for channel in self.channels.values():
            await channel.close()
        await self.events.close()
