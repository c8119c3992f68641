"""`given`: the rows the caller brings ("bring your own candidates"), in the caller's order, duplicates, exclusions
and rows the request's filter does not allow dropped. Their score is 1.0: the caller vouched for them, the ranker
orders them.

Usage::

    GivenSource().candidates(Session(history, query, given=rows), 50)
"""

from __future__ import annotations

import numpy as np

from recmesh.sources import Session


class GivenSource:
    name = "given"

    def candidates(self, session: Session, k: int) -> tuple[np.ndarray, np.ndarray]:
        rows = session.given
        if rows.size:
            _, first = np.unique(rows, return_index=True)
            rows = rows[np.sort(first)]
            if session.exclude.size:
                rows = rows[~np.isin(rows, session.exclude)]
            if session.allowed is not None:
                rows = rows[(rows >= 0) & (rows < session.allowed.size)]  # a row outside the mask is not allowed
                rows = rows[session.allowed[rows]]
        rows = rows[: max(k, 0)].astype(np.int64, copy=False)
        return rows, np.ones(rows.size, dtype=np.float32)
