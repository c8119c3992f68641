"""The slist source: its closed form equals a direct solve, its sparse rows are the dense model's largest weights,
the source sums them as documented and honours exclusions and filters, the ranker's feature is the source's score,
and a bundle without it (trained without, or over MAX_ITEMS items) loads, serves and refuses a recipe naming it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from recmesh.data.synth import generate
from recmesh.pipeline import SLIST_FILE, Model, load_model
from recmesh.rank.features import SLIST_FEATURES, SOURCE_FEATURES, features
from recmesh.sources import Session, slist
from recmesh.sources.recipe import RecipeError, gather, parse_recipe
from recmesh.sources.slist import (
    SlistParams,
    SlistSource,
    closed_form,
    fit_slist,
    gram_parts,
    scores_and_ranks,
    sparsify,
)
from recmesh.train.embeddings import Word2VecParams
from recmesh.train.run import TrainParams, train_bundle
from tests.helpers import sample_sessions

SEQUENCES = [np.array(s, dtype=np.int64) for s in ([0, 1, 2, 3], [1, 2, 4], [0, 2, 3, 5, 1], [4, 5], [3], [2, 2, 6])]
N = 7


def explicit_parts(params: SlistParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """X, S and T written out row by row, straight from the docstring's definitions."""
    x = np.zeros((len(SEQUENCES), N))
    s_rows, t_rows = [], []
    for u, seq in enumerate(SEQUENCES):
        x[u, seq] = 1.0
        for t in range(1, seq.size):
            s, target = np.zeros(N), np.zeros(N)
            for gap in range(1, min(params.window, t) + 1):
                s[seq[t - gap]] += params.source_decay ** (gap - 1)
            target[seq[t]] = 1.0
            s_rows.append(s)
            t_rows.append(target)
    return x, np.array(s_rows), np.array(t_rows)


