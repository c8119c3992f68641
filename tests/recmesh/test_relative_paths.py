"""A bundle given by a relative path loads and answers like the same bundle given by an absolute one (the README
writes `recmesh evaluate --bundle models/<version>`; ScaNN once failed on it with "File too short")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recmesh.pipeline import Model, load_model


def test_a_bundle_loads_from_a_relative_path(bundle_path: Path, model: Model, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(bundle_path.parent.parent)
    relative = Path(bundle_path.parent.name) / bundle_path.name
    loaded = load_model(relative)
    history = np.arange(3, dtype=np.int64)
    got, expected = loaded.recommend(history, 10, 50), model.recommend(history, 10, 50)
    assert loaded.manifest["index"]["backend"] == "scann"
    assert np.array_equal(got[0], expected[0]) and np.allclose(got[1], expected[1])
