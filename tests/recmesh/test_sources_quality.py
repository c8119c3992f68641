"""The ranker earns its place: on validation targets the ranked mixed pool beats ANN alone and the best single
source's own order (synthetic data, fast; beauty when the data set is present, slow). The bundles here learn
nothing from validation targets (valid_examples=False), so the comparison is on targets no part has seen."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recmesh.data.load import load_dataset
from recmesh.data.sessions import Dataset
from recmesh.data.synth import generate
from recmesh.evaluate.metrics import summarize
from recmesh.evaluate.protocol import leave_one_out
from recmesh.evaluate.run import rank_with_head
from recmesh.pipeline import MAX_SESSION, Model, load_model
from recmesh.sources import Session
from recmesh.train.embeddings import Word2VecParams
from recmesh.train.run import TrainParams, train_bundle
from tests.conftest import DATA_DIR


def validation_hr10(model: Model, dataset: Dataset, users: int) -> dict[str, float]:
    """HR@10 on validation targets of: each source alone in its own order, and the pipeline (default recipe,
    ranked). Every system's list is followed by the rest of the catalogue by exact similarity."""
    split = leave_one_out(dataset, model.item_ids)
    recipe = model.default_recipe
    singles = [name for name in ("ann", "covisit", "slist", "popular") if name in model.sources]
    ranks: dict[str, list[int]] = {name: [] for name in (*singles, "pipeline")}
    for history, target in list(zip(split.valid_history, split.valid_target, strict=True))[:users]:
        recent, excluded = history[-MAX_SESSION:], np.unique(history)
        query = model.query(recent)
        exact = model.space.context_vectors @ query
        session = Session(recent, query, excluded)
        for name in singles:
            rows, _ = model.sources[name].candidates(session, 200)
            ranks[name].append(rank_with_head(rows, exact, int(target), excluded))
        pool = model.candidates(recent, recipe)
        ranked, _ = model.rank(recent, pool.rows, pool.scores)
        ranks["pipeline"].append(rank_with_head(ranked, exact, int(target), excluded))
    return {name: summarize(np.array(r))["hr@10"] for name, r in ranks.items()}


def test_pipeline_beats_ann_alone_and_every_single_source_on_synthetic_validation(tmp_path: Path):
    dataset = generate(n_items=2000, n_users=4000, seed=3)
    params = TrainParams(word2vec=Word2VecParams(epochs=10), valid_examples=False)
    model = load_model(train_bundle(dataset, tmp_path, params, progress=False))
    hr = validation_hr10(model, dataset, users=3000)
    # Measured: pipeline 0.526, covisit 0.499, ann 0.289, popular 0.048 (word2vec threads make it vary a little:
    # +-0.01 between runs); the margins asked leave room for that.
    assert hr["pipeline"] > max(v for k, v in hr.items() if k != "pipeline") + 0.01, hr
    assert hr["pipeline"] > 1.5 * hr["ann"], hr


@pytest.mark.slow
@pytest.mark.timeout(600)  # training on beauty fits word2vec and the slist closed form twice: 2-4 minutes
@pytest.mark.skipif(not (DATA_DIR / "beauty.txt").is_file(), reason="beauty.txt not in the shared data directory")
def test_pipeline_beats_ann_alone_and_every_single_source_on_beauty_validation(tmp_path: Path):
    dataset = load_dataset(str(DATA_DIR / "beauty.txt"))
    model = load_model(train_bundle(dataset, tmp_path, TrainParams(valid_examples=False), progress=False))
    hr = validation_hr10(model, dataset, users=5000)
    # Measured twice: pipeline 0.0582 / 0.0568, covisit 0.0510, ann 0.0402 / 0.0412, popular 0.0144.
    assert hr["pipeline"] > max(v for k, v in hr.items() if k != "pipeline") + 0.003, hr
