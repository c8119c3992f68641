"""Exact inner-product search: the reference every ANN backend is measured against, and the index of tiny
catalogues where a full scan is already fast."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


class ExactIndex:
    backend = "exact"

    def __init__(self, vectors: np.ndarray) -> None:
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.params: dict[str, Any] = {}

    @staticmethod
    def default_params(n: int, k: int = 200) -> dict[str, Any]:
        return {}

    @classmethod
    def build(cls, vectors: np.ndarray, params: dict[str, Any] | None = None) -> ExactIndex:
        return cls(vectors)

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores = self.vectors @ query.astype(np.float32, copy=False)
        k = min(k, scores.size)
        top = np.argpartition(-scores, k - 1)[:k]
        order = top[np.argsort(-scores[top], kind="stable")]
        return order.astype(np.int64), scores[order]

    def search_batch(self, queries: np.ndarray, k: int) -> np.ndarray:
        """Top-k ids for many queries at once (evaluation and recall measurement)."""
        scores = queries.astype(np.float32) @ self.vectors.T
        k = min(k, scores.shape[1])
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        rows = np.arange(scores.shape[0])[:, None]
        return top[rows, np.argsort(-scores[rows, top], axis=1, kind="stable")]

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)  # the bundle's vectors are the index: nothing to write

    @classmethod
    def load(cls, directory: Path, params: dict[str, Any], vectors: np.ndarray) -> ExactIndex:
        return cls(vectors)
