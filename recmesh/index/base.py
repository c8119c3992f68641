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


class IndexBackend(Protocol):
    """What a backend class offers: its default parameters, building, loading (every backend the same way)."""

    @staticmethod
    def default_params(n: int, k: int = 200) -> dict[str, Any]: ...

    @classmethod
    def build(cls, vectors: np.ndarray, params: dict[str, Any] | None = None) -> AnnIndex: ...

    @classmethod
    def load(cls, directory: Path, params: dict[str, Any], vectors: np.ndarray) -> AnnIndex: ...


def search_excluding(
    index: AnnIndex, query: np.ndarray, k: int, exclude: np.ndarray | None, n_items: int
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k skipping excluded rows: ask for k + |exclude| so the answer stays k long after filtering."""
    if exclude is None or exclude.size == 0:
        return index.search(query, min(n_items, k))
    ids, scores = index.search(query, min(n_items, k + int(exclude.size)))
    keep = ~is_in(ids, exclude)
    return ids[keep][:k], scores[keep][:k]


def is_in(values: np.ndarray, among: np.ndarray) -> np.ndarray:
    """np.isin(values, among) for a non-empty `among`, by binary search in its sorted copy: a few numpy calls
    where np.isin costs tens of microseconds of Python for the few hundred ids of one search."""
    ordered = np.sort(among)
    pos = np.searchsorted(ordered, values)
    np.minimum(pos, ordered.size - 1, out=pos)
    return np.asarray(ordered[pos] == values)
