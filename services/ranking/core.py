"""Ranking without gRPC: order a candidate list for a session with the ranker of one model version.

Usage::

    ranker = CandidateRanker(registry)
    ranked = await ranker.rank(session_item_ids=["a", "b"], candidate_ids=ids, retrieval_scores=scores, k=10)
    ranked.item_ids, ranked.scores, ranked.model_version, ranked.unknown_item_ids
    # or the candidates as candidate generation's rows of the same version: no id strings on the way
    await ranker.rank(session_item_ids=s, candidate_rows=found_rows, retrieval_scores=scores, model_version=v)

The ordering is `Model.rank`, the function the offline pipeline calls, so the served order equals the offline
order for the same bundle, session and candidates. A request is checked once (:func:`validate_query`), before
the model version it pins is looked up (a request never loads one: recmesh.registry).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike

from recmesh.pipeline import Model
from recmesh.rank.explain import Explanation, explain
from recmesh.rank.features import features
from recmesh.registry import ModelRegistry
from serving import limits
from serving.errors import InvalidArgument
from serving.vectors import ROW_DTYPE, unpack_item_rows


@dataclass(frozen=True)
class RankQuery:
    """A request that passed the checks needing no model: the candidate cap, one finite score each, k in range."""

    session_item_ids: Sequence[str]
    candidate_ids: Sequence[str]
    retrieval_scores: np.ndarray  # float32, one per candidate (id or row)
    k: int  # 0 = all
    explain: bool = False
    candidate_rows: bytes = b""  # instead of candidate_ids: rows of the pinned version (serving.vectors)


@dataclass(frozen=True)
class Ranked:
    """Items best first with their ranker probabilities (retrieval scores when there was nothing to rank
    against), and what the answer is based on."""

    item_ids: list[str]
    scores: np.ndarray  # float32, one per item
    model_version: str
    unknown_item_ids: list[str]  # session ids, then candidate ids, not in the catalogue; no duplicates
    explanations: list[Explanation] = field(default_factory=list)  # with explain: one per item, same order


def validate_query(
    *,
    session_item_ids: Sequence[str],
    candidate_ids: Sequence[str] = (),
    retrieval_scores: ArrayLike,
    k: int = 0,
    explain: bool = False,
    candidate_rows: bytes = b"",
    model_version: str = "",
) -> RankQuery:
    """At most MAX_SESSION_ITEMS session ids, 1 to MAX_ITEMS candidates (ids, or the rows of a named model version,
    never both), one finite retrieval score each, 0 <= k <= RANK_MAX_K (0 = all). Anything else is InvalidArgument
    naming the range. Whether the rows are in the version's item table is checked once it is leased."""
    if len(session_item_ids) > limits.MAX_SESSION_ITEMS:
        raise InvalidArgument(
            f"at most {limits.MAX_SESSION_ITEMS} session_item_ids, got {len(session_item_ids)}",
            field="session_item_ids",
        )
    if candidate_rows and candidate_ids:
        raise InvalidArgument("set candidate_ids or candidate_rows, not both", field="candidate_rows")
    if candidate_rows and not model_version:
        raise InvalidArgument(
            "candidate_rows need the model_version whose item table they index", field="model_version"
        )
    if len(candidate_rows) % ROW_DTYPE.itemsize:
        raise InvalidArgument(
            f"candidate_rows is {len(candidate_rows)} bytes, not a whole number of little-endian int32 rows",
            field="candidate_rows",
        )
    n = len(candidate_rows) // ROW_DTYPE.itemsize if candidate_rows else len(candidate_ids)
    if not n:
        raise InvalidArgument("candidates must not be empty", field="candidates")
    if n > limits.MAX_ITEMS:
        raise InvalidArgument(f"at most {limits.MAX_ITEMS} candidates, got {n}", field="candidates")
    scores = np.asarray(retrieval_scores, dtype=np.float32).reshape(-1)
    if scores.size != n:
        raise InvalidArgument(
            f"{n} candidates but {scores.size} retrieval scores (one per candidate)",
            field="candidates",
        )
    if not 0 <= k <= limits.RANK_MAX_K:
        raise InvalidArgument(f"k must be >= 0 and <= {limits.RANK_MAX_K} (0 = all), got {k}", field="k")
    if not np.isfinite(scores).all():
        bad = int(np.flatnonzero(~np.isfinite(scores))[0])
        raise InvalidArgument("candidate scores must be finite numbers", field=f"candidates[{bad}].score")
    return RankQuery(session_item_ids, candidate_ids, scores, k, explain, candidate_rows)


