"""Base features of (session, candidate) pairs, and their pairwise crosses.

One call computes the whole candidate list (vectorised over candidates); the serving ranker and the offline
evaluation call this same function, so served and offline rankings agree.

Three feature sets: BASE_FEATURES (a ranker trained on ANN candidates alone; `retrieval_score` and its rank come
from the caller), SOURCE_FEATURES (a ranker trained on a mixed candidate pool: every source's view of every
candidate, recomputed from the session, whichever source found it), and SLIST_FEATURES (those and the slist model's
score, presence and rank, for a bundle that has it). A ranker stores the names it was trained on
and :func:`features` computes those::

    features(space, history, candidates, scores, session_unit, SOURCE_FEATURES)  # (n, 12) float32
    features(space, history, candidates, scores, session_unit, SLIST_FEATURES)  # (n, 15) float32
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

from recmesh.rank.tables import Csr, FeatureTables, OwnCounts, lookup
from recmesh.sources.covisit import CovisitParams, neighbour_scores, scores_at
from recmesh.sources.slist import SlistParams, scores_and_ranks

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
# The mixed-pool set: `sim_query` is the ANN source's score (context vector . session query) computed for every
# candidate; `log_covisit_score` / `has_covisit` the covisit source's score and whether it would find the item at
# all; popularity is already there. No caller-supplied score: it means something else for each source.
SOURCE_FEATURES = (
    "sim_query",
    "sim_session",
    "sim_last_item",
    "next_item_score",
    "log_popularity",
    "log_transitions_from_last",
    "transition_share_from_last",
    "log_transitions_from_recent",
    "log_covisits_from_recent",
    "log_session_length",
    "log_covisit_score",
    "has_covisit",
)
# A ranker of a bundle with the slist source (recmesh.sources.slist): its score of every candidate, from the session
# whichever source found it, whether it scores the candidate at all, and log of the candidate's rank in the source's
# whole order (1 = its best item outside the session).
SLIST_FEATURES = (*SOURCE_FEATURES, "slist_score", "has_slist", "log_slist_rank")
ALL_FEATURES = BASE_FEATURES + tuple(f for f in SLIST_FEATURES if f not in BASE_FEATURES)
RECENT_ITEMS = 5  # how many of the latest session items feed the transition / co-visit features
RECENT_DECAY = 0.5  # weight of the j-th most recent item: RECENT_DECAY ** j


def feature_names(base: Sequence[str] = BASE_FEATURES) -> list[str]:
    crosses = [f"{a}*{b}" for a, b in combinations(base, 2)]
    return list(base) + crosses


@dataclass
class ItemSpace:
    """What the features need to know about every item."""

    vectors: np.ndarray  # (n, d) word2vec input vectors, L2-normalised: "what an item is"
    context_vectors: np.ndarray  # (n, d) output vectors, L2-normalised: "what comes next"; the ANN index space
    tables: FeatureTables
    covisit: CovisitParams = field(default_factory=CovisitParams)  # the covisit source's scoring (the bundle's)
    slist: Csr | None = None  # the slist model's sparse weights (None: a bundle without it)
    slist_params: SlistParams = field(default_factory=SlistParams)
    # every item's row sum in both tables (the covisit score's normaliser), computed once
    row_out: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        covisit_out = self.tables.covisits.row_sums().astype(np.float64)
        if covisit_out.size != self.tables.transition_out.size:  # a bundle without co-visits
            covisit_out = np.zeros(self.tables.transition_out.size)
        self.row_out = self.tables.transition_out.astype(np.float64) + covisit_out


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
    return _stack(_base_columns(space, history, candidates, retrieval_scores, session_unit, None)[0])


def _covisit_scores(
    space: ItemSpace, history: np.ndarray, candidates: np.ndarray, counts: np.ndarray, own: OwnCounts | None
) -> np.ndarray:
    """The covisit source's score of each candidate (recmesh.sources.covisit's formula). From the counts the base
    features looked up already when the source reads no more recent items than they do; else the reference."""
    params = space.covisit
    if params.recent > RECENT_ITEMS:
        cols, scores = neighbour_scores(space.tables, history, params, own)
        return scores_at(cols, scores, candidates)
    recent = history[::-1][: params.recent]
    out = space.row_out[recent]
    if own is not None:
        out = out - [own.row_sum(own.transitions, r) + own.row_sum(own.covisits, r) for r in recent.tolist()]
    weights = params.decay ** np.arange(recent.size) / (1.0 + out) ** params.norm
    mixed = counts[: recent.size, 0].astype(np.float64) * params.transition_weight + counts[: recent.size, 1]
    return np.asarray(weights @ mixed)


def features(
    space: ItemSpace,
    history: np.ndarray,
    candidates: np.ndarray,
    retrieval_scores: np.ndarray,
    session_unit: np.ndarray,
    names: Sequence[str],
    own: OwnCounts | None = None,
) -> np.ndarray:
    """(len(candidates), len(names)) float32, names from ALL_FEATURES. `own` (training only): counts to take out
    of the tables first (OwnCounts). With names == BASE_FEATURES and no `own`, equal to base_features."""
    base, counts = _base_columns(space, history, candidates, retrieval_scores, session_unit, own)
    columns = dict(zip(BASE_FEATURES, base, strict=True))
    if "sim_query" in names:
        columns["sim_query"] = space.context_vectors[candidates] @ session_unit
    if "log_covisit_score" in names or "has_covisit" in names:
        covisit = _covisit_scores(space, history, candidates, counts, own)
        columns["log_covisit_score"] = np.log1p(covisit)
        columns["has_covisit"] = (covisit > 0).astype(np.float32)
    if {"slist_score", "has_slist", "log_slist_rank"} & set(names):
        if space.slist is None:
            raise ValueError("the ranker reads the slist score but this bundle has no slist model")
        # `own` (train_positions, off by default) is not taken out of the slist model: it was fitted on those items
        slist, ranks = scores_and_ranks(space.slist, history, space.slist_params, candidates)
        columns["slist_score"] = slist
        columns["has_slist"] = (slist > 0).astype(np.float32)
        columns["log_slist_rank"] = np.log(ranks)
    return _stack([columns[name] for name in names])


def _stack(columns: Sequence[np.ndarray]) -> np.ndarray:
    # Filled column by column: what np.column_stack(columns).astype(np.float32) gives, without its copies.
    out = np.empty((columns[0].size, len(columns)), dtype=np.float32)
    for i, column in enumerate(columns):
        out[:, i] = column
    return out


def _base_columns(
    space: ItemSpace,
    history: np.ndarray,
    candidates: np.ndarray,
    retrieval_scores: np.ndarray,
    session_unit: np.ndarray,
    own: OwnCounts | None,
) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """The BASE_FEATURES columns, and counts[j] = (transitions, co-visits) from the j-th most recent item."""
    tables = space.tables
    last = int(history[-1])
    cand_unit = space.vectors[candidates]
    last_unit = space.vectors[last]
    recent = history[::-1][:RECENT_ITEMS]  # most recent first: recent[0] is the last item
    # counts[j] = (transitions, co-visits) from the j-th most recent item to each candidate, in one lookup.
    cells = [(table, item) for item in recent.tolist() for table in (tables.transitions, tables.covisits)]
    counts = lookup(cells, candidates).reshape(recent.size, 2, candidates.size)
    popularity = tables.popularity[candidates]
    transition_out = tables.transition_out[last]
    if own is not None:
        for j, item in enumerate(recent.tolist()):
            counts[j, 0] -= own.at(own.transitions, item, candidates)
            counts[j, 1] -= own.at(own.covisits, item, candidates)
        popularity = popularity - np.array([own.popularity.get(c, 0.0) for c in candidates.tolist()], np.float32)
        transition_out = transition_out - own.row_sum(own.transitions, last)
    from_last = counts[0, 0]
    # Weighted sums over the recent items, accumulated from zero item by item in float32 (accumulate is
    # sequential): the same additions, in the same order, as a loop of `total += weight * counts`.
    terms = np.zeros((1 + recent.size, 2, candidates.size), dtype=np.float32)
    np.multiply(_RECENT_WEIGHTS[: recent.size, None, None], counts, out=terms[1:])
    trans_recent, covisit_recent = np.add.accumulate(terms, axis=0)[-1]
    return (
        retrieval_scores,
        np.log1p(np.arange(candidates.size, dtype=np.float32)),
        cand_unit @ session_unit,
        cand_unit @ last_unit,
        space.context_vectors[candidates] @ last_unit,
        np.log1p(popularity),
        np.log1p(from_last),
        from_last / (transition_out + 1.0),
        np.log1p(trans_recent),
        np.log1p(covisit_recent),
        np.full(candidates.size, np.log1p(history.size), dtype=np.float32),
    ), counts


def _pairs(n_base: int) -> tuple[np.ndarray, np.ndarray]:
    left, right = zip(*combinations(range(n_base), 2), strict=True)
    return np.array(left), np.array(right)


_PAIRS = {n: _pairs(n) for n in (len(BASE_FEATURES), len(SOURCE_FEATURES), len(SLIST_FEATURES))}


def with_crosses(standardised: np.ndarray) -> np.ndarray:
    """Append every pairwise product of the (standardised) base features (a C-ordered copy, as np.hstack made)."""
    n_base = standardised.shape[1]
    if n_base not in _PAIRS:
        _PAIRS[n_base] = _pairs(n_base)
    left, right = _PAIRS[n_base]
    # Built feature-major: the gathers and products run over whole contiguous rows, cheaper than gathering
    # columns; the same products, then one transposing copy.
    by_feature = np.empty((n_base + left.size, standardised.shape[0]), dtype=standardised.dtype)
    base = by_feature[:n_base]
    base[...] = standardised.T
    np.multiply(base[left], base[right], out=by_feature[n_base:])
    return np.ascontiguousarray(by_feature.T)
