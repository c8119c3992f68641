"""Typed wrappers over the three internal stubs: plain Python/numpy in, plain Python/numpy out.

Every call takes a deadline in seconds (what is left of the caller's budget); the current request id (the
:mod:`serving.logs` context variable) travels with it. A failed call raises the matching :mod:`serving.errors`
class (see :mod:`gateway.stage_client`).

Batching (:mod:`gateway.batching`, on by default, ``STAGE_BATCHING``): the calls to a stage that arrive while a
call to it is in flight go out together, in the stage's Batch* RPC, when it returns; each member keeps its own
deadline and outcome, and gets exactly the answer its single call would get. Off, every call is its own RPC.

    clients = Clients.open(settings)           # channels (round robin over replicas) + Redis
    found = await clients.candidates.retrieve(query_vector=q, k=200, timeout_s=0.15)
    await clients.close()
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.event_store import EventStore
from gateway.experiment_counts import ExperimentCounts, attribution_within
from gateway.experiments import Experiments
from gateway.settings import Settings
from gateway.stage_client import StageClient, UpstreamError
from recmesh import bundle
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
from serving.catalog_live import LiveCatalog
from serving.errors import InvalidArgument
from serving.server import make_channel
from serving.tls import TlsFiles

NO_CANDIDATES = "candidates must not be empty"  # the ranking service's answer to a RankRequest without candidates
EMBEDDING_STORE = "embedding-store"
CANDIDATE_GENERATION = "candidate-generation"
RANKING = "ranking"


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
class Explanation:
    """The ranker's logit for one item, split: intercept + sum(contributions) + other."""

    logit: float
    intercept: float
    contributions: list[tuple[str, float]]
    other: float


@dataclass(frozen=True)
class Scored:
    """Items best first with their scores (similarity for candidates, probability for rankings)."""

    item_ids: Sequence[str]
    scores: list[float]
    model_version: str
    unknown_item_ids: list[str]
    # candidates: which sources found each item (with provenance), the relaxed filter's fill, a stale catalogue
    source_names: list[str] = field(default_factory=list)
    found_by: bytes = b""
    filled: int = 0
    catalog_stale_reason: str = ""
    # candidates: the items' rows in model_version and the scores, packed as they came, for the ranking hop
    rows: bytes = b""
    packed_scores: bytes = b""
    # rankings: the logit's terms per item (with explain)
    explanations: list[Explanation] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.item_ids)


def _scored(items: Sequence[common_pb2.ItemScore], model_version: str, unknown: Sequence[str]) -> Scored:
    return Scored([c.item_id for c in items], [c.score for c in items], model_version, list(unknown))


def _embeddings(reply: embedding_store_service_pb2.GetEmbeddingsResponse) -> Embeddings:
    ids = list(reply.item_ids)
    dim = reply.dim
    matrix = vectors.unpack(reply.vectors, dim) if dim > 0 else np.zeros((0, 0), np.float32)
    if matrix.shape[0] != len(ids):
        raise UpstreamError(EMBEDDING_STORE, "INTERNAL", f"{len(ids)} ids but {matrix.shape[0]} vectors")
    return Embeddings(
        reply.model_version, dim, ids, matrix, list(reply.unknown_item_ids), reply.degraded, reply.degraded_reason
    )


def _candidates(reply: candidate_generation_service_pb2.RetrieveCandidatesResponse) -> Scored:
    scores = vectors.unpack(reply.scores, 1)[:, 0] if reply.scores else np.zeros(0, np.float32)
    if len(scores) != len(reply.item_ids):
        raise UpstreamError(CANDIDATE_GENERATION, "INTERNAL", f"{len(reply.item_ids)} ids but {len(scores)} scores")
    if reply.found_by and len(reply.found_by) != len(reply.item_ids):
        raise UpstreamError(
            CANDIDATE_GENERATION, "INTERNAL", f"{len(reply.item_ids)} ids but {len(reply.found_by)} sources"
        )
    if reply.rows and len(reply.rows) != vectors.ROW_DTYPE.itemsize * len(scores):
        raise UpstreamError(CANDIDATE_GENERATION, "INTERNAL", f"{len(scores)} scores but {len(reply.rows)} row bytes")
    return Scored(
        reply.item_ids,  # the message's own sequence: ids become str objects only where the answer reads them
        scores.tolist(),
        reply.model_version,
        list(reply.unknown_item_ids),
        list(reply.source_names),
        reply.found_by,
        reply.filled,
        reply.catalog_stale_reason,
        rows=reply.rows,
        packed_scores=reply.scores,
    )


