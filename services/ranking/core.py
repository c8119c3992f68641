"""Ranking without gRPC: order a candidate list for a session with the ranker of one model version.

    ranker = CandidateRanker(registry)
    ranked = await ranker.rank(session_item_ids=["a", "b"], candidate_ids=ids, retrieval_scores=scores, k=10)
    ranked.item_ids, ranked.scores, ranked.model_version, ranked.unknown_item_ids

The ordering is `Model.rank`, the function the offline pipeline calls, so the served order equals the offline
order for the same bundle, session and candidates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from recmesh.pipeline import Model
from recmesh.registry import ModelRegistry
from serving.errors import InvalidArgument
from serving.models import pinned_model

MAX_CANDIDATES = 1000  # more candidates than this is INVALID_ARGUMENT


@dataclass(frozen=True)
class Ranked:
    """Items best first with their ranker probabilities (retrieval scores when there was nothing to rank
    against), and what the answer is based on."""

    item_ids: list[str]
    scores: np.ndarray  # float32, one per item
    model_version: str
    unknown_item_ids: list[str]  # session ids, then candidate ids, not in the catalogue; no duplicates


def check_request(candidate_ids: Sequence[str], retrieval_scores: Sequence[float], k: int) -> None:
    """Validation that needs no model: candidate count, scores, k."""
    if not candidate_ids:
        raise InvalidArgument("candidates must not be empty")
    if len(candidate_ids) > MAX_CANDIDATES:
        raise InvalidArgument(f"at most {MAX_CANDIDATES} candidates, got {len(candidate_ids)}")
    if len(retrieval_scores) != len(candidate_ids):
        raise InvalidArgument(f"{len(candidate_ids)} candidates but {len(retrieval_scores)} retrieval scores")
    if k < 0:
        raise InvalidArgument(f"k must be >= 0 (0 = all), got {k}")


def rank_candidates(
    model: Model,
    session_item_ids: Sequence[str],
    candidate_ids: Sequence[str],
    retrieval_scores: Sequence[float],
    k: int = 0,
) -> Ranked:
    """Order `candidate_ids` (retrieval order, with their retrieval scores) for the session (oldest first, its
    most recent MAX_SESSION known items). Unknown ids are reported and skipped; a repeated candidate keeps its
    first occurrence. With no known session item there is nothing to rank against: the candidates come back in
    the given order with their retrieval scores. k = 0 returns all."""
    check_request(candidate_ids, retrieval_scores, k)
    scores = np.asarray(retrieval_scores, dtype=np.float32)
    if not np.isfinite(scores).all():
        raise InvalidArgument("candidate scores must be finite numbers")
    history, unknown = model.recent_known(session_item_ids)
    rows: list[int] = []
    keep: list[int] = []
    seen: set[int] = set()
    for position, item in enumerate(candidate_ids):
        row = model.index_of.get(item)
        if row is None:
            unknown.append(item)
        elif row not in seen:
            seen.add(row)
            rows.append(row)
            keep.append(position)
    candidates = np.array(rows, dtype=np.int64)
    ranked, probabilities = model.rank(history, candidates, scores[keep])
    if k:
        ranked, probabilities = ranked[:k], probabilities[:k]
    return Ranked(
        [model.item_ids[r] for r in ranked],
        np.asarray(probabilities, dtype=np.float32),
        model.version,
        list(dict.fromkeys(unknown)),
    )


class CandidateRanker:
    """Ranking with the model version each request pins (empty = the registry's current one)."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    async def model(self, version: str = "") -> Model:
        return await pinned_model(self.registry, version)

    async def rank(
        self,
        *,
        session_item_ids: Sequence[str],
        candidate_ids: Sequence[str],
        retrieval_scores: Sequence[float],
        k: int = 0,
        model_version: str = "",
    ) -> Ranked:
        check_request(candidate_ids, retrieval_scores, k)  # before a version load it may trigger
        model = await self.model(model_version)
        return rank_candidates(model, session_item_ids, candidate_ids, retrieval_scores, k)
