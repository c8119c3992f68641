"""ScaNN (Guo et al., 2020): partitioning + anisotropic quantisation + exact re-ordering, queried one vector
at a time. Parameters scale with the catalogue, following ScaNN's own guidance (leaves ~ sqrt(n))."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import scann
from scann.scann_ops.py.scann_ops_pybind import scann_pybind  # the compiled module scann itself uses

from recmesh.bundle import inside

ASSETS = "scann_assets.pbtxt"


def default_params(n: int, k: int = 200) -> dict[str, Any]:
    """Brute force below 20k items (a scan is already sub-millisecond); tree + AH + reorder above."""
    if n < 20_000:
        return {"mode": "brute_force", "k": k}
    return tree_params(n, k)


def tree_params(n: int, k: int = 200) -> dict[str, Any]:
    """Partition into ~2 sqrt(n) leaves, score 4-bit AH codes (2 dims per block) of the searched leaves, re-score
    the best `reorder` exactly. The share of leaves searched falls slowly with n (25% at 100k, 18% at 1M): the
    settings that reach recall@100 >= 0.95 on the frontiers measured in docs/ann.md."""
    leaves = max(2, int(round(2 * math.sqrt(n))))
    share = min(0.3, max(0.15, 0.25 - 0.07 * math.log10(max(n, 1) / 100_000)))
    return {
        "mode": "tree_ah",
        "k": k,
        "num_leaves": leaves,
        "num_leaves_to_search": max(1, int(round(share * leaves))),
        "training_sample_size": min(n, 250_000),
        "dims_per_block": 2,
        "anisotropic_quantization_threshold": 0.2,
        "reorder": max(4 * k, 800 if n < 300_000 else 1500),
    }


class ScannIndex:
    backend = "scann"
    default_params = staticmethod(default_params)

    def __init__(self, searcher: Any, params: dict[str, Any]) -> None:
        self.searcher = searcher
        self.params = params
        self._leaves: int | None = params.get("num_leaves_to_search")
        self._reorder: int = params.get("reorder") or 0

    @classmethod
    def build(cls, vectors: np.ndarray, params: dict[str, Any] | None = None) -> ScannIndex:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        params = params or default_params(len(vectors))
        builder = scann.scann_ops_pybind.builder(vectors, params["k"], "dot_product")
        if params["mode"] == "brute_force":
            searcher = builder.score_brute_force().build()
        else:
            searcher = (
                builder.tree(
                    num_leaves=params["num_leaves"],
                    num_leaves_to_search=params["num_leaves_to_search"],
                    training_sample_size=params["training_sample_size"],
                )
                .score_ah(
                    params["dims_per_block"],
                    anisotropic_quantization_threshold=params["anisotropic_quantization_threshold"],
                )
                .reorder(params["reorder"])
                .build()
            )
        return cls(searcher, params)

    def set_search(self, leaves_to_search: int, reorder: int) -> None:
        """Change the speed/recall knobs of a tree index without rebuilding (the benchmark's sweep)."""
        self._leaves, self._reorder = leaves_to_search, reorder

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        kwargs: dict[str, Any] = {"final_num_neighbors": k}
        if self._leaves is not None:
            kwargs["leaves_to_search"] = self._leaves
            kwargs["pre_reorder_num_neighbors"] = max(self._reorder, k)
        ids, scores = self.searcher.search(np.asarray(query, dtype=np.float32), **kwargs)
        return ids.astype(np.int64), scores

    def save(self, directory: Path) -> None:
        """ScaNN writes absolute asset paths; rewrite them to bare file names so a bundle can move."""
        directory.mkdir(parents=True, exist_ok=True)
        self.searcher.serialize(str(directory))
        assets = directory / ASSETS
        text = re.sub(r'asset_path: "[^"]*/([^"/]+)"', r'asset_path: "\1"', assets.read_text())
        assets.write_text(text)

    @classmethod
    def load(cls, directory: Path, params: dict[str, Any], vectors: np.ndarray | None = None) -> ScannIndex:
        """The index saved in ``directory``. Its asset paths are made absolute for ScaNN; one that leaves the
        directory (absolute, ``..``, a link out) is refused with a BundleError before ScaNN reads anything."""
        text = (directory / ASSETS).read_text()
        absolute = re.sub(
            r'asset_path: "([^"]*)"', lambda m: f'asset_path: "{inside(directory, m[1], "ScaNN asset_path")}"', text
        )
        searcher = scann.scann_ops_pybind.ScannSearcher(scann_pybind.ScannNumpy(str(directory), absolute), None)
        return cls(searcher, params)
