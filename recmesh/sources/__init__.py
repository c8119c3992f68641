"""Candidate sources: several retrievers behind one interface, mixed per request by a recipe.

Each source answers ``candidates(session, k) -> (rows, scores)``: at most k catalogue rows, best first, never a row
of ``session.exclude`` and, when the request carries a filter, only rows its ``session.allowed`` mask lets through
(a source over-fetches or walks further as needed, so it still answers k rows when k allowed rows exist).
A :class:`~recmesh.sources.recipe.Recipe` says which sources to draw from and how many from each;
:func:`~recmesh.sources.recipe.gather` runs it and merges the answers into one candidate pool.

Usage::

    from recmesh.sources import Session
    from recmesh.sources.recipe import gather, parse_recipe

    session = Session(history, model.query(history), np.unique(history), allowed=in_stock)  # allowed: optional
    pool = gather(model.sources, parse_recipe("ann:100,covisit:100,popular:20"), session)
    pool.rows, pool.scores, pool.found_by  # merged, first source's order first

The sources (one small module each): ``ann`` (word2vec + the ANN index), ``covisit`` (item-to-item neighbours from
the transition / co-visitation tables), ``slist`` (a closed-form linear item-to-item model, sparse rows; bundles of
catalogues up to 20k items), ``popular`` (global popularity), ``given`` (ids the caller brings).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

_NO_ROWS = np.zeros(0, dtype=np.int64)


@dataclass(frozen=True)
class Session:
    """What every source may read about one request: the session (rows, oldest first, already trimmed), its ANN
    query vector (None when the request has no session), the rows never to return, the caller's own rows, and the
    filter: ``allowed[row]`` is True for a row the request's filter lets through (None: every row passes).

    ``allowed_count`` is ``np.count_nonzero(allowed)``; a caller that already knows it (a cached mask) passes it,
    otherwise it is counted here once for all the sources."""

    history: np.ndarray
    query: np.ndarray | None
    exclude: np.ndarray = field(default_factory=lambda: _NO_ROWS)
    given: np.ndarray = field(default_factory=lambda: _NO_ROWS)
    allowed: np.ndarray | None = None
    allowed_count: int | None = None

    def __post_init__(self) -> None:
        if self.allowed is None:
            object.__setattr__(self, "allowed_count", None)
            return
        allowed = checked_mask(self.allowed)
        count = int(np.count_nonzero(allowed)) if self.allowed_count is None else int(self.allowed_count)
        if not 0 <= count <= allowed.size:
            raise ValueError(f"allowed_count {count} is outside 0..{allowed.size} (the allowed mask's length)")
        object.__setattr__(self, "allowed", allowed)
        object.__setattr__(self, "allowed_count", count)


class Source(Protocol):
    name: str

    def candidates(self, session: Session, k: int) -> tuple[np.ndarray, np.ndarray]:
        """At most k rows (int64) best first and their float32 scores; none of ``session.exclude``, all allowed."""
        ...


def checked_mask(allowed: object, n_rows: int | None = None) -> np.ndarray:
    """`allowed` as a 1-d bool array (of `n_rows` entries when given); ValueError naming what is wrong."""
    mask = np.asarray(allowed)
    if mask.dtype != np.bool_ or mask.ndim != 1:
        raise ValueError(f"the allowed mask must be a 1-d bool array, got {mask.dtype} of shape {mask.shape}")
    if n_rows is not None and mask.size != n_rows:
        raise ValueError(f"the allowed mask has {mask.size} entries but the model has {n_rows} item rows")
    return mask


def mask_for(session: Session, n_rows: int) -> np.ndarray | None:
    """The session's allowed mask checked against a source's catalogue size (None without a filter)."""
    if session.allowed is None:
        return None
    return checked_mask(session.allowed, n_rows)


def top_k(
    rows: np.ndarray, scores: np.ndarray, k: int, exclude: np.ndarray, allowed: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The k best of (rows, scores) by score, ties by row (lower first), none of `exclude` (sorted, unique, as
    np.unique gives), only rows `allowed` lets through (None: all); rows are unique and ascending, scores finite."""
    if allowed is not None and rows.size:
        keep = allowed[rows]
        rows, scores = rows[keep], scores[keep]
    if exclude.size and rows.size:
        at = np.minimum(np.searchsorted(exclude, rows), exclude.size - 1)
        keep = exclude[at] != rows  # both sorted: a binary search instead of np.isin's set machinery
        rows, scores = rows[keep], scores[keep]
    if scores.size > max(4 * k, PARTITION_ABOVE) and k > 0:
        # Many more scored rows than wanted (a hub's neighbours): keep those at or above the k-th best score first
        # (ties with it included, order kept), so the stable sort below sees about k rows instead of all of them.
        negated = -scores
        keep = negated <= np.partition(negated, k - 1)[k - 1]
        rows, scores = rows[keep], scores[keep]
    order = np.argsort(-scores, kind="stable")[:k]  # stable over ascending rows: ties by row
    return rows[order].astype(np.int64, copy=False), scores[order].astype(np.float32, copy=False)


PARTITION_ABOVE = 512  # below this many scored rows one stable sort is as fast as partition + sort
