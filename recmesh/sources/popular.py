"""`popular`: the most interacted-with items of the training data, the session's own items (and, with a filter,
the rows it does not allow) left out.

The order is computed once; a request walks it until it has k rows. With a filter the walk goes in chunks sized
for the filter's pass fraction; when few rows pass, it ranks the allowed rows by their place in the order instead
(cheaper than walking most of the catalogue).

Usage::

    PopularSource(tables.popularity).candidates(session, 20)
    PopularSource(tables.popularity).top(20, exclude, allowed)  # just the rows (Model.popular)
"""

from __future__ import annotations

import math

import numpy as np

from recmesh.index.base import is_in
from recmesh.sources import Session, checked_mask, mask_for

FEW_FRACTION = 0.02  # below this pass fraction, rank the allowed rows instead of walking the order
SLACK = 1.5  # a walk's first chunk holds (k + |exclude|) / fraction * SLACK rows of the order


class PopularSource:
    name = "popular"

    def __init__(self, popularity: np.ndarray) -> None:
        # Ordered once (most popular first, ties by row); a request only skips its exclusions.
        self.order = np.argsort(-popularity, kind="stable").astype(np.int64)
        self.scores = (popularity / max(float(popularity.max(initial=0.0)), 1.0)).astype(np.float32)
        self._place: np.ndarray | None = None  # place[row]: row's position in `order`, made on first need

    def candidates(self, session: Session, k: int) -> tuple[np.ndarray, np.ndarray]:
        rows = self.top(k, session.exclude, mask_for(session, self.order.size), session.allowed_count)
        return rows, self.scores[rows]

    def top(
        self, k: int, exclude: np.ndarray, allowed: np.ndarray | None = None, allowed_count: int | None = None
    ) -> np.ndarray:
        """The k most popular rows (int64), none of `exclude`, only rows `allowed` lets through (None: all)."""
        if k <= 0:
            return np.zeros(0, dtype=np.int64)
        if allowed is None:
            head = self.order[: k + exclude.size]  # enough rows whatever the exclusions remove
            if exclude.size:
                head = head[~is_in(head, exclude)]  # np.isin's answer in a few numpy calls
            return head[:k]
        allowed = checked_mask(allowed, self.order.size)
        count = int(np.count_nonzero(allowed)) if allowed_count is None else int(allowed_count)
        if count == 0:
            return np.zeros(0, dtype=np.int64)
        if count < FEW_FRACTION * allowed.size:
            return self._rank_allowed(k, exclude, allowed)
        return self._walk(k, exclude, allowed, count)

    def _walk(self, k: int, exclude: np.ndarray, allowed: np.ndarray, count: int) -> np.ndarray:
        """Along the order in chunks (doubling: a filter that passes mostly unpopular rows costs O(n), not more)."""
        n = self.order.size
        step = math.ceil((k + exclude.size) * n / count * SLACK)
        found: list[np.ndarray] = []
        have, start = 0, 0
        while have < k and start < n:
            chunk = self.order[start : start + step]
            chunk = chunk[allowed[chunk]]
            if exclude.size and chunk.size:
                chunk = chunk[~is_in(chunk, exclude)]
            found.append(chunk)
            have += chunk.size
            start += step
            step *= 2
        return np.concatenate(found)[:k]

    def _rank_allowed(self, k: int, exclude: np.ndarray, allowed: np.ndarray) -> np.ndarray:
        """The allowed rows with the k first places in the order (places are unique: no ties)."""
        if self._place is None:
            place = np.empty_like(self.order)
            place[self.order] = np.arange(self.order.size)
            self._place = place
        rows = np.flatnonzero(allowed)
        if exclude.size and rows.size:
            rows = rows[~is_in(rows, exclude)]
        places = self._place[rows]
        if rows.size > k:
            pick = np.argpartition(places, k - 1)[:k]
            rows, places = rows[pick], places[pick]
        return rows[np.argsort(places)].astype(np.int64, copy=False)
