"""`covisit`: item-to-item neighbours of the session's recent items, from the bundle's transition and
co-visitation tables, summed with recency weights.

score(c) = sum over the RECENT most recent items r_j (j = 0 is the last) of
DECAY**j * (TRANSITION_WEIGHT * transitions[r_j, c] + covisits[r_j, c]) / (1 + out[r_j]) ** NORM
where out[r] is r's row sum in both tables: a neighbour of a rarely followed item counts for more than one of a
hub. The ranker reads the same score as a feature (recmesh.rank.features, from the counts it looks up anyway).
`neighbour_scores` is the reference (and training's, which takes an example's own counts out); the source itself
sums one pre-merged table (TRANSITION_WEIGHT * transitions + covisits) in a few vectorised calls. With a filter
it keeps the allowed neighbours (every neighbour is scored anyway, so k is filled whenever k allowed ones exist).

Usage::

    CovisitSource(tables).candidates(session, 100)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from recmesh.rank.tables import Csr, FeatureTables, OwnCounts
from recmesh.sources import Session, mask_for, top_k


@dataclass(frozen=True)
class CovisitParams:
    recent: int = 5  # how many of the latest session items vote
    decay: float = 0.5  # weight of the j-th most recent item: decay ** j
    transition_weight: float = 2.0  # a direct "b followed a" counts this much more than a co-visit
    norm: float = 0.5  # divide each item's votes by (1 + its row sum) ** norm


def neighbour_scores(
    tables: FeatureTables,
    history: np.ndarray,
    params: CovisitParams = CovisitParams(),
    own: OwnCounts | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(columns, scores) of every item with a positive score, columns ascending, float64 scores summed in a fixed
    order (the same bytes wherever it runs). `own` (training only) is taken out of the tables first."""
    recent = history[::-1][: params.recent]
    cols_parts, score_parts = [], []
    for j, item in enumerate(recent.tolist()):
        t_cols, t_counts = tables.transitions.row(item)
        c_cols, c_counts = tables.covisits.row(item)
        out = float(t_counts.sum(dtype=np.float64)) + float(c_counts.sum(dtype=np.float64))
        if own is not None:
            out -= own.row_sum(own.transitions, item) + own.row_sum(own.covisits, item)
        weight = params.decay**j / (1.0 + out) ** params.norm
        cols_parts += [t_cols, c_cols]
        score_parts += [t_counts * (weight * params.transition_weight), c_counts * weight]
        if own is not None:
            for table, factor in ((own.transitions, params.transition_weight), (own.covisits, 1.0)):
                entries = table.get(item, {})
                cols_parts.append(np.fromiter(entries.keys(), dtype=np.int64, count=len(entries)))
                score_parts.append(
                    np.fromiter(entries.values(), dtype=np.float64, count=len(entries)) * -weight * factor
                )
    cols = np.concatenate(cols_parts) if cols_parts else np.zeros(0, dtype=np.int64)
    if cols.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
    unique, scores = _sum_by_column(cols, np.concatenate(score_parts).astype(np.float64, copy=False))
    keep = scores > 1e-9  # a count `own` took back entirely leaves a rounding residue, not a neighbour
    return unique[keep].astype(np.int64, copy=False), scores[keep]


def _sum_by_column(cols: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Columns ascending, each once, with the sum of its values (a stable sort, then one reduceat per run)."""
    if cols.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
    order = np.argsort(cols, kind="stable")
    sorted_cols = cols[order]
    starts = np.flatnonzero(np.concatenate(([True], sorted_cols[1:] != sorted_cols[:-1])))
    return sorted_cols[starts].astype(np.int64, copy=False), np.add.reduceat(values[order], starts)


def scores_at(cols: np.ndarray, scores: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The scores of `rows` (0 where absent) from neighbour_scores' sorted (cols, scores)."""
    if cols.size == 0:
        return np.zeros(rows.size, dtype=np.float64)
    pos = np.minimum(np.searchsorted(cols, rows), cols.size - 1)
    return np.where(cols[pos] == rows, scores[pos], 0.0)


class CovisitSource:
    name = "covisit"

    def __init__(self, tables: FeatureTables, params: CovisitParams = CovisitParams()) -> None:
        self.tables = tables
        self.params = params
        n = tables.popularity.size
        transitions = _scipy(tables.transitions, n)
        covisits = _scipy(tables.covisits, n)
        merged = (transitions * params.transition_weight + covisits).tocsr()
        merged.sort_indices()
        self._indptr, self._indices, self._data = merged.indptr.astype(np.int64), merged.indices, merged.data
        out = np.asarray(transitions.sum(axis=1)).ravel() + np.asarray(covisits.sum(axis=1)).ravel()
        self._row_weight = 1.0 / (1.0 + out.astype(np.float64)) ** params.norm
        self._decay = params.decay ** np.arange(params.recent, dtype=np.float64)

    def candidates(self, session: Session, k: int) -> tuple[np.ndarray, np.ndarray]:
        recent = session.history[::-1][: self.params.recent]
        if recent.size == 0 or k <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        starts, ends = self._indptr[recent], self._indptr[recent + 1]
        entries = np.concatenate([np.arange(s, e) for s, e in zip(starts.tolist(), ends.tolist(), strict=True)])
        weights = np.repeat(self._decay[: recent.size] * self._row_weight[recent], ends - starts)
        cols, scores = _sum_by_column(self._indices[entries], self._data[entries] * weights)
        return top_k(cols, scores, k, session.exclude, mask_for(session, self._row_weight.size))


def _scipy(csr: Csr, n: int) -> sp.csr_matrix:
    return sp.csr_matrix((csr.data.astype(np.float64), csr.indices, csr.indptr), shape=(n, n))
