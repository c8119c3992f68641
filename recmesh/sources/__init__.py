"""Candidate sources: several retrievers behind one interface, mixed per request by a recipe.

Each source answers ``candidates(session, k) -> (rows, scores)``: at most k catalogue rows, best first, never a row
of ``session.exclude``. A :class:`~recmesh.sources.recipe.Recipe` says which sources to draw from and how many
from each; :func:`~recmesh.sources.recipe.gather` runs it and merges the answers into one candidate pool.

Usage::

    from recmesh.sources import Session
    from recmesh.sources.recipe import gather, parse_recipe

    pool = gather(model.sources, parse_recipe("ann:100,covisit:100,popular:20"), Session.of(model, history))
    pool.rows, pool.scores, pool.found_by  # merged, first source's order first

The sources (one small module each): ``ann`` (word2vec + the ANN index), ``covisit`` (item-to-item neighbours from
the transition / co-visitation tables), ``popular`` (global popularity), ``given`` (ids the caller brings).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

_NO_ROWS = np.zeros(0, dtype=np.int64)


@dataclass(frozen=True)
class Session:
    """What every source may read about one request: the session (rows, oldest first, already trimmed), its ANN
    query vector (None when the request has no session), the rows never to return, and the caller's own rows."""

    history: np.ndarray
    query: np.ndarray | None
    exclude: np.ndarray = field(default_factory=lambda: _NO_ROWS)
    given: np.ndarray = field(default_factory=lambda: _NO_ROWS)


class Source(Protocol):
    name: str

    def candidates(self, session: Session, k: int) -> tuple[np.ndarray, np.ndarray]:
        """At most k rows (int64) best first and their float32 scores; none of ``session.exclude``."""
        ...


def top_k(rows: np.ndarray, scores: np.ndarray, k: int, exclude: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The k best of (rows, scores) by score, ties by row (lower first), none of `exclude` (sorted, unique, as
    np.unique gives); rows are unique and ascending."""
    if exclude.size and rows.size:
        at = np.minimum(np.searchsorted(exclude, rows), exclude.size - 1)
        keep = exclude[at] != rows  # both sorted: a binary search instead of np.isin's set machinery
        rows, scores = rows[keep], scores[keep]
    order = np.argsort(-scores, kind="stable")[:k]  # stable over ascending rows: ties by row
    return rows[order].astype(np.int64, copy=False), scores[order].astype(np.float32, copy=False)
