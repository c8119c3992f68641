"""A small end-to-end run of train + evaluate, through the CLI a user types."""

import json
from pathlib import Path

import numpy as np
import pytest

from recmesh.cli import main
from recmesh.index.exact import ExactIndex
from recmesh.index.scann_index import ScannIndex, default_params
from recmesh.train.embeddings import Word2VecParams, train_item_vectors


def test_cli_train_then_evaluate_on_synthetic_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    data = tmp_path / "synth.txt"
    assert main(["data", "synth", "--out", str(data), "--items", "1500", "--users", "2500", "--seed", "3"]) == 0
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "models"), "--epochs", "10"]) == 0
    bundle_dir = capsys.readouterr().out.strip().splitlines()[-1]
    report_path = tmp_path / "eval.json"
    assert main(["evaluate", "--bundle", bundle_dir, "--data", str(data), "--json", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert set(report["systems"]) == {"popularity", "transition", "ann", "pipeline"}
    assert report["users"] == 2500 and report["same_data_as_training"]
    for metrics in report["systems"].values():
        assert set(metrics) == {"hr@10", "ndcg@10", "hr@20", "ndcg@20", "mrr"}
    systems = report["systems"]
    # the synthetic data has real sequential signal: learned systems beat popularity by far
    assert systems["pipeline"]["hr@10"] > 2 * systems["popularity"]["hr@10"]
    assert systems["ann"]["hr@10"] > systems["popularity"]["hr@10"]
    assert 0 < report["candidate_recall@200"] <= 1 and report["ann_recall_vs_exact"] > 0.99
    for key in ("ranker_auc", "train_seconds", "dataset", "items"):
        assert key in report


def test_evaluate_refuses_data_with_items_the_bundle_does_not_know(
    bundle_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    other = tmp_path / "other.txt"
    other.write_text("u1 zz1 zz2 zz3\n")
    assert main(["evaluate", "--bundle", str(bundle_path), "--data", str(other)]) == 1  # runtime error
    assert "not in the bundle" in capsys.readouterr().err


def test_rare_items_still_get_a_vector():
    sequences = [["a", "b", "c"]] * 20 + [["a", "rare"]]
    vectors = train_item_vectors(
        sequences, ["a", "b", "c", "rare", "never_seen"], Word2VecParams(dim=8, min_count=2, epochs=2, workers=1)
    )
    assert vectors.trained.tolist() == [True, True, True, False, False]
    np.testing.assert_allclose(vectors.vectors[3], vectors.vectors[0])  # borrowed from its only neighbour "a"
    assert not vectors.vectors[4].any()


@pytest.mark.parametrize("n", [500, 25_000])
def test_scann_matches_exact_search_and_survives_save_load(n: int, tmp_path: Path):
    rng = np.random.default_rng(0)  # clustered, as item vectors are
    centres = rng.standard_normal((64, 16))
    vectors = (centres[rng.integers(0, 64, n)] + 0.5 * rng.standard_normal((n, 16))).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    params = default_params(n, k=50)
    assert params["mode"] == ("brute_force" if n < 20_000 else "tree_ah")
    index = ScannIndex.build(vectors, params)
    index.save(tmp_path / "index")
    loaded = ScannIndex.load(tmp_path / "index", params)
    exact = ExactIndex(vectors)
    queries = vectors[:20]
    overlap = [np.intersect1d(loaded.search(q, 50)[0], exact.search(q, 50)[0]).size / 50 for q in queries]
    assert np.mean(overlap) > 0.9
    np.testing.assert_array_equal(loaded.search(queries[0], 10)[0], index.search(queries[0], 10)[0])
