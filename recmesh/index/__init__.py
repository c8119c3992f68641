"""Nearest-neighbour backends behind one interface; the bundle records which one built its index."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from recmesh.index.base import AnnIndex, search_excluding
from recmesh.index.exact import ExactIndex

BACKENDS = ("scann", "exact")

__all__ = ["AnnIndex", "BACKENDS", "build_index", "load_index", "search_excluding"]


def build_index(backend: str, vectors: np.ndarray, params: dict[str, Any] | None = None) -> AnnIndex:
    if backend == "scann":
        from recmesh.index.scann_index import ScannIndex

        return ScannIndex.build(vectors, params)
    if backend == "exact":
        return ExactIndex(vectors)
    raise ValueError(f"unknown index backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def load_index(backend: str, directory: Path, params: dict[str, Any], vectors: np.ndarray) -> AnnIndex:
    if backend == "scann":
        from recmesh.index.scann_index import ScannIndex

        return ScannIndex.load(directory, params)
    if backend == "exact":
        return ExactIndex.load(directory, vectors)
    raise ValueError(f"bundle index backend {backend!r} is not supported by this build")
