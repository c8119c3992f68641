"""The one small interface every nearest-neighbour backend implements (maximum inner product search)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np


class AnnIndex(Protocol):
    backend: str
    params: dict[str, Any]

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows by inner product with one query: (row ids int64, scores float32), best first."""
        ...

    def save(self, directory: Path) -> None: ...


def search_excluding(
    index: AnnIndex, query: np.ndarray, k: int, exclude: np.ndarray | None, n_items: int
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k skipping excluded rows: ask for k + |exclude| so the answer stays k long after filtering."""
    n_excluded = 0 if exclude is None else int(exclude.size)
    want = min(n_items, k + n_excluded)
    ids, scores = index.search(query, want)
    if n_excluded:
        keep = ~np.isin(ids, exclude)
        ids, scores = ids[keep], scores[keep]
    return ids[:k], scores[:k]
