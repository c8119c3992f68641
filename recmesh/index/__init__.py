"""Nearest-neighbour backends behind one interface; the bundle records which one built its index.

"scann" is the default; "exact" is the reference; "faiss_hnsw", "faiss_ivf" and "hnswlib" are the alternatives
measured against ScaNN at batch size 1 in docs/ann.md. A backend's library is imported only when it is used.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, cast

import numpy as np

from recmesh.extras import missing_extra
from recmesh.index.base import AnnIndex, IndexBackend, search_excluding

BACKENDS = ("scann", "exact", "faiss_hnsw", "faiss_ivf", "hnswlib")  # the order --index help lists them in

__all__ = ["AnnIndex", "BACKENDS", "backend_class", "build_index", "default_params", "load_index", "search_excluding"]


# backend -> (module, class): a backend's library is imported the first time the backend is used.
_CLASSES = {
    "scann": ("recmesh.index.scann_index", "ScannIndex"),
    "exact": ("recmesh.index.exact", "ExactIndex"),
    "faiss_hnsw": ("recmesh.index.faiss_index", "FaissHnswIndex"),
    "faiss_ivf": ("recmesh.index.faiss_index", "FaissIvfIndex"),
    "hnswlib": ("recmesh.index.hnsw_index", "HnswlibIndex"),
}
# Backends whose library comes with an extra, not with `pip install .` (the serving image): scann and exact do.
_EXTRAS = {"faiss_hnsw": "ann", "faiss_ivf": "ann", "hnswlib": "ann"}


def backend_class(backend: str) -> IndexBackend:
    """The class implementing `backend`; ValueError naming the valid ones for any other name."""
    if backend not in _CLASSES:
        raise ValueError(f"unknown index backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    module, name = _CLASSES[backend]
    try:
        loaded = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if backend not in _EXTRAS or (e.name or "recmesh").startswith("recmesh"):
            raise
        raise missing_extra(e, _EXTRAS[backend], f"the {backend!r} index backend") from None
    return cast(IndexBackend, getattr(loaded, name))


def default_params(backend: str, n: int, k: int = 200) -> dict[str, Any]:
    """The parameters a backend builds with for a catalogue of n items when none are given."""
    return backend_class(backend).default_params(n, k)


def build_index(backend: str, vectors: np.ndarray, params: dict[str, Any] | None = None) -> AnnIndex:
    """Build over `vectors` (unit rows, inner product); `params` None means default_params(backend, len(vectors))."""
    return backend_class(backend).build(vectors, params)


def load_index(backend: str, directory: Path, params: dict[str, Any], vectors: np.ndarray) -> AnnIndex:
    """Load what `save` wrote in `directory`; `vectors` are the bundle's index space (the exact index and hnswlib
    read their size from them). The directory is made absolute first: ScaNN resolves its asset paths against its
    own working directory, so a relative bundle path (`--bundle models/<version>`) would not load."""
    return backend_class(backend).load(Path(directory).resolve(), params, vectors)
