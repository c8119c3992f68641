"""Every nearest-neighbour backend behind the AnnIndex protocol: exact at exhaustive settings, bundles that move,
a bundle trained with a non-default backend, and the batch-1 benchmark end to end on a tiny set."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from recmesh.index import BACKENDS, build_index, default_params, load_index, search_excluding
from recmesh.index.exact import ExactIndex

N, DIM, K = 1000, 16, 20

# Settings under which each backend must find exactly what a full scan finds.
EXHAUSTIVE: dict[str, dict[str, Any]] = {
    "exact": {},
    "scann": {"mode": "brute_force", "k": K},
    "scann_tree": {
        "mode": "tree_ah",
        "k": K,
        "num_leaves": 10,
        "num_leaves_to_search": 10,
        "training_sample_size": N,
        "dims_per_block": 2,
        "anisotropic_quantization_threshold": 0.2,
        "reorder": N,
    },
    "faiss_hnsw": {"M": 16, "ef_construction": 100, "ef_search": N},
    "faiss_ivf": {"nlist": 8, "codec": "Flat", "nprobe": 8, "k_factor": 1, "training_sample_size": N},
    "faiss_ivf_pq": {"nlist": 8, "codec": "PQ8x4fs", "nprobe": 8, "k_factor": N // K, "training_sample_size": N},
    "hnswlib": {"M": 16, "ef_construction": 100, "ef": N, "seed": 1},
}


def backend_of(case: str) -> str:
    return {"scann_tree": "scann", "faiss_ivf_pq": "faiss_ivf"}.get(case, case)


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    rng = np.random.default_rng(0)  # clustered unit vectors, as item vectors are
    centres = rng.standard_normal((20, DIM))
    x = (centres[rng.integers(0, 20, N)] + 0.7 * rng.standard_normal((N, DIM))).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def queries() -> np.ndarray:
    q = np.random.default_rng(1).standard_normal((25, DIM)).astype(np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def test_registry_lists_every_backend_with_scann_first():
    assert BACKENDS[0] == "scann"
    assert set(BACKENDS) == {"scann", "exact", "faiss_hnsw", "faiss_ivf", "hnswlib"}


@pytest.mark.parametrize("case", list(EXHAUSTIVE))
def test_backend_at_exhaustive_settings_returns_exact_top_k(case: str, vectors: np.ndarray, queries: np.ndarray):
    index = build_index(backend_of(case), vectors, EXHAUSTIVE[case])
    assert index.backend == backend_of(case)
    exact = ExactIndex(vectors)
    for q in queries:
        ids, scores = index.search(q, K)
        want_ids, want_scores = exact.search(q, K)
        assert ids.dtype == np.int64 and len(ids) == K
        assert set(ids.tolist()) == set(want_ids.tolist())
        np.testing.assert_allclose(scores, want_scores, atol=1e-4)  # best first, inner products


@pytest.mark.parametrize("case", list(EXHAUSTIVE))
def test_saved_index_loads_after_its_directory_moves(
    case: str, vectors: np.ndarray, queries: np.ndarray, tmp_path: Path
):
    backend = backend_of(case)
    index = build_index(backend, vectors, EXHAUSTIVE[case])
    index.save(tmp_path / "a" / "index")
    shutil.move(tmp_path / "a", tmp_path / "b")
    loaded = load_index(backend, tmp_path / "b" / "index", index.params, vectors)
    assert loaded.backend == backend
    for q in queries[:5]:
        ids, scores = loaded.search(q, K)
        want_ids, want_scores = index.search(q, K)
        np.testing.assert_array_equal(ids, want_ids)
        np.testing.assert_allclose(scores, want_scores, atol=1e-5)


@pytest.mark.parametrize("backend", ["faiss_hnsw", "faiss_ivf", "hnswlib"])
def test_default_params_search_well_and_are_recorded(backend: str, vectors: np.ndarray):
    index = build_index(backend, vectors)  # no params: the backend's defaults for n items
    assert index.params == default_params(backend, N)
    rng = np.random.default_rng(2)  # session-like queries: the normalised sum of a few item vectors
    sessions = vectors[rng.integers(0, N, (25, 3))].sum(axis=1)
    exact = ExactIndex(vectors)
    queries = sessions / np.linalg.norm(sessions, axis=1, keepdims=True)
    overlap = [np.intersect1d(index.search(q, K)[0], exact.search(q, K)[0]).size / K for q in queries]
    assert np.mean(overlap) >= 0.9 and min(overlap) >= 0.7


@pytest.mark.parametrize("backend", ["faiss_hnsw", "faiss_ivf", "hnswlib", "scann"])
def test_asking_for_more_than_the_catalogue_returns_all_of_it(backend: str, vectors: np.ndarray):
    small = vectors[:50]
    params = {**default_params(backend, 50), "nlist": 4, "nprobe": 4} if backend == "faiss_ivf" else None
    ids, _ = search_excluding(build_index(backend, small, params), small[0], 80, np.array([0]), len(small))
    assert 0 not in ids
    assert len(ids) >= 45  # everything but the excluded row, give or take what a graph leaves unreachable


def test_default_params_scale_with_the_catalogue():
    for n in (10_000, 100_000, 1_000_000):
        ivf = default_params("faiss_ivf", n)
        assert 1 <= ivf["nprobe"] <= ivf["nlist"]
        assert default_params("hnswlib", n)["ef"] >= 200 and default_params("faiss_hnsw", n)["ef_search"] >= 200
    small, large = default_params("scann", 10_000), default_params("scann", 1_000_000)
    assert small["mode"] == "brute_force" and large["mode"] == "tree_ah"
    assert large["num_leaves_to_search"] <= large["num_leaves"]
    assert default_params("hnswlib", 1_000_000)["ef"] >= default_params("hnswlib", 100_000)["ef"]


def test_unknown_backend_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="faiss_hnsw"):
        build_index("annoy", np.zeros((3, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="annoy"):
        load_index("annoy", Path("."), {}, np.zeros((3, 4), dtype=np.float32))


def test_bundle_trained_with_hnswlib_records_and_loads_its_backend(tmp_path: Path):
    from recmesh.data.synth import generate
    from recmesh.pipeline import load_model
    from recmesh.train.embeddings import Word2VecParams
    from recmesh.train.run import TrainParams, train_bundle

    params = TrainParams(word2vec=Word2VecParams(epochs=5), index_backend="hnswlib")
    path = train_bundle(generate(n_items=400, n_users=1200, seed=3), tmp_path / "models", params, progress=False)
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["index"]["backend"] == "hnswlib"
    assert manifest["index"]["params"]["ef"] >= 200

    moved = shutil.move(path, tmp_path / "elsewhere")
    model = load_model(Path(moved))
    assert model.index.backend == "hnswlib"
    history = np.array([0, 1, 2])
    query = model.query(history)
    ids, _ = model.retrieve(query, 50, history)
    want, _ = search_excluding(ExactIndex(np.asarray(model.space.context_vectors)), query, 50, history, model.n_items)
    assert not np.isin(ids, history).any()
    assert np.intersect1d(ids, want).size >= 45  # a graph's recall, on vectors word2vec trains non-deterministically
    assert len(model.recommend(history, 10, 50)[0]) == 10


def test_benchmark_writes_report_and_plot_on_a_tiny_set(tmp_path: Path):
    from bench.ann import main

    out = tmp_path / "ann.json"
    assert (
        main(
            [
                "--items",
                "3000",
                "--dim",
                "16",
                "--queries",
                "60",
                "--repeats",
                "1",
                "--json",
                str(out),
                "--png",
                str(tmp_path / "ann.png"),
            ]
        )
        == 0
    )
    report = json.loads(out.read_text())
    assert {"hardware", "items", "dim", "queries", "points", "default"} <= set(report)
    assert report["items"] == 3000 and report["dim"] == 16
    libraries = {p["library"] for p in report["points"]}
    assert {"scann", "faiss hnsw", "hnswlib", "faiss ivf-flat", "exact (numpy)"} <= libraries
    for p in report["points"]:
        assert {
            "library",
            "params",
            "recall@10",
            "recall@100",
            "p50_ms",
            "p99_ms",
            "qps",
            "build_s",
            "memory_mb",
        } <= set(p)
        assert 0.0 <= p["recall@100"] <= 1.0 and p["p50_ms"] <= p["p99_ms"]
    assert next(p for p in report["points"] if p["library"] == "exact (numpy)")["recall@100"] == 1.0
    assert report["default"]["library"].startswith("scann")  # 3k items: the candidate stage's brute force
    assert (tmp_path / "ann.png").stat().st_size > 10_000