def _ranked(reply: ranking_service_pb2.RankResponse) -> Scored:
    ranked = _scored(reply.items, reply.model_version, reply.unknown_item_ids)
    if not reply.explanations:
        return ranked
    explanations = [
        Explanation(e.logit, e.intercept, list(zip(e.features, e.contributions, strict=True)), e.other)
        for e in reply.explanations
    ]
    return Scored(
        ranked.item_ids, ranked.scores, ranked.model_version, ranked.unknown_item_ids, explanations=explanations
    )


class EmbeddingStoreClient:
    def __init__(self, channel: grpc.aio.Channel, batching: bool = True, max_in_flight: int = 1) -> None:
        stub = embedding_store_service_pb2_grpc.EmbeddingStoreServiceStub(channel)
        self.stage: StageClient[Any, Any, Embeddings] = StageClient.of(
            EMBEDDING_STORE, stub, "GetEmbeddings", embedding_store_service_pb2, _embeddings, batching, max_in_flight
        )

    async def get_embeddings(self, item_ids: Sequence[str], model_version: str = "", *, timeout_s: float) -> Embeddings:
        request = embedding_store_service_pb2.GetEmbeddingsRequest(item_ids=item_ids, model_version=model_version)
        return await self.stage.call(request, timeout_s)


class CandidateGenerationClient:
    def __init__(self, channel: grpc.aio.Channel, batching: bool = True, max_in_flight: int = 1) -> None:
        stub = candidate_generation_service_pb2_grpc.CandidateGenerationServiceStub(channel)
        self.stage: StageClient[Any, Any, Scored] = StageClient.of(
            CANDIDATE_GENERATION,
            stub,
            "RetrieveCandidates",
            candidate_generation_service_pb2,
            _candidates,
            batching,
            max_in_flight,
        )

    async def retrieve(
        self,
        *,
        query_vector: bytes = b"",
        item_ids: Sequence[str] = (),
        k: int,
        exclude_item_ids: Sequence[str] = (),
        model_version: str = "",
        timeout_s: float,
        sources: str = "",
        filter: str = "",
        fill_from_popular: bool = False,
        with_provenance: bool = False,
    ) -> Scored:
        """Nearest items for a packed float32 query vector, or for item ids (exactly one of the two); with
        `sources` (a recipe) the merged pool of those sources, item ids being the session; with `filter`, only
        items of the live catalogue that pass it (topped up from popular ones with `fill_from_popular`)."""
        request = candidate_generation_service_pb2.RetrieveCandidatesRequest(
            query_vector=query_vector,
            item_ids=item_ids,
            k=k,
            exclude_item_ids=exclude_item_ids,
            model_version=model_version,
            sources=sources,
            filter=filter,
            fill_from_popular=fill_from_popular,
            with_provenance=with_provenance,
        )
        return await self.stage.call(request, timeout_s)


class RankingClient:
    def __init__(self, channel: grpc.aio.Channel, batching: bool = True, max_in_flight: int = 1) -> None:
        stub = ranking_service_pb2_grpc.RankingServiceStub(channel)
        self.stage: StageClient[Any, Any, Scored] = StageClient.of(
            RANKING, stub, "Rank", ranking_service_pb2, _ranked, batching, max_in_flight
        )

    async def rank(
        self,
        session_item_ids: Sequence[str],
        candidate_ids: Sequence[str],
        candidate_scores: Sequence[float],
        k: int = 0,
        model_version: str = "",
        *,
        timeout_s: float,
        explain: bool = False,
    ) -> Scored:
        """Candidates (with their retrieval scores) ordered best first for the session; k = 0 returns all; with
        `explain`, each item's logit split into its terms."""
        if len(candidate_ids) != len(candidate_scores):
            raise ValueError(f"{len(candidate_ids)} candidates but {len(candidate_scores)} scores")
        request = ranking_service_pb2.RankRequest(
            session_item_ids=session_item_ids,
            k=k,
            model_version=model_version,
            candidate_ids=candidate_ids,
            candidate_scores=vectors.pack(candidate_scores),
            explain=explain,
        )
        return await self.stage.call(request, timeout_s)

    async def rank_candidates(
        self,
        session_item_ids: Sequence[str],
        candidates: Scored,
        k: int = 0,
        *,
        timeout_s: float,
        explain: bool = False,
    ) -> Scored:
        """Hop 2's answer ordered for the session, in its model version: by its rows and packed scores as they
        came when it has them (no id strings built, sent or looked up), else by ids."""
        if not candidates.rows:
            return await self.rank(
                session_item_ids,
                candidates.item_ids,
                candidates.scores,
                k,
                candidates.model_version,
                timeout_s=timeout_s,
                explain=explain,
            )
        request = ranking_service_pb2.RankRequest(
            session_item_ids=session_item_ids,
            k=k,
            model_version=candidates.model_version,
            candidate_rows=candidates.rows,
            candidate_scores=candidates.packed_scores,
            explain=explain,
        )
        deadline = asyncio.get_running_loop().time() + timeout_s
        try:
            return await self.stage.call(request, timeout_s)
        except InvalidArgument as e:
            if NO_CANDIDATES not in e.message:
                raise
        # A ranking replica older than candidate_rows ignored them and saw no candidates (a rolling upgrade): by ids
        return await self.rank(
            session_item_ids,
            candidates.item_ids,
            candidates.scores,
            k,
            candidates.model_version,
            timeout_s=deadline - asyncio.get_running_loop().time(),
            explain=explain,
        )


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


