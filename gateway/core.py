"""The gateway's logic, shared by REST and gRPC: one recommendation in at most three hops, and every stage on its
own. No web framework and no grpc servicer here: inputs are plain values, outputs dataclasses, errors from
:mod:`serving.errors` (which the adapters map to HTTP statuses and gRPC codes in one place each).

A recommendation (ARCHITECTURE §1):
  0. session = the visitor's recorded events (one Redis read, oldest first) + the request's items, trimmed to
     the most recent MAX_SESSION; each item weighs what its event type weighs (EVENT_WEIGHTS; request items
     count as views);
  1. GetEmbeddings(session) -> vectors and the model version, pinned for the next hops;
  2. query = session_query(vectors, manifest decay, type weights); RetrieveCandidates(query, exclude = seen +
     exclusions), seen = the whole stored history + the session (unless include_seen);
  3. Rank(session, candidates) -> the answer's order.
Degrade, don't fail: embedding store down -> candidate generation builds the query from item ids; candidate
generation down -> popular items; ranking down or out of budget -> retrieval order. Each degraded answer lists
what was skipped and why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from gateway.budget import Budget
from gateway.clients import Clients, Embeddings, Scored, UpstreamDeadline, UpstreamError
from gateway.events import MAX_ID_LEN, Event, EventStoreUnavailable, History, now_ms, validate
from gateway.popular import BundleInfo, Catalog
from recmesh.pipeline import MAX_SESSION, session_query
from serving import vectors
from serving.errors import InvalidArgument, NotFound, Unavailable
from serving.metrics import DEGRADED

log = logging.getLogger(__name__)

# Defaults and caps; the REST schemas and the proto comments document the same numbers.
DEFAULT_K = 10
MAX_K = 200
MAX_CANDIDATES = 1000
MAX_EXCLUDE = 1000
MAX_BUDGET_MS = 10_000
MAX_ITEMS = 1000  # item ids per embeddings / candidates / rank call
DEFAULT_FIND_K = 100
MAX_EVENTS = 500  # events per REST batch; a gRPC RecordEvents stream allows grpc_api.MAX_STREAM_EVENTS
EMPTY_SESSION = "empty session: send session_item_ids, a user_id with events, or options.query_vector"

_LATE = (UpstreamError, UpstreamDeadline)  # a hop that failed for reasons that are not the caller's


@dataclass(frozen=True)
class RecommendOptions:
    skip_ranking: bool = False
    candidate_count: int | None = None  # None = the model version's own params.candidates
    exclude_item_ids: Sequence[str] = ()
    budget_ms: int | None = None  # None = the gateway's default
    query_vector: np.ndarray | None = None  # (dim,) float32; replaces the session's query
    include_seen: bool = False


@dataclass(frozen=True)
class RecommendRequest:
    session_item_ids: Sequence[str] = ()
    user_id: str = ""
    k: int = DEFAULT_K
    options: RecommendOptions = field(default_factory=RecommendOptions)
    model_version: str = ""


@dataclass(frozen=True)
class Degradation:
    stage: str
    reason: str


@dataclass
class Recommendation:
    item_ids: list[str]
    scores: list[float]
    model_version: str
    degradations: list[Degradation]
    unknown_item_ids: list[str]
    session_items_dropped: int
    timings: dict[str, float]
    recommendation_id: str

    @property
    def degraded(self) -> bool:
        return bool(self.degradations)


@dataclass(frozen=True)
class RecordedEvents:
    stored: int
    known: list[bool]  # per event, in request order
    unknown_item_ids: list[str]  # distinct, first occurrence order


def _dedup(items: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _known_weights(session: list[str], weights: list[float], found: Embeddings) -> np.ndarray | None:
    """The weights of the session items the embedding store knew (its rows are the known items in session
    order, one per occurrence); None when they are all equal (then the query is the offline one, bit for bit)."""
    if len(set(weights)) <= 1:
        return None
    known: list[float] = []
    rows = found.item_ids
    for item, weight in zip(session, weights, strict=True):
        if len(known) < len(rows) and item == rows[len(known)]:
            known.append(weight)
    if len(known) != len(rows):  # not the session's known subsequence: weigh nothing rather than misalign
        log.warning("embedding rows do not follow the session; event weights ignored")
        return None
    return np.asarray(known, dtype=np.float32)


def _check_ids(name: str, items: Sequence[str]) -> None:
    for i, item in enumerate(items):
        if not item:
            raise InvalidArgument(f"{name}[{i}] is empty")
        if len(item) > MAX_ID_LEN:
            raise InvalidArgument(f"{name}[{i}] is {len(item)} characters long, at most {MAX_ID_LEN}")


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise InvalidArgument(f"{name} must be between {low} and {high}, got {value}")


def _check_vector(vector: np.ndarray, dim: int | None, version: str = "") -> bytes:
    """The packed float32 bytes of a query vector; InvalidArgument unless it is 1-D, finite, of `dim` values."""
    if vector.ndim != 1 or vector.size == 0:
        raise InvalidArgument(f"query_vector must be a non-empty list of floats, got shape {vector.shape}")
    if dim is not None and vector.size != dim:
        raise InvalidArgument(f"query_vector has {vector.size} dims, model {version} expects {dim}")
    if not np.isfinite(vector).all():
        raise InvalidArgument("query_vector contains NaN or infinite values")
    return vectors.pack(vector)


class _Plan:
    """The state of one recommendation while its hops run."""

    def __init__(self, request: RecommendRequest, budget: Budget) -> None:
        self.request = request
        self.budget = budget
        self.degradations: list[Degradation] = []
        self.unknown: list[str] = []
        self.version = request.model_version

    def degrade(self, stage: str, kind: str, consequence: str, code: str = "") -> None:
        reason = f"{kind} ({code}): {consequence}" if code else f"{kind}: {consequence}"
        self.degradations.append(Degradation(stage, reason))
        DEGRADED.labels("gateway", kind).inc()
        log.debug("degraded", extra={"stage": stage, "reason": reason})  # counted in recmesh_degraded

    def version_was_pinned_here(self, err: Exception) -> bool:
        """A NotFound for a version the caller did not ask for is the gateway's pin failing, not a caller error."""
        return isinstance(err, NotFound) and not self.request.model_version


