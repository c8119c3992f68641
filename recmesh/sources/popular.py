"""`popular`: the most interacted-with items of the training data, the session's own items left out.

Usage::

    PopularSource(tables.popularity).candidates(session, 20)
"""

from __future__ import annotations

import numpy as np

from recmesh.sources import Session


class PopularSource:
    name = "popular"

    def __init__(self, popularity: np.ndarray) -> None:
        # Ordered once (most popular first, ties by row); a request only skips its exclusions.
        self.order = np.argsort(-popularity, kind="stable").astype(np.int64)
        self.scores = (popularity / max(float(popularity.max(initial=0.0)), 1.0)).astype(np.float32)

    def candidates(self, session: Session, k: int) -> tuple[np.ndarray, np.ndarray]:
        head = self.order[: k + session.exclude.size]  # enough rows whatever the exclusions remove
        if session.exclude.size:
            head = head[~np.isin(head, session.exclude)]
        rows = head[:k]
        return rows, self.scores[rows]