def rank_candidates(model: Model, query: RankQuery) -> Ranked:
    """Order the candidates (retrieval order, with their retrieval scores) for the session (oldest first, its
    most recent MAX_SESSION known items). Unknown ids are reported and skipped; a repeated candidate keeps its
    first occurrence. With no known session item there is nothing to rank against: the candidates come back in
    the given order with their retrieval scores. k = 0 returns all."""
    history, unknown = model.recent_known(query.session_item_ids)
    if query.candidate_rows:
        candidates, scores = _first_of_each(
            unpack_item_rows(query.candidate_rows, model.n_items, "candidate_rows"), query.retrieval_scores
        )
        return _ranked(model, query, history, candidates, scores, unknown)
    found = list(map(model.index_of.get, query.candidate_ids))
    if None not in found and len(set(found)) == len(found):
        # The usual case (candidates straight from retrieval): all known, none repeated, all kept.
        candidates, scores = np.array(found, dtype=np.int64), query.retrieval_scores
    else:
        rows: list[int] = []
        keep: list[int] = []
        seen: set[int] = set()
        for position, (item, row) in enumerate(zip(query.candidate_ids, found, strict=True)):
            if row is None:
                unknown.append(item)
            elif row not in seen:
                seen.add(row)
                rows.append(row)
                keep.append(position)
        candidates, scores = np.array(rows, dtype=np.int64), query.retrieval_scores[keep]
    return _ranked(model, query, history, candidates, scores, unknown)


def _first_of_each(rows: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows without repeats (each keeps its first position) and their scores: as the ids path keeps them."""
    _, first = np.unique(rows, return_index=True)
    if first.size == rows.size:
        return rows, scores
    keep = np.sort(first)
    return rows[keep], scores[keep]


def _ranked(
    model: Model,
    query: RankQuery,
    history: np.ndarray,
    candidates: np.ndarray,
    scores: np.ndarray,
    unknown: list[str],
) -> Ranked:
    ranked, probabilities = model.rank(history, candidates, scores)
    if not np.isfinite(probabilities).all():  # only scores near float32's limit can do it: never send inf or NaN
        raise InvalidArgument(
            "candidate scores are too large to rank (the ranker's scores overflow)", field="candidates"
        )
    if query.k:
        ranked, probabilities = ranked[: query.k], probabilities[: query.k]
    explanations = []
    if query.explain and history.size and ranked.size:
        explanations = _explain(model, history, candidates, scores, ranked)
    return Ranked(
        model.ids_of(ranked),
        np.asarray(probabilities, dtype=np.float32),
        model.version,
        list(dict.fromkeys(unknown)),
        explanations,
    )


EXPLAINED_TERMS = 5


def _explain(
    model: Model, history: np.ndarray, candidates: np.ndarray, scores: np.ndarray, ranked: np.ndarray
) -> list[Explanation]:
    """The ranker's terms for the ranked rows, from the base features Model.rank computed: over the candidates
    in retrieval order (a feature may read the retrieval rank), then taken in ranked order."""
    base = features(model.space, history, candidates, scores, model.query(history), model.ranker.names)
    position = {row: i for i, row in enumerate(candidates.tolist())}
    return explain(model.ranker, base[[position[row] for row in ranked.tolist()]], top=EXPLAINED_TERMS)


class CandidateRanker:
    """Ranking with the model version each request pins (empty = the registry's current one)."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    async def rank(
        self,
        *,
        session_item_ids: Sequence[str],
        candidate_ids: Sequence[str] = (),
        retrieval_scores: ArrayLike,
        k: int = 0,
        model_version: str = "",
        explain: bool = False,
        candidate_rows: bytes = b"",
    ) -> Ranked:
        query = validate_query(
            session_item_ids=session_item_ids,
            candidate_ids=candidate_ids,
            retrieval_scores=retrieval_scores,
            k=k,
            explain=explain,
            candidate_rows=candidate_rows,
            model_version=model_version,
        )
        # A version the registry does not hold is NOT_FOUND (serving.errors); the lease keeps it while in use.
        async with self.registry.lease(model_version) as model:
            return rank_candidates(model, query)
