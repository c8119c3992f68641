"""FAISS backends: a graph (IndexHNSWFlat) and an inverted file (IVF, flat or 4-bit fast-scan PQ + exact refine),
both maximum inner product over the bundle's unit vectors, queried one vector at a time.

A single query gains nothing from OpenMP threads (FAISS parallelises over queries), and a thread pool waking up
per call costs more than the search, so a built or loaded index sets FAISS to one thread for the whole process.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Self

import faiss
import numpy as np

FILE = "faiss.index"


def hnsw_default_params(n: int, k: int = 200) -> dict[str, Any]:
    """M=32 links per node; efSearch grows with n: the smallest swept value reaching recall@100 >= 0.95 on the
    frontiers in docs/ann.md (320 at 100k, 1024 at 1M: graphs need a wide beam on 64-d embeddings)."""
    ef = 128 if n < 20_000 else 320 if n < 300_000 else 1024
    return {"M": 32, "ef_construction": 100, "ef_search": max(ef, k)}


def ivf_default_params(n: int, k: int = 200) -> dict[str, Any]:
    """nlist ~ 4 sqrt(n) (at least 39 training points per list, FAISS's minimum); flat lists (64-d vectors are
    small); nprobe probes 20% of the lists up to 300k items, 8% above: recall@100 >= 0.95 in docs/ann.md."""
    nlist = max(1, min(int(round(4 * math.sqrt(n))), n // 39))
    share = 0.2 if n < 300_000 else 0.08
    return {
        "nlist": nlist,
        "codec": "Flat",
        "nprobe": max(1, int(round(share * nlist))),
        "k_factor": 1,
        "spherical": False,
        "training_sample_size": min(n, max(64 * nlist, 50_000)),
    }


def single_thread() -> None:
    faiss.omp_set_num_threads(1)


def _search(index: Any, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    q = np.ascontiguousarray(np.asarray(query, dtype=np.float32).reshape(1, -1))
    scores, ids = index.search(q, min(k, index.ntotal))
    ids, scores = ids[0], scores[0]
    found = ids >= 0  # FAISS pads with -1 when the probed part of the index holds fewer than k vectors
    if not found.all():
        ids, scores = ids[found], scores[found]
    return ids.astype(np.int64, copy=False), scores


def _write(index: Any, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    faiss.write_index(index, str(directory / FILE))


class _FaissIndex:
    """What both FAISS wrappers share: searching, saving and loading a FAISS index file."""

    def __init__(self, index: Any, params: dict[str, Any]) -> None:
        single_thread()
        self.index = index
        self.params = params

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return _search(self.index, query, k)

    def save(self, directory: Path) -> None:
        _write(self.index, directory)

    @classmethod
    def load(cls, directory: Path, params: dict[str, Any], vectors: np.ndarray | None = None) -> Self:
        return cls(faiss.read_index(str(directory / FILE)), params)


class FaissHnswIndex(_FaissIndex):
    backend = "faiss_hnsw"
    default_params = staticmethod(hnsw_default_params)

    def __init__(self, index: Any, params: dict[str, Any]) -> None:
        super().__init__(index, params)
        self.set_ef(int(params["ef_search"]))

    def set_ef(self, ef: int) -> None:
        self.index.hnsw.efSearch = ef  # FAISS searches with max(efSearch, k)

    @classmethod
    def build(cls, vectors: np.ndarray, params: dict[str, Any] | None = None) -> FaissHnswIndex:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        params = {**hnsw_default_params(len(vectors)), **(params or {})}
        index = faiss.IndexHNSWFlat(vectors.shape[1], int(params["M"]), faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = int(params["ef_construction"])
        index.add(vectors)
        return cls(index, params)


class FaissIvfIndex(_FaissIndex):
    """IVF: `codec` "Flat" scans full vectors of the probed lists; "PQ{m}x4fs" scans 4-bit codes with SIMD and
    re-scores the best `k_factor * k` exactly (the FAISS counterpart of ScaNN's AH + reorder)."""

    backend = "faiss_ivf"
    default_params = staticmethod(ivf_default_params)

    def __init__(self, index: Any, params: dict[str, Any]) -> None:
        super().__init__(index, params)
        self.ivf = faiss.extract_index_ivf(index)
        self.set_probes(int(params["nprobe"]), int(params.get("k_factor", 1)))

    def set_probes(self, nprobe: int, k_factor: int = 1) -> None:
        self.ivf.nprobe = nprobe
        if hasattr(self.index, "k_factor"):
            self.index.k_factor = k_factor

    @classmethod
    def build(cls, vectors: np.ndarray, params: dict[str, Any] | None = None) -> FaissIvfIndex:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        n = len(vectors)
        params = {**ivf_default_params(n), **(params or {})}
        nlist = min(int(params["nlist"]), n)
        params["nlist"] = nlist
        refine = ",RFlat" if params["codec"] != "Flat" else ""
        index = faiss.index_factory(
            vectors.shape[1], f"IVF{nlist},{params['codec']}{refine}", faiss.METRIC_INNER_PRODUCT
        )
        # Plain k-means, as ScaNN's tree: FAISS normalises IVF centroids for inner product by default, which on
        # a bundle's session queries loses a quarter of recall@100 at the same nprobe (docs/ann.md).
        faiss.extract_index_ivf(index).cp.spherical = bool(params.get("spherical", False))
        sample = min(n, int(params.get("training_sample_size", n)))
        rows = np.random.default_rng(0).choice(n, sample, replace=False) if sample < n else slice(None)
        index.train(vectors[rows])
        index.add(vectors)
        return cls(index, params)
