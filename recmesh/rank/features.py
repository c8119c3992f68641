"""Base features of (session, candidate) pairs, and their pairwise crosses.

One call computes the whole candidate list (vectorised over candidates); the serving ranker and the offline
evaluation call this same function, so served and offline rankings agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np

from recmesh.rank.tables import FeatureTables, lookup

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


# RECENT_DECAY ** j as float32: what the float32 counts are multiplied by (a Python float times a float32 array
# is computed in float32)
_RECENT_WEIGHTS = np.array([RECENT_DECAY**j for j in range(RECENT_ITEMS)], dtype=np.float32)


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
    last_unit = space.vectors[last]
    recent = history[::-1][:RECENT_ITEMS]  # most recent first: recent[0] is the last item
    # counts[j] = (transitions, co-visits) from the j-th most recent item to each candidate, in one lookup.
    cells = [(table, item) for item in recent.tolist() for table in (tables.transitions, tables.covisits)]
    counts = lookup(cells, candidates).reshape(recent.size, 2, candidates.size)
    from_last = counts[0, 0]
    # Weighted sums over the recent items, accumulated from zero item by item in float32 (accumulate is
    # sequential): the same additions, in the same order, as a loop of `total += weight * counts`.
    terms = np.zeros((1 + recent.size, 2, candidates.size), dtype=np.float32)
    np.multiply(_RECENT_WEIGHTS[: recent.size, None, None], counts, out=terms[1:])
    trans_recent, covisit_recent = np.add.accumulate(terms, axis=0)[-1]
    columns = (
        retrieval_scores,
        np.log1p(np.arange(candidates.size, dtype=np.float32)),
        cand_unit @ session_unit,
        cand_unit @ last_unit,
        space.context_vectors[candidates] @ last_unit,
        np.log1p(tables.popularity[candidates]),
        np.log1p(from_last),
        from_last / (tables.transition_out[last] + 1.0),
        np.log1p(trans_recent),
        np.log1p(covisit_recent),
        np.full(candidates.size, np.log1p(history.size), dtype=np.float32),
    )
    # Filled column by column: what np.column_stack(columns).astype(np.float32) gives, without its copies.
    features = np.empty((candidates.size, len(columns)), dtype=np.float32)
    for i, column in enumerate(columns):
        features[:, i] = column
    return features


_PAIRS: tuple[np.ndarray, np.ndarray] = tuple(  # type: ignore[assignment]
    np.array(side) for side in zip(*combinations(range(len(BASE_FEATURES)), 2), strict=True)
)


def with_crosses(standardised: np.ndarray) -> np.ndarray:
    """Append every pairwise product of the (standardised) base features (a C-ordered copy, as np.hstack made)."""
    left, right = _PAIRS
    # Built feature-major: the gathers and products run over whole contiguous rows, cheaper than gathering
    # columns; the same products, then one transposing copy.
    n_base = standardised.shape[1]
    by_feature = np.empty((n_base + left.size, standardised.shape[0]), dtype=standardised.dtype)
    base = by_feature[:n_base]
    base[...] = standardised.T
    np.multiply(base[left], base[right], out=by_feature[n_base:])
    return np.ascontiguousarray(by_feature.T)
