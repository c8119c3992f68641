"""Candidate sources, recipes and their merge, the tables an example must not see, and the ranker's features."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from recmesh.pipeline import Model
from recmesh.rank.features import (
    BASE_FEATURES,
    SOURCE_FEATURES,
    ItemSpace,
    base_features,
    feature_names,
    features,
    with_crosses,
)
from recmesh.rank.model import Ranker, fit_ranker
from recmesh.rank.tables import OwnCounts, build_tables
from recmesh.sources import Session, top_k
from recmesh.sources.covisit import CovisitParams, CovisitSource, neighbour_scores, scores_at
from recmesh.sources.given import GivenSource
from recmesh.sources.popular import PopularSource
from recmesh.sources.recipe import MAX_COUNT, Recipe, RecipeError, gather, parse_recipe
from tests.helpers import sample_sessions

NONE = np.zeros(0, dtype=np.int64)


def rows(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


# Six items; 0 -> 1 three times, 0 -> 2 once, 3 -> 1 and 3 -> 4 once each.
SEQUENCES = [rows(0, 1), rows(0, 1), rows(0, 1), rows(0, 2), rows(3, 1), rows(3, 4), rows(5)]
TABLES = build_tables(SEQUENCES, 6)


def dense(csr, n: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    out = np.zeros((n, n))
    for r in range(n):
        cols, counts = csr.row(r)
        out[r, cols] = counts
    return out


# ------------------------------------------------------------------------------------------------ sources


def test_covisit_scores_are_the_documented_sum():
    params = CovisitParams(recent=2, decay=0.5, transition_weight=2.0, norm=0.5)
    cols, scores = neighbour_scores(TABLES, rows(3, 0), params)  # 0 is the last item, 3 the one before
    trans, cov = dense(TABLES.transitions, 6), dense(TABLES.covisits, 6)
    want = np.zeros(6)
    for j, item in enumerate((0, 3)):
        out = trans[item].sum() + cov[item].sum()
        want += 0.5**j * (2.0 * trans[item] + cov[item]) / (1.0 + out) ** 0.5
    assert cols.tolist() == np.flatnonzero(want).tolist()
    np.testing.assert_allclose(scores, want[cols])


def test_covisit_source_orders_by_score_and_skips_the_exclusions():
    source = CovisitSource(TABLES, CovisitParams(recent=1))
    got, scores = source.candidates(Session(rows(0), None, rows(0)), 10)
    assert got.tolist() == [1, 2]  # 1 followed 0 three times, 2 once
    assert scores.dtype == np.float32 and scores[0] > scores[1]
    assert source.candidates(Session(rows(0), None, rows(0, 1)), 10)[0].tolist() == [2]
    assert source.candidates(Session(rows(0), None, rows(0)), 1)[0].tolist() == [1]
    assert source.candidates(Session(NONE, None), 10)[0].size == 0  # no session, no neighbours


def test_popular_source_is_most_popular_first_without_exclusions():
    source = PopularSource(TABLES.popularity)
    got, scores = source.candidates(Session(NONE, None, rows(1)), 3)
    assert got.tolist() == [0, 3, 2]  # 1 (4 times) is excluded; 0 (4), 3 (2); then ties by row: 2
    assert scores[0] == pytest.approx(1.0)


def test_given_source_keeps_the_callers_order_once_each_minus_exclusions():
    got, scores = GivenSource().candidates(Session(NONE, None, rows(5), rows(4, 2, 4, 5, 1)), 10)
    assert got.tolist() == [4, 2, 1] and scores.tolist() == [1.0, 1.0, 1.0]
    assert GivenSource().candidates(Session(NONE, None, given=rows(4, 2, 1)), 2)[0].tolist() == [4, 2]


def test_ann_source_is_the_models_retrieval(model: Model):
    for session in sample_sessions(10):
        history = model.lookup(session)[0]
        query, exclude = model.query(history), np.unique(history)
        got = model.sources["ann"].candidates(Session(history, query, exclude), 40)
        want = model.retrieve(query, 40, exclude)
        assert got[0].tolist() == want[0].tolist() and got[1].tobytes() == want[1].tobytes()


# ------------------------------------------------------------------------------------------------ recipes


def test_parse_recipe_and_its_text_form():
    recipe = parse_recipe(" ann:100, covisit:50 ,popular:20")
    assert recipe.parts == (("ann", 100), ("covisit", 50), ("popular", 20))
    assert str(recipe) == "ann:100,covisit:50,popular:20" and recipe.total == 170


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("ann:10,bogus:5", "unknown source 'bogus': valid sources are ann, covisit, popular, given"),
        ("ann:0", "must be >= 1"),
        (f"ann:{MAX_COUNT + 1}", f"<= {MAX_COUNT}"),
        (f"ann:{MAX_COUNT},covisit:1", f"at most {MAX_COUNT}"),
        ("ann:10,ann:5", "twice"),
        ("ann", "not source:count"),
        ("ann:ten", "not source:count"),
    ],
)
def test_bad_recipes_say_what_is_wrong(text: str, message: str):
    with pytest.raises(RecipeError, match=message):
        parse_recipe(text)


def test_a_source_the_bundle_lacks_is_refused_naming_what_it_has():
    with pytest.raises(RecipeError, match="'covisit' is not in this bundle \\(it has ann, popular, given\\)"):
        parse_recipe("ann:10,covisit:10", ["ann", "popular", "given"])


def test_gather_merges_in_recipe_order_with_the_first_finders_score():
    sources = {"covisit": CovisitSource(TABLES, CovisitParams(recent=1)), "popular": PopularSource(TABLES.popularity)}
    session = Session(rows(0), None, rows(0))
    pool = gather(sources, Recipe.of([("covisit", 5), ("popular", 3)]), session)
    covisit_rows, covisit_scores = sources["covisit"].candidates(session, 5)
    assert pool.rows.tolist() == [1, 2, 3]  # covisit's 1, 2; popular's 1 (again), 3, 2 (again): adds 3
    assert pool.scores[:2].tobytes() == covisit_scores.tobytes()
    assert pool.scores[2] == sources["popular"].candidates(session, 3)[1][1]
    assert pool.found_by.tolist() == [[True, True], [True, True], [False, True]]
    assert pool.per_source["covisit"].tolist() == covisit_rows.tolist()


def test_model_default_recipe_comes_from_the_manifest(model: Model):
    assert str(model.default_recipe) == model.manifest["sources"]["default_recipe"]
    assert set(model.sources) == {"ann", "covisit", "slist", "popular", "given"}


# ------------------------------------------------------------------------------------------------ own counts


def test_own_counts_are_what_the_sequence_added_from_its_position_on():
    sequence = rows(0, 1, 2, 3, 1, 4, 0)
    other = rows(2, 3, 4)
    full = build_tables([sequence, other], 5)
    for position in range(1, sequence.size):
        prefix = build_tables([sequence[:position], other], 5)
        own = OwnCounts.of(sequence, position)
        for name in ("transitions", "covisits"):
            taken = dense(getattr(full, name), 5)
            for r, entries in getattr(own, name).items():
                for c, n in entries.items():
                    taken[r, c] -= n
            np.testing.assert_array_equal(taken, dense(getattr(prefix, name), 5))
        pop = full.popularity.copy()
        for c, n in own.popularity.items():
            pop[c] -= n
        np.testing.assert_array_equal(pop, prefix.popularity)
        history = sequence[:position]
        got = neighbour_scores(full, history, CovisitParams(), own)
        want = neighbour_scores(prefix, history, CovisitParams())
        assert got[0].tolist() == want[0].tolist()
        np.testing.assert_allclose(got[1], want[1], rtol=1e-6)  # float32 counts times float64 weights


# ------------------------------------------------------------------------------------------------ features


def test_features_by_name_equal_base_features_and_add_the_sources_view(model: Model):
    space = model.space
    for session in sample_sessions(20):
        history = model.lookup(session)[0]
        query = model.query(history)
        pool = model.candidates(history, parse_recipe("ann:30,covisit:30,popular:5"))
        cands, scores = pool.rows, pool.scores
        base = base_features(space, history, cands, scores, query)
        assert features(space, history, cands, scores, query, BASE_FEATURES).tobytes() == base.tobytes()
        x = features(space, history, cands, scores, query, SOURCE_FEATURES)
        column = dict(zip(SOURCE_FEATURES, x.T, strict=True))
        np.testing.assert_allclose(column["sim_query"], space.context_vectors[cands] @ query, rtol=1e-6)
        cols, covisit = neighbour_scores(space.tables, history, space.covisit)
        want = np.zeros(cands.size)
        want[np.isin(cands, cols)] = covisit[np.searchsorted(cols, cands[np.isin(cands, cols)])]
        np.testing.assert_allclose(column["log_covisit_score"], np.log1p(want), rtol=1e-6)
        assert column["has_covisit"].tolist() == (want > 0).astype(np.float32).tolist()
        for name in set(SOURCE_FEATURES) & set(BASE_FEATURES):
            assert column[name].tobytes() == base[:, BASE_FEATURES.index(name)].tobytes()


def test_features_with_own_counts_equal_features_over_the_prefix_tables(model: Model):
    sequence = model.lookup(sample_sessions(1)[0])[0]
    other = [model.lookup(s)[0] for s in sample_sessions(200)[1:]]
    full = ItemSpace(model.space.vectors, model.space.context_vectors, build_tables([sequence, *other], model.n_items))
    for position in range(1, sequence.size):
        prefix_tables = build_tables([sequence[:position], *other], model.n_items)
        prefix = ItemSpace(model.space.vectors, model.space.context_vectors, prefix_tables)
        history = sequence[:position]
        cands = np.setdiff1d(np.arange(model.n_items), history)[:300]
        scores = np.zeros(cands.size, dtype=np.float32)
        query = model.query(history)
        got = features(full, history, cands, scores, query, SOURCE_FEATURES, OwnCounts.of(sequence, position))
        want = features(prefix, history, cands, scores, query, SOURCE_FEATURES)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_crosses_are_every_pairwise_product_in_name_order():
    x = np.random.default_rng(0).standard_normal((4, len(SOURCE_FEATURES))).astype(np.float32)
    crossed = with_crosses(x)
    names = feature_names(SOURCE_FEATURES)
    assert crossed.shape == (4, len(names))
    i = names.index("sim_query*has_covisit")
    np.testing.assert_array_equal(crossed[:, i], x[:, 0] * x[:, SOURCE_FEATURES.index("has_covisit")])


def test_ranker_keeps_its_feature_names_and_refuses_unknown_ones(tmp_path: Path):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((400, len(SOURCE_FEATURES))).astype(np.float32)
    y = (x[:, 0] + 0.3 * rng.standard_normal(400) > 0).astype(np.int8)
    ranker = fit_ranker(x, y, names=SOURCE_FEATURES)
    ranker.save(tmp_path / "ranker.json")
    loaded = Ranker.load(tmp_path / "ranker.json")
    assert loaded.names == SOURCE_FEATURES
    assert loaded.probabilities(x).tobytes() == ranker.probabilities(x).tobytes()
    doc = json.loads((tmp_path / "ranker.json").read_text())
    doc["base_features"] = [*SOURCE_FEATURES[:-1], "what_is_this"]
    (tmp_path / "ranker.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="other features"):
        Ranker.load(tmp_path / "ranker.json")


def test_the_served_covisit_source_scores_as_the_reference_does(model: Model):
    source = model.sources["covisit"]
    for session in sample_sessions(40):
        history = model.lookup(session)[0]
        exclude = np.unique(history)
        got_rows, got_scores = source.candidates(Session(history, None, exclude), 30)
        cols, scores = neighbour_scores(model.space.tables, history, model.space.covisit)
        want_rows, want_scores = top_k(cols, scores, 30, exclude)
        # the same scores in the same order; rows may differ only among equal scores (rounding breaks ties)
        np.testing.assert_allclose(got_scores, want_scores, rtol=1e-6)
        np.testing.assert_allclose(scores[np.searchsorted(cols, got_rows)], got_scores, rtol=1e-6)


def test_the_rankers_covisit_feature_is_the_sources_score(model: Model):
    for session in sample_sessions(20):
        history = model.lookup(session)[0]
        pool = model.candidates(history, parse_recipe("ann:40,covisit:40"))
        x = features(model.space, history, pool.rows, pool.scores, model.query(history), SOURCE_FEATURES)
        cols, scores = neighbour_scores(model.space.tables, history, model.space.covisit)
        want = np.log1p(scores_at(cols, scores, pool.rows))
        np.testing.assert_allclose(x[:, SOURCE_FEATURES.index("log_covisit_score")], want, rtol=1e-5, atol=1e-7)


def test_top_k_equals_one_stable_sort_of_everything_ties_included():
    """top_k skips sorting rows that cannot make the top k (partition first, above PARTITION_ABOVE rows): the answer
    is the one stable sort of all scores gives, ties by row, for any k."""
    rng = np.random.default_rng(7)
    for n in (10, 600, 5000):
        rows = np.sort(rng.choice(50_000, n, replace=False))
        for scores in (rng.random(n), np.round(rng.random(n) * 4)):  # the second: hundreds of ties
            for k in (0, 1, 50, n - 1, n, n + 3):
                order = np.argsort(-scores, kind="stable")[:k]
                got_rows, got_scores = top_k(rows, scores, k, np.zeros(0, dtype=np.int64))
                np.testing.assert_array_equal(got_rows, rows[order])
                np.testing.assert_array_equal(got_scores, scores[order].astype(np.float32))