class GatewayCore:
    """Orchestrates the three stage services and the event store for REST and gRPC alike."""

    def __init__(self, clients: Clients, catalog: Catalog, default_budget_ms: int = 200) -> None:
        self.clients = clients
        self.catalog = catalog
        self.default_budget_ms = default_budget_ms

    # ------------------------------------------------------------------------------------------- background
    async def follow_published_version(self, every_s: float = 1.0) -> None:
        """Keep the catalogue's current version on Redis' published pointer (run as a task; cancel to stop).
        A Redis blip keeps the last value."""
        while True:
            with contextlib.suppress(EventStoreUnavailable):
                self.catalog.set_published(await self.clients.events.published_version())
            await asyncio.sleep(every_s)

    # ------------------------------------------------------------------------------------------------ budget
    def budget(self, budget_ms: int | None = None, caller_deadline_s: float | None = None) -> Budget:
        """A budget of ``budget_ms`` (None = the default; 1..10000), cut to the caller's own deadline."""
        if budget_ms is None:
            budget_ms = self.default_budget_ms
        _check_range("budget_ms", budget_ms, 1, MAX_BUDGET_MS)
        ms = float(budget_ms)
        if caller_deadline_s is not None:
            ms = max(0.0, min(ms, caller_deadline_s * 1000.0))
        return Budget(ms)

    # --------------------------------------------------------------------------------------------- recommend
    async def recommend(self, request: RecommendRequest, budget: Budget, request_id: str | None) -> Recommendation:
        options = request.options
        _check_range("k", request.k, 1, MAX_K)
        if options.candidate_count is not None:
            _check_range("candidate_count", options.candidate_count, 1, MAX_CANDIDATES)
        if len(options.exclude_item_ids) > MAX_EXCLUDE:
            raise InvalidArgument(f"at most {MAX_EXCLUDE} exclude_item_ids, got {len(options.exclude_item_ids)}")
        _check_ids("session_item_ids", request.session_item_ids)
        _check_ids("exclude_item_ids", options.exclude_item_ids)
        if len(request.user_id) > MAX_ID_LEN:
            raise InvalidArgument(f"user_id is {len(request.user_id)} characters long, at most {MAX_ID_LEN}")
        query_bytes, query_version = b"", ""
        if options.query_vector is not None:
            # Bring your own vector: check it against the model it will be used with, before any hop.
            info = self.catalog.get(request.model_version)
            query_bytes, query_version = _check_vector(options.query_vector, info.dim, info.version), info.version
        elif not request.session_item_ids and not request.user_id:
            raise InvalidArgument(EMPTY_SESSION)

        plan = _Plan(request, budget)
        history = await self._history(plan) if request.user_id else History([], [])
        session = history.item_ids + list(request.session_item_ids)
        view = self.clients.events.weights["view"]  # the request's own items count as views
        weights = history.weights + [view] * len(request.session_item_ids)
        dropped = max(0, len(session) - MAX_SESSION)
        session, weights = session[-MAX_SESSION:], weights[-MAX_SESSION:]
        # Seen = the visitor's whole stored history (bought or viewed), not only the most recent MAX_SESSION.
        seen = [] if options.include_seen else [*history.item_ids, *session]
        exclude = _dedup([*seen, *options.exclude_item_ids])

        candidates: Scored | None = None
        if query_bytes:
            plan.version = query_version
            n_candidates = self._candidate_count(plan, options.candidate_count)
            candidates = await self._candidates(plan, exclude, n_candidates, request_id, query_vector=query_bytes)
        elif session:
            embeddings = await self._embeddings(plan, session, request_id)
            n_candidates = self._candidate_count(plan, options.candidate_count)
            if embeddings is None:  # store down or late: candidate generation queries by item ids instead
                candidates = await self._candidates(plan, exclude, n_candidates, request_id, item_ids=session)
            elif embeddings.item_ids:
                decay = self._manifest(embeddings.model_version).query_decay
                query = session_query(embeddings.vectors, decay, _known_weights(session, weights, embeddings))
                candidates = await self._candidates(
                    plan, exclude, n_candidates, request_id, query_vector=vectors.pack(query)
                )

        if candidates is None:  # nothing to query with, or no candidates: the most popular items
            item_ids, scores = await self._popular(plan, request.k, set(exclude))
        else:
            if candidates.item_ids and not options.skip_ranking:
                candidates = await self._rank(plan, session, candidates, request_id) or candidates
            item_ids, scores = candidates.item_ids[: request.k], candidates.scores[: request.k]

        return Recommendation(
            item_ids=item_ids,
            scores=scores,
            model_version=plan.version or self.catalog.current_version(),
            degradations=plan.degradations,
            unknown_item_ids=_dedup(plan.unknown),
            session_items_dropped=dropped,
            timings=budget.finish(),
            recommendation_id=uuid.uuid4().hex,
        )

    async def _history(self, plan: _Plan) -> History:
        with plan.budget.stage("events"):
            try:
                return await self.clients.events.history(plan.request.user_id, plan.budget.remaining_s())
            except EventStoreUnavailable:
                plan.degrade("events", "redis unavailable", "visitor history not read")
                return History([], [])

    async def _embeddings(self, plan: _Plan, session: list[str], request_id: str | None) -> Embeddings | None:
        """Hop 1. None when the store is down or late (the plan is marked degraded)."""
        budget = plan.budget
        if budget.exhausted:
            plan.degrade("embeddings", "budget exhausted", "query built by candidate-generation")
            return None
        with budget.stage("embeddings"):
            try:
                found = await self.clients.embeddings.get_embeddings(
                    session, plan.version, timeout_s=budget.remaining_s(), request_id=request_id
                )
            except _LATE as e:
                plan.degrade("embeddings", "embedding-store unavailable", "query built by candidate-generation", e.code)
                return None
        plan.version = found.model_version  # pinned for hops 2 and 3
        plan.unknown.extend(found.unknown_item_ids)
        if found.degraded:
            plan.degrade("embeddings", "embedding-store degraded", found.degraded_reason or "fallback tier")
        return found

    async def _candidates(
        self,
        plan: _Plan,
        exclude: list[str],
        k: int,
        request_id: str | None,
        *,
        query_vector: bytes = b"",
        item_ids: Sequence[str] = (),
    ) -> Scored | None:
        """Hop 2, with the exclusions applied. None when there are no candidates to rank (popular items next)."""
        budget = plan.budget
        if budget.exhausted:
            plan.degrade("candidates", "budget exhausted", "popular items served")
            return None
        with budget.stage("candidates"):
            try:
                found = await self.clients.candidates.retrieve(
                    query_vector=query_vector,
                    item_ids=item_ids,
                    k=k,
                    exclude_item_ids=exclude[:MAX_EXCLUDE],
                    model_version=plan.version,
                    timeout_s=budget.remaining_s(),
                    request_id=request_id,
                )
            except _LATE as e:
                plan.degrade("candidates", "candidate-generation unavailable", "popular items served", e.code)
                return None
            except NotFound as e:
                if item_ids:  # query by item ids and none is known: popular items, as for an unknown session
                    plan.unknown.extend(item_ids)
                    return None
                if not plan.version_was_pinned_here(e):
                    raise
                plan.degrade("candidates", "candidate-generation unavailable", f"{e.message}; popular items served")
                return None
        plan.version = found.model_version
        if item_ids:
            plan.unknown.extend(found.unknown_item_ids)
            if not found.item_ids:
                return None  # none of the session is known
        if len(exclude) > MAX_EXCLUDE:  # only the first MAX_EXCLUDE went upstream: filter the rest here
            excluded = set(exclude)
            keep = [i for i, item in enumerate(found.item_ids) if item not in excluded]
            found = Scored(
                [found.item_ids[i] for i in keep],
                [found.scores[i] for i in keep],
                found.model_version,
                found.unknown_item_ids,
            )
        return found

    async def _rank(self, plan: _Plan, session: list[str], candidates: Scored, request_id: str | None) -> Scored | None:
        """Hop 3. None when ranking is down, late or out of budget (retrieval order is served)."""
        budget = plan.budget
        if budget.exhausted:
            plan.degrade("ranking", "budget exhausted", "retrieval order served")
            return None
        with budget.stage("ranking"):
            try:
                ranked = await self.clients.ranking.rank(
                    session,
                    candidates.item_ids,
                    candidates.scores,
                    plan.request.k,
                    plan.version,
                    timeout_s=budget.remaining_s(),
                    request_id=request_id,
                )
            except _LATE as e:
                plan.degrade("ranking", "ranking unavailable", "retrieval order served", e.code)
                return None
            except NotFound as e:
                if not plan.version_was_pinned_here(e):
                    raise
                plan.degrade("ranking", "ranking unavailable", f"{e.message}; retrieval order served")
                return None
        if not plan.unknown:
            session_ids = set(session)
            plan.unknown.extend(i for i in ranked.unknown_item_ids if i in session_ids)
        return ranked

    async def _popular(self, plan: _Plan, k: int, exclude: set[str]) -> tuple[list[str], list[float]]:
        with plan.budget.stage("popular"):
            info = self.catalog.get(plan.version)
            plan.version = info.version
            items = await info.items()
            return items.popular(k, exclude)

    def _candidate_count(self, plan: _Plan, asked: int | None) -> int:
        """Candidates to retrieve: what the caller asked for, else what the pinned version's ranker was trained to
        order (its manifest's params.candidates); never fewer than k."""
        if asked is None:
            asked = min(self._manifest(plan.version).default_candidates, MAX_CANDIDATES)
        return max(asked, plan.request.k)

    def _manifest(self, version: str) -> BundleInfo:
        try:
            return self.catalog.get(version)
        except NotFound as e:
            raise Unavailable(f"model version {version!r} served upstream is not in the gateway's models_dir") from e

    # ------------------------------------------------------------------------------------- stages on their own
    async def item_embeddings(
        self, item_ids: Sequence[str], model_version: str, budget: Budget, request_id: str | None
    ) -> Embeddings:
        if not item_ids:
            raise InvalidArgument("item_ids must not be empty")
        if len(item_ids) > MAX_ITEMS:
            raise InvalidArgument(f"at most {MAX_ITEMS} item_ids, got {len(item_ids)}")
        _check_ids("item_ids", item_ids)
        with budget.stage("embeddings"):
            found = await self.clients.embeddings.get_embeddings(
                item_ids, model_version, timeout_s=budget.remaining_s(), request_id=request_id
            )
        budget.finish()
        return found

    async def similar_items(
        self, item_id: str, k: int, model_version: str, budget: Budget, request_id: str | None
    ) -> Scored:
        """Items nearest to ``item_id`` (never itself); NotFound when the item is not in the catalogue."""
        _check_ids("item_id", [item_id])
        _check_range("k", k, 1, MAX_K)
        with budget.stage("candidates"):
            found = await self.clients.candidates.retrieve(
                item_ids=[item_id],
                k=k,
                exclude_item_ids=[item_id],
                model_version=model_version,
                timeout_s=budget.remaining_s(),
                request_id=request_id,
            )
        if item_id in found.unknown_item_ids:
            raise NotFound(f"item {item_id!r} is not in model version {found.model_version}")
        budget.finish()
        return found

    async def find_candidates(
        self,
        *,
        query_vector: np.ndarray | None,
        item_ids: Sequence[str],
        k: int,
        exclude_item_ids: Sequence[str],
        model_version: str,
        budget: Budget,
        request_id: str | None,
    ) -> Scored:
        if (query_vector is not None) == bool(item_ids):
            which = "both were set" if item_ids else "neither was set"
            raise InvalidArgument(f"set exactly one of query_vector and item_ids; {which}")
        _check_range("k", k, 1, MAX_CANDIDATES)
        if len(item_ids) > MAX_ITEMS:
            raise InvalidArgument(f"at most {MAX_ITEMS} item_ids, got {len(item_ids)}")
        if len(exclude_item_ids) > MAX_EXCLUDE:
            raise InvalidArgument(f"at most {MAX_EXCLUDE} exclude_item_ids, got {len(exclude_item_ids)}")
        _check_ids("item_ids", item_ids)
        packed = b""
        if query_vector is not None:
            info = self.catalog.get(model_version)
            packed = _check_vector(query_vector, info.dim, info.version)
            model_version = model_version or info.version
        with budget.stage("candidates"):
            found = await self.clients.candidates.retrieve(
                query_vector=packed,
                item_ids=item_ids,
                k=k,
                exclude_item_ids=exclude_item_ids,
                model_version=model_version,
                timeout_s=budget.remaining_s(),
                request_id=request_id,
            )
        budget.finish()
        return found

    async def rank_candidates(
        self,
        session_item_ids: Sequence[str],
        candidate_ids: Sequence[str],
        candidate_scores: Sequence[float],
        k: int,
        model_version: str,
        budget: Budget,
        request_id: str | None,
    ) -> Scored:
        """Order a caller's candidates for a session; k = 0 returns them all."""
        if not candidate_ids:
            raise InvalidArgument("candidates must not be empty")
        if len(candidate_ids) > MAX_ITEMS:
            raise InvalidArgument(f"at most {MAX_ITEMS} candidates, got {len(candidate_ids)}")
        if k < 0:
            raise InvalidArgument(f"k must be >= 0 (0 = all), got {k}")
        if not all(math.isfinite(s) for s in candidate_scores):
            raise InvalidArgument("candidate scores must be finite numbers")
        _check_ids("candidates", candidate_ids)
        _check_ids("session_item_ids", session_item_ids)
        with budget.stage("ranking"):
            ranked = await self.clients.ranking.rank(
                session_item_ids[-MAX_SESSION:],
                candidate_ids,
                candidate_scores,
                k,
                model_version,
                timeout_s=budget.remaining_s(),
                request_id=request_id,
            )
        budget.finish()
        return ranked

    # ---------------------------------------------------------------------------------------------- events
    async def record_events(
        self, events: Sequence[Event], budget: Budget | None = None, limit: int = MAX_EVENTS
    ) -> RecordedEvents:
        """Validate every event (one bad event stores nothing), store them all or none in one round trip
        (RateLimited, nothing stored, when a visitor is over the per-second limit), and report which items the
        current model does not know (stored all the same: they count once a model knows them)."""
        if not events:
            raise InvalidArgument("no events to record")
        if len(events) > limit:
            raise InvalidArgument(f"at most {limit} events per call, got {len(events)}; nothing was stored")
        checked = []
        received_ms = now_ms()
        for i, event in enumerate(events):
            try:
                checked.append(validate(event, received_ms))
            except InvalidArgument as e:
                where = "" if len(events) == 1 else f"events[{i}]: "
                raise InvalidArgument(f"{where}{e.message}; nothing was stored") from e
        budget = budget or Budget(self.default_budget_ms)
        with budget.stage("events"):
            await self.clients.events.record(checked)
        known = await self.catalog.known([e.item_id for e in checked])
        budget.finish()
        unknown = _dedup([e.item_id for e, ok in zip(checked, known, strict=True) if not ok])
        return RecordedEvents(len(checked), known, unknown)

    # ---------------------------------------------------------------------------------------------- health
    async def readiness(self, timeout_s: float = 0.5) -> dict[str, str]:
        """What each backend says: "SERVING" for the three services and "PONG" for Redis when all is well."""
        statuses, redis = await asyncio.gather(
            self.clients.health.check(timeout_s), self.clients.events.ping(timeout_s)
        )
        return {**statuses, "redis": redis}


def ready(statuses: dict[str, str]) -> bool:
    return all(s in ("SERVING", "PONG") for s in statuses.values())
