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


def test_train_with_an_items_file_seals_its_catalogue_into_the_bundle(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    from recmesh import bundle
    from recmesh.catalog.files import load_catalog, read_items
    from recmesh.data.synth import generate, item_attributes
    from recmesh.pipeline import load_model

    data = tmp_path / "synth.txt"
    assert main(["data", "synth", "--out", str(data), "--items", "600", "--users", "1200", "--seed", "2"]) == 0
    written = read_items(tmp_path / "synth.items.jsonl")  # next to the sessions
    assert written == item_attributes(generate(n_items=600, n_users=1200, seed=2))
    # a CSV of some of the trained items plus one the sessions never saw; the other trained items have none
    items = tmp_path / "items.csv"
    rows = [f"{item},{a['category']},{a['price']}" for item, a in written[:100]]
    items.write_text("item_id,category,price\n" + "\n".join([*rows, "brand_new,shoes,19.99"]) + "\n")
    capsys.readouterr()
    args = ["train", "--data", str(data), "--items", str(items), "--out", str(tmp_path / "models"), "--epochs", "5"]
    assert main(args) == 0
    path = Path(capsys.readouterr().out.strip().splitlines()[-1])

    manifest = bundle.load_manifest(path)  # verified: the catalogue is listed and hashed
    assert "catalog.jsonl" in manifest["files"]
    assert manifest["catalog"] == {"items": 101, "attributes": {"category": "string", "price": "number"}}
    catalog = load_catalog(path)
    assert catalog is not None and len(catalog) == 101
    assert catalog.get("brand_new") == {"category": "shoes", "price": 19.99}
    model = load_model(path)
    assert "brand_new" not in model.index_of and "i0" in model.index_of  # a new item without a vector
    with (path / "catalog.jsonl").open("a") as f:
        f.write('{"item_id": "sneaked_in"}\n')
    with pytest.raises(bundle.BundleError, match="catalog.jsonl does not match its sha256"):
        load_model(path)


def test_a_bundle_trained_on_generated_data_carries_the_synthetic_attributes(bundle_path: Path):
    from recmesh import bundle
    from recmesh.catalog.files import load_catalog
    from recmesh.data.synth import generate, item_attributes

    catalog = load_catalog(bundle_path)  # conftest's bundle: train_bundle(generate(2000, 3000, seed=1))
    assert catalog is not None
    assert list(catalog.docs()) == item_attributes(generate(n_items=2000, n_users=3000, seed=1))
    assert bundle.load_manifest(bundle_path)["catalog"]["items"] == 2000


def test_an_older_bundle_without_a_catalogue_still_loads(bundle_path: Path, tmp_path: Path):
    import shutil

    from recmesh import bundle
    from recmesh.catalog.files import load_catalog
    from recmesh.pipeline import load_model

    old = Path(shutil.copytree(bundle_path, tmp_path / bundle_path.name))
    (old / "catalog.jsonl").unlink()
    manifest = bundle.load_manifest(old, verify=False)
    del manifest["catalog"]
    bundle.seal(old, manifest)
    assert load_catalog(old) is None
    assert load_model(old).version == bundle_path.name
