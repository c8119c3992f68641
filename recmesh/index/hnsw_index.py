"""hnswlib (Malkov & Yashunin, 2018): a navigable small-world graph searched greedily with a beam of width `ef`,
space "ip" (its distance is 1 - inner product) over the bundle's unit vectors, queried one vector at a time.

Graphs lose their way on queries from another distribution than the indexed vectors, which session vectors are
(word2vec input space against the context-vector index): on the beauty bundle recall@100 stays below 0.8 even at
ef 1024 while recall@10 is 0.97 (docs/ann.md). Fine for top-10 lookups; ScaNN is the candidate stage's default."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hnswlib
import numpy as np

FILE = "hnswlib.bin"


def default_params(n: int, k: int = 200) -> dict[str, Any]:
    """M=32 links per node; ef grows with n: the smallest swept value reaching recall@100 >= 0.95 on the
    frontiers in docs/ann.md (320 at 100k, 1024 at 1M: graphs need a wide beam on 64-d embeddings)."""
    ef = 128 if n < 20_000 else 320 if n < 300_000 else 1024
    return {"M": 32, "ef_construction": 100, "ef": max(ef, k), "seed": 100}


class HnswlibIndex:
    backend = "hnswlib"
    default_params = staticmethod(default_params)

    def __init__(self, index: hnswlib.Index, params: dict[str, Any]) -> None:
        self.index = index
        self.params = params
        self.index.set_num_threads(1)  # one query per call: threads would only add wake-up latency
        self._ef = 0
        self.set_ef(int(params["ef"]))

    def set_ef(self, ef: int) -> None:
        self.ef = ef
        self._use_ef(ef)

    def _use_ef(self, ef: int) -> None:
        if ef != self._ef:
            self.index.set_ef(ef)
            self._ef = ef

    @classmethod
    def build(cls, vectors: np.ndarray, params: dict[str, Any] | None = None, threads: int = -1) -> HnswlibIndex:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        n, dim = vectors.shape
        params = {**default_params(n), **(params or {})}
        index = hnswlib.Index(space="ip", dim=dim)
        index.init_index(
            max_elements=n,
            M=int(params["M"]),
            ef_construction=int(params["ef_construction"]),
            random_seed=int(params["seed"]),
        )
        index.add_items(vectors, np.arange(n), num_threads=threads)
        return cls(index, params)

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, self.index.get_current_count())
        self._use_ef(max(self.ef, k))  # hnswlib cannot return more than ef results
        labels, distances = self.index.knn_query(np.asarray(query, dtype=np.float32), k=k, num_threads=1)
        return labels[0].astype(np.int64), (1.0 - distances[0]).astype(np.float32)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.index.save_index(str(directory / FILE))

    @classmethod
    def load(cls, directory: Path, params: dict[str, Any], vectors: np.ndarray) -> HnswlibIndex:
        index = hnswlib.Index(space="ip", dim=int(vectors.shape[1]))
        index.load_index(str(directory / FILE), max_elements=int(vectors.shape[0]))
        return cls(index, params)
