"""Base features of (session, candidate) pairs, and their pairwise crosses.

One call computes the whole candidate list (vectorised over candidates); the serving ranker and the offline
evaluation call this same function, so served and offline rankings agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np

from recmesh.rank.tables import FeatureTables

BASE_FEATURES = (
    "retrieval_score",
    "log_retrieval_rank",
    "sim_session",
    "sim_last_item",
    "next_item_score",
    "log_popularity",
    "log_transitions_from_last",
    "transition_share_from_last",
    "log_transitions_from_recent",
    "log_covisits_from_recent",
    "log_session_length",
)
RECENT_ITEMS = 5  # how many of the latest session items feed the transition / co-visit features
RECENT_DECAY = 0.5  # weight of the j-th most recent item: RECENT_DECAY ** j


def feature_names() -> list[str]:
    crosses = [f"{a}*{b}" for a, b in combinations(BASE_FEATURES, 2)]
    return list(BASE_FEATURES) + crosses


@dataclass
class ItemSpace:
    """What the features need to know about every item."""

    vectors: np.ndarray  # (n, d) word2vec input vectors, L2-normalised: "what an item is"
    context_vectors: np.ndarray  # (n, d) output vectors, L2-normalised: "what comes next"; the ANN index space
    tables: FeatureTables


def base_features(
    space: ItemSpace,
    history: np.ndarray,
    candidates: np.ndarray,
    retrieval_scores: np.ndarray,
    session_unit: np.ndarray,
) -> np.ndarray:
    """(len(candidates), len(BASE_FEATURES)) float32. `history` is oldest first and non-empty."""
    tables = space.tables
    last = int(history[-1])
    cand_unit = space.vectors[candidates]
    from_last = tables.transitions.lookup(last, candidates)
    recent = history[::-1][:RECENT_ITEMS]
    trans_recent = np.zeros(candidates.size, dtype=np.float32)
    covisit_recent = np.zeros(candidates.size, dtype=np.float32)
    for j, item in enumerate(recent):
        weight = RECENT_DECAY**j
        trans_recent += weight * tables.transitions.lookup(int(item), candidates)
        covisit_recent += weight * tables.covisits.lookup(int(item), candidates)
    columns = (
        retrieval_scores,
        np.log1p(np.arange(candidates.size, dtype=np.float32)),
        cand_unit @ session_unit,
        cand_unit @ space.vectors[last],
        space.context_vectors[candidates] @ space.vectors[last],
        np.log1p(tables.popularity[candidates]),
        np.log1p(from_last),
        from_last / (tables.transition_out[last] + 1.0),
        np.log1p(trans_recent),
        np.log1p(covisit_recent),
        np.full(candidates.size, np.log1p(history.size), dtype=np.float32),
    )
    return np.column_stack(columns).astype(np.float32)


_PAIRS: tuple[np.ndarray, np.ndarray] = tuple(  # type: ignore[assignment]
    np.array(side) for side in zip(*combinations(range(len(BASE_FEATURES)), 2), strict=True)
)


def with_crosses(standardised: np.ndarray) -> np.ndarray:
    """Append every pairwise product of the (standardised) base features."""
    left, right = _PAIRS
    return np.hstack([standardised, standardised[:, left] * standardised[:, right]])
