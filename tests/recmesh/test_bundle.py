"""Bundles: round trip, and refusal of tampered, partial or foreign bundles."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from recmesh import bundle
from recmesh.pipeline import load_model


@pytest.fixture()
def bundle_copy(bundle_path: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(bundle_path, tmp_path / bundle_path.name))


def test_bundle_round_trip_gives_the_same_recommendations_after_a_move(model, bundle_copy: Path):
    moved = load_model(bundle_copy)  # a different directory: the ScaNN asset paths must follow
    history = np.array([1, 2, 3])
    assert moved.version == model.version
    for a, b in zip(moved.recommend(history, 10, 100), model.recommend(history, 10, 100), strict=True):
        np.testing.assert_array_equal(a, b)


def test_manifest_records_version_data_params_metrics_and_hashes(bundle_path: Path):
    manifest = bundle.load_manifest(bundle_path)
    assert manifest["version"] == bundle_path.name
    assert len(manifest["dataset"]["fingerprint"]) == 64
    assert manifest["params"]["word2vec"]["dim"] == manifest["dim"]
    assert 0.5 < manifest["metrics"]["ranker_auc"] <= 1.0
    files = {p.relative_to(bundle_path).as_posix() for p in bundle_path.rglob("*") if p.is_file()}
    assert set(manifest["files"]) == files - {"manifest.json"}


def test_tampered_file_is_refused(bundle_copy: Path):
    vectors = bundle_copy / "vectors.npy"
    data = bytearray(vectors.read_bytes())
    data[-1] ^= 0xFF
    vectors.write_bytes(bytes(data))
    with pytest.raises(bundle.BundleError, match="vectors.npy does not match its sha256"):
        load_model(bundle_copy)


def test_partial_bundle_is_refused(bundle_copy: Path):
    (bundle_copy / "ranker.json").unlink()
    with pytest.raises(bundle.BundleError, match="partial bundle, missing ranker.json"):
        load_model(bundle_copy)


def test_bundle_without_manifest_is_not_listed_nor_loaded(bundle_copy: Path):
    (bundle_copy / "manifest.json").unlink()
    assert bundle.list_versions(bundle_copy.parent) == []
    with pytest.raises(bundle.BundleError, match="not a bundle"):
        load_model(bundle_copy)


def test_extra_file_is_refused(bundle_copy: Path):
    (bundle_copy / "evil.npy").write_bytes(b"x")
    with pytest.raises(bundle.BundleError, match="not in the manifest"):
        load_model(bundle_copy)


def test_unknown_format_is_refused(bundle_copy: Path):
    path = bundle_copy / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["format"] = 99
    path.write_text(json.dumps(manifest))
    with pytest.raises(bundle.BundleError, match="format 99"):
        load_model(bundle_copy)


def test_resolve_picks_the_newest_and_names_a_missing_version(models_dir: Path, bundle_path: Path):
    assert bundle.resolve(models_dir) == bundle_path
    with pytest.raises(bundle.BundleError, match="'nope' not in"):
        bundle.resolve(models_dir, "nope")


def test_arrays_load_without_pickle(bundle_path: Path):
    for name in ("vectors.npy", "context_vectors.npy"):
        array = np.load(bundle_path / name, allow_pickle=False)
        assert array.dtype == np.float32
