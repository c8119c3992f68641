"""Nearest-neighbour backends behind one interface; the bundle records which one built its index.

"scann" is the default; "exact" is the reference; "faiss_hnsw", "faiss_ivf" and "hnswlib" are the alternatives
measured against ScaNN at batch size 1 in docs/ann.md. A backend's library is imported only when it is used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from recmesh.index.base import AnnIndex, search_excluding
from recmesh.index.exact import ExactIndex

BACKENDS = ("scann", "exact", "faiss_hnsw", "faiss_ivf", "hnswlib")

__all__ = ["AnnIndex", "BACKENDS", "build_index", "default_params", "load_index", "search_excluding"]


def default_params(backend: str, n: int, k: int = 200) -> dict[str, Any]:
    """The parameters a backend builds with for a catalogue of n items when none are given."""
    if backend == "scann":
        from recmesh.index import scann_index

        return scann_index.default_params(n, k)
    if backend == "exact":
        return {}
    if backend == "faiss_hnsw":
        from recmesh.index import faiss_index

        return faiss_index.hnsw_default_params(n, k)
    if backend == "faiss_ivf":
        from recmesh.index import faiss_index

        return faiss_index.ivf_default_params(n, k)
    if backend == "hnswlib":
        from recmesh.index import hnsw_index

        return hnsw_index.default_params(n, k)
    raise ValueError(f"unknown index backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def build_index(backend: str, vectors: np.ndarray, params: dict[str, Any] | None = None) -> AnnIndex:
    """Build over `vectors` (unit rows, inner product); `params` None means default_params(backend, len(vectors))."""
    if backend == "scann":
        from recmesh.index.scann_index import ScannIndex

        return ScannIndex.build(vectors, params)
    if backend == "exact":
        return ExactIndex(vectors)
    if backend == "faiss_hnsw":
        from recmesh.index.faiss_index import FaissHnswIndex

        return FaissHnswIndex.build(vectors, params)
    if backend == "faiss_ivf":
        from recmesh.index.faiss_index import FaissIvfIndex

        return FaissIvfIndex.build(vectors, params)
    if backend == "hnswlib":
        from recmesh.index.hnsw_index import HnswlibIndex

        return HnswlibIndex.build(vectors, params)
    raise ValueError(f"unknown index backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def load_index(backend: str, directory: Path, params: dict[str, Any], vectors: np.ndarray) -> AnnIndex:
    """Load what `save` wrote in `directory`; `vectors` are the bundle's index space (the exact index and hnswlib
    read their size from them)."""
    directory = Path(directory)
    if backend == "scann":
        from recmesh.index.scann_index import ScannIndex

        return ScannIndex.load(directory, params)
    if backend == "exact":
        return ExactIndex.load(directory, vectors)
    if backend == "faiss_hnsw":
        from recmesh.index.faiss_index import FaissHnswIndex

        return FaissHnswIndex.load(directory, params)
    if backend == "faiss_ivf":
        from recmesh.index.faiss_index import FaissIvfIndex

        return FaissIvfIndex.load(directory, params)
    if backend == "hnswlib":
        from recmesh.index.hnsw_index import HnswlibIndex

        return HnswlibIndex.load(directory, params, vectors)
    raise ValueError(f"bundle index backend {backend!r} is not supported by this build")