def batches_in_flight(target: str) -> int:
    """One batch in flight per replica: a comma-separated list names them; a DNS name (a Kubernetes Service)
    hides how many there are, so assume a few."""
    if "://" in target or target.startswith("dns:"):
        return 4
    return max(1, len([a for a in target.split(",") if a.strip()]))


class Clients:
    """The gateway's backends: the three stage services, the Redis event store and the live item catalogue.

    Built from open channels (tests pass their own); :meth:`open` builds everything from the settings.
    """

    def __init__(
        self,
        embedding_store: grpc.aio.Channel,
        candidate_generation: grpc.aio.Channel,
        ranking: grpc.aio.Channel,
        events: EventStore,
        *,
        batching: bool = True,
        batches_in_flight: dict[str, int] | None = None,
        catalog: LiveCatalog | None = None,
        available_versions: Callable[[], set[str]] | None = None,
    ) -> None:
        """`batches_in_flight`: per stage, how many batch calls may be in flight at once (default 1; one per
        replica keeps every replica busy)."""
        in_flight = batches_in_flight or {}
        self.channels = {
            EMBEDDING_STORE: embedding_store,
            CANDIDATE_GENERATION: candidate_generation,
            RANKING: ranking,
        }
        self.embeddings = EmbeddingStoreClient(embedding_store, batching, in_flight.get(EMBEDDING_STORE, 1))
        self.candidates = CandidateGenerationClient(
            candidate_generation, batching, in_flight.get(CANDIDATE_GENERATION, 1)
        )
        self.ranking = RankingClient(ranking, batching, in_flight.get(RANKING, 1))
        self.health = HealthClient(self.channels)
        self.events = events
        # the live item catalogue, in the same store as the events (default: the event store's clients)
        self.catalog = catalog or LiveCatalog(events.redis, writer=events.writer)
        # A/B experiments: the running one's config (followed from the store), impressions, and the attribution
        # of events to variants (only to experiments and variants the config names)
        self.experiments = Experiments.from_redis(events.redis, available_versions)
        self.experiment_counts = ExperimentCounts(events.writer)
        events.attribute = attribution_within(lambda: self.experiments.config)

    @classmethod
    def open(cls, settings: Settings) -> Clients:
        """Channels to the three services (round robin over comma-separated replicas) and the Redis client.

        Resolving replica host names blocks: call at startup."""
        mb = settings.max_message_mb
        addresses = {
            EMBEDDING_STORE: settings.embedding_store_addr,
            CANDIDATE_GENERATION: settings.candidate_generation_addr,
            RANKING: settings.ranking_addr,
        }
        tls = TlsFiles.from_settings(settings)  # mutual TLS to the stages when TLS_* are set (docs/security.md)
        return cls(
            make_channel(settings.embedding_store_addr, mb, tls),
            make_channel(settings.candidate_generation_addr, mb, tls),
            make_channel(settings.ranking_addr, mb, tls),
            EventStore.from_url(
                settings.redis_url,
                timeout_ms=settings.redis_timeout_ms,
                weights=settings.event_weights,
                keep=settings.events_per_user,
                rate_limit=settings.event_rate_limit,
            ),
            batching=settings.stage_batching,
            catalog=LiveCatalog.from_url(settings.redis_url, timeout_ms=settings.redis_timeout_ms),
            available_versions=lambda: set(bundle.list_versions(settings.models_dir)),
            batches_in_flight={
                stage: settings.batches_in_flight or batches_in_flight(addr) for stage, addr in addresses.items()
            },
        )

    async def close(self) -> None:
        for channel in self.channels.values():
            await channel.close()
        await self.events.close()
        await self.catalog.close()
