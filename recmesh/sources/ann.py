"""`ann`: the session's word2vec query searched in the ANN index of context vectors (the original retriever).

With a filter (``session.allowed``) it over-fetches from the index and keeps the allowed rows, or scores the
allowed rows exactly when they are few or the over-fetch fell short (recmesh.index.base.search_allowed): it needs
the vectors the index searches for that.

Usage::

    AnnSource(model.index, model.n_items, model.space.context_vectors).candidates(session, 100)
"""

from __future__ import annotations

import numpy as np

from recmesh.index import AnnIndex, search_excluding
from recmesh.index.base import EXACT_FRACTION, EXACT_ROWS, OVERFETCH, search_allowed
from recmesh.sources import Session, mask_for


class AnnSource:
    name = "ann"

    def __init__(
        self,
        index: AnnIndex,
        n_items: int,
        vectors: np.ndarray | None = None,
        *,
        exact_fraction: float = EXACT_FRACTION,
        exact_rows: int = EXACT_ROWS,
        overfetch: float = OVERFETCH,
    ) -> None:
        self.index = index
        self.n_items = n_items
        self.vectors = vectors  # the index's space (context vectors): the exact path of a filtered search
        self.exact_fraction, self.exact_rows, self.overfetch = exact_fraction, exact_rows, overfetch

    def candidates(self, session: Session, k: int) -> tuple[np.ndarray, np.ndarray]:
        if session.query is None or k <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        exclude = session.exclude if session.exclude.size else None
        allowed = mask_for(session, self.n_items)
        if allowed is None:
            return search_excluding(self.index, session.query, k, exclude, self.n_items)
        if self.vectors is None:
            raise ValueError("this ann source has no vectors to score filtered rows with: pass the index's vectors")
        return search_allowed(
            self.index,
            self.vectors,
            session.query,
            k,
            exclude,
            allowed,
            session.allowed_count,
            exact_fraction=self.exact_fraction,
            exact_rows=self.exact_rows,
            overfetch=self.overfetch,
        )
