"""`ann`: the session's word2vec query searched in the ANN index of context vectors (the original retriever).

Usage::

    AnnSource(model.index, model.n_items).candidates(session, 100)
"""

from __future__ import annotations

import numpy as np

from recmesh.index import AnnIndex, search_excluding
from recmesh.sources import Session


class AnnSource:
    name = "ann"

    def __init__(self, index: AnnIndex, n_items: int) -> None:
        self.index = index
        self.n_items = n_items

    def candidates(self, session: Session, k: int) -> tuple[np.ndarray, np.ndarray]:
        if session.query is None or k <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        return search_excluding(
            self.index, session.query, k, session.exclude if session.exclude.size else None, self.n_items
        )
