"""Every stage on its own, for callers that compose their own pipeline: the caller's input checked once, passed
to one stage service, its answer returned with the call's timings. No fallback here: a stage that is down is
UNAVAILABLE (503).

    stages = Stages(clients, versions, default_budget_ms=200)
    answer = await stages.similar_items("item42", k=10, model_version="")
    answer.result.item_ids, answer.timings
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from gateway import checks
from gateway.budget import Budget
from gateway.clients import Clients, Embeddings, Scored
from gateway.model_versions import ModelVersions
from serving import limits
from serving.errors import InvalidArgument, NotFound

T = TypeVar("T")


@dataclass(frozen=True)
class StageAnswer(Generic[T]):
    result: T
    timings: dict[str, float]  # milliseconds: the stage's and "total"


@dataclass(frozen=True)
class Stages:
    """GetItemEmbeddings, GetSimilarItems, FindCandidates and RankCandidates (and their REST routes)."""

    clients: Clients
    versions: ModelVersions
    default_budget_ms: int

    async def _call(
        self, stage: str, call: Callable[[float], Awaitable[T]], caller_deadline_s: float | None
    ) -> StageAnswer[T]:
        """``call(timeout_s)`` within the default budget (cut to the caller's deadline), timed as ``stage``."""
        budget = Budget.within(self.default_budget_ms, caller_deadline_s)
        with budget.stage(stage):
            result = await call(budget.remaining_s())
        return StageAnswer(result, budget.finish())

    async def item_embeddings(
        self, item_ids: Sequence[str], model_version: str, caller_deadline_s: float | None = None
    ) -> StageAnswer[Embeddings]:
        checks.count("item_ids", item_ids, limits.MAX_ITEMS, required=True)
        checks.ids("item_ids", item_ids)
        checks.model_version(model_version)
        store = self.clients.embeddings
        return await self._call(
            "embeddings",
            lambda timeout_s: store.get_embeddings(item_ids, model_version, timeout_s=timeout_s),
            caller_deadline_s,
        )

    async def similar_items(
        self, item_id: str, k: int, model_version: str, caller_deadline_s: float | None = None
    ) -> StageAnswer[Scored]:
        """Items nearest to ``item_id`` (never itself); NotFound when the item is not in the catalogue."""
        checks.identifier("item_id", item_id)
        checks.in_range("k", k, 1, limits.MAX_K)
        checks.model_version(model_version)
        retrieve = self.clients.candidates.retrieve
        answer = await self._call(
            "candidates",
            lambda timeout_s: retrieve(
                item_ids=[item_id], k=k, exclude_item_ids=[item_id], model_version=model_version, timeout_s=timeout_s
            ),
            caller_deadline_s,
        )
        if item_id in answer.result.unknown_item_ids:
            raise NotFound(f"item {item_id!r} is not in model version {answer.result.model_version}")
        return answer

    async def find_candidates(
        self,
        *,
        query_vector: np.ndarray | None,
        item_ids: Sequence[str],
        k: int,
        exclude_item_ids: Sequence[str],
        model_version: str,
        caller_deadline_s: float | None = None,
    ) -> StageAnswer[Scored]:
        """Nearest items for exactly one of a query vector and item ids (their session query)."""
        if (query_vector is not None) == bool(item_ids):
            which = "both were set" if item_ids else "neither was set"
            raise InvalidArgument(f"set exactly one of query_vector and item_ids; {which}", field="query_vector")
        checks.in_range("k", k, 1, limits.CANDIDATES_MAX_K)
        checks.count("item_ids", item_ids, limits.MAX_ITEMS)
        checks.count("exclude_item_ids", exclude_item_ids, limits.MAX_EXCLUDE)
        checks.ids("item_ids", item_ids)
        checks.ids("exclude_item_ids", exclude_item_ids)
        checks.model_version(model_version)
        checks.query_vector_size(query_vector)
        packed = b""
        if query_vector is not None:
            info = self.versions.get(model_version)
            packed = checks.packed_query(query_vector, info.dim, info.version)
            model_version = model_version or info.version
        retrieve = self.clients.candidates.retrieve
        return await self._call(
            "candidates",
            lambda timeout_s: retrieve(
                query_vector=packed,
                item_ids=item_ids,
                k=k,
                exclude_item_ids=exclude_item_ids,
                model_version=model_version,
                timeout_s=timeout_s,
            ),
            caller_deadline_s,
        )

    async def rank_candidates(
        self,
        session_item_ids: Sequence[str],
        candidate_ids: Sequence[str],
        candidate_scores: Sequence[float],
        k: int,
        model_version: str,
        caller_deadline_s: float | None = None,
    ) -> StageAnswer[Scored]:
        """Order a caller's candidates for a session; k = 0 returns them all."""
        checks.count("candidates", candidate_ids, limits.MAX_ITEMS, required=True)
        checks.in_range("k", k, 0, limits.RANK_MAX_K)
        checks.finite_scores(candidate_scores)
        checks.ids("candidates", candidate_ids)
        checks.session("session_item_ids", session_item_ids)
        checks.model_version(model_version)
        session = session_item_ids[-limits.MAX_SESSION :]
        ranking = self.clients.ranking
        return await self._call(
            "ranking",
            lambda timeout_s: ranking.rank(
                session, candidate_ids, candidate_scores, k, model_version, timeout_s=timeout_s
            ),
            caller_deadline_s,
        )