@pytest.mark.parametrize("params", [SlistParams(), SlistParams(alpha=0.2, l2=3.0, window=2, source_decay=0.7)])
def test_the_closed_form_equals_a_direct_solve(params: SlistParams):
    x, s, t = explicit_parts(params)
    xtx, sts, stt = gram_parts(SEQUENCES, N, params)
    np.testing.assert_allclose(xtx.toarray(), x.T @ x)
    np.testing.assert_allclose(sts.toarray(), s.T @ s)
    np.testing.assert_allclose(stt.toarray(), s.T @ t)
    a = params.alpha
    want = np.linalg.solve(a * x.T @ x + (1 - a) * s.T @ s + params.l2 * np.eye(N), a * x.T @ x + (1 - a) * s.T @ t)
    np.fill_diagonal(want, 0.0)
    np.testing.assert_allclose(closed_form(xtx, sts, stt, a, params.l2, np.float64), want, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(closed_form(xtx, sts, stt, a, params.l2), want, rtol=1e-3, atol=1e-6)  # float32


def test_sparsify_keeps_each_rows_largest_positive_weights():
    weights = np.random.default_rng(0).normal(size=(30, 30)).astype(np.float32)
    kept = sparsify(weights, 5)
    for row in range(30):
        cols, vals = kept.row(row)
        want = np.argsort(-weights[row])[:5]
        want = np.sort(want[weights[row, want] > 0])
        assert cols.tolist() == want.tolist()
        np.testing.assert_array_equal(vals, weights[row, cols])


def test_fit_slist_is_none_over_max_items(monkeypatch: pytest.MonkeyPatch):
    assert fit_slist(SEQUENCES, N) is not None
    monkeypatch.setattr(slist, "MAX_ITEMS", N - 1)
    assert fit_slist(SEQUENCES, N) is None


def test_the_source_sums_the_recent_rows_with_decay_and_skips_exclusions():
    params = SlistParams(l2=1.0, top=N, recent=3, decay=0.5)
    weights = fit_slist(SEQUENCES, N, params)
    assert weights is not None
    dense = sp.csr_matrix((weights.data, weights.indices, weights.indptr), shape=(N, N)).toarray().astype(np.float64)
    history = np.array([4, 0, 2, 3], dtype=np.int64)
    want = 1.0 * dense[3] + 0.5 * dense[2] + 0.25 * dense[0]  # the 3 most recent, the last first
    exclude = np.unique(history)
    rows, scores = SlistSource(weights, params).candidates(Session(history, None, exclude), N)
    assert not np.isin(rows, exclude).any()
    candidates = np.setdiff1d(np.flatnonzero(want > 0), exclude)
    assert sorted(rows.tolist()) == candidates.tolist()
    np.testing.assert_allclose(scores, want[rows], rtol=1e-6)
    assert (np.diff(scores) <= 0).all()
    at, ranks = scores_and_ranks(weights, history, params, rows)
    np.testing.assert_allclose(at, want[rows], rtol=1e-6)
    assert ranks.tolist() == list(range(1, rows.size + 1))  # distinct scores here: 1, 2, ...


def test_an_empty_session_or_k_zero_gives_nothing():
    weights = fit_slist(SEQUENCES, N)
    assert weights is not None
    source = SlistSource(weights)
    assert source.candidates(Session(np.zeros(0, dtype=np.int64), None), 10)[0].size == 0
    assert source.candidates(Session(np.array([0]), None), 0)[0].size == 0


# ------------------------------------------------------------------------------------------- on the test bundle


def test_the_test_bundle_has_the_slist_source_and_its_features(model: Model):
    assert "slist" in model.sources
    assert model.ranker.names == SLIST_FEATURES
    assert "slist" in model.default_recipe.names
    assert SLIST_FILE in model.manifest["files"]


@pytest.mark.parametrize("passing", [0.5, 0.05])
def test_the_source_honours_filters_and_fills_k_when_k_allowed_neighbours_exist(model: Model, passing: float):
    source = model.sources["slist"]
    rng = np.random.default_rng(3)
    allowed = rng.random(model.n_items) < passing
    for items in sample_sessions(20):
        history = model.lookup(items)[0][-50:]
        exclude = np.unique(history)
        everything, _ = source.candidates(Session(history, None, exclude), model.n_items)
        rows, scores = source.candidates(Session(history, None, exclude, allowed=allowed), 40)
        assert rows.dtype == np.int64 and scores.dtype == np.float32
        assert allowed[rows].all() and not np.isin(rows, exclude).any()
        reachable = everything[allowed[everything]]
        assert rows.size == min(40, reachable.size)
        assert rows.tolist() == reachable[:40].tolist()


def test_the_rankers_slist_feature_is_the_sources_score(model: Model):
    source = model.sources["slist"]
    for items in sample_sessions(20):
        history = model.lookup(items)[0][-50:]
        pool = model.candidates(history, parse_recipe("ann:40,slist:40"))
        x = features(model.space, history, pool.rows, pool.scores, model.query(history), SLIST_FEATURES)
        found, found_scores = source.candidates(Session(history, None, np.unique(history)), model.n_items)
        want = np.zeros(pool.rows.size)
        position = {row: i for i, row in enumerate(found.tolist())}
        for i, row in enumerate(pool.rows.tolist()):
            if row in position:
                want[i] = found_scores[position[row]]
        np.testing.assert_array_equal(x[:, SLIST_FEATURES.index("slist_score")], want.astype(np.float32))
        np.testing.assert_array_equal(x[:, SLIST_FEATURES.index("has_slist")], want > 0)


# ------------------------------------------------------------------------------- bundles without the source


@pytest.fixture(scope="module")
def without_slist(tmp_path_factory: pytest.TempPathFactory) -> Model:
    """A bundle trained with the slist source off, as a bundle from before it (or over MAX_ITEMS) is."""
    params = TrainParams(word2vec=Word2VecParams(epochs=5), slist=None, extra_folds=0)
    out = tmp_path_factory.mktemp("no-slist")
    return load_model(train_bundle(generate(n_items=400, n_users=800, seed=2), out, params, progress=False))


def test_a_bundle_without_slist_loads_serves_and_ranks_as_before(without_slist: Model):
    model = without_slist
    assert "slist" not in model.sources and model.space.slist is None
    assert SLIST_FILE not in model.manifest["files"] and "slist" not in model.manifest["sources"]
    assert model.ranker.names == SOURCE_FEATURES
    assert str(model.default_recipe) == TrainParams().recipe_without_slist
    rows, _ = model.recommend(np.array([1, 2, 3]), 10)
    assert rows.size == 10


def test_a_recipe_naming_slist_on_a_bundle_without_it_is_a_clear_error(without_slist: Model):
    with pytest.raises(RecipeError, match="'slist' is not in this bundle \\(it has ann, covisit, popular, given\\)"):
        without_slist.recipe("ann:10,slist:10")


def test_a_catalogue_over_max_items_gets_no_slist_and_a_default_recipe_without_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(slist, "MAX_ITEMS", 100)
    params = TrainParams(word2vec=Word2VecParams(epochs=5), extra_folds=0)
    model = load_model(train_bundle(generate(n_items=400, n_users=800, seed=2), tmp_path, params, progress=False))
    assert "slist" not in model.sources
    assert "slist" not in model.manifest["sources"]["default_recipe"]
    assert model.ranker.names == SOURCE_FEATURES
    pool = gather(model.sources, model.default_recipe, Session(np.array([1, 2]), model.query(np.array([1, 2]))))
    assert pool.rows.size > 0
