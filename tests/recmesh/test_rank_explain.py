"""Ranker explanations: the terms add up to the ranker's own logit, the largest come first, bad input is refused."""

import numpy as np
import pytest

from recmesh.rank.explain import explain, terms
from recmesh.rank.features import BASE_FEATURES, SOURCE_FEATURES, feature_names, with_crosses
from recmesh.rank.model import Ranker, fit_ranker


def _fitted(names: tuple[str, ...], seed: int = 0) -> tuple[Ranker, np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(2000, len(names))).astype(np.float32) * 2.0 + 1.0
    signal = base[:, 0] - 0.5 * base[:, 2] + 0.3 * base[:, 1] * base[:, 3]
    labels = (signal + rng.normal(size=base.shape[0]) > 1.0).astype(np.int64)
    return fit_ranker(base, labels, names=names), base[:300]


@pytest.fixture(scope="module")
def fitted() -> tuple[Ranker, np.ndarray]:
    return _fitted(BASE_FEATURES)


@pytest.mark.parametrize("names", [BASE_FEATURES, SOURCE_FEATURES])
def test_intercept_contributions_and_other_add_up_to_the_rankers_logit(names):
    ranker, base = _fitted(names, seed=1)
    explanations = explain(ranker, base, top=5)
    expected = ranker.logits(base.astype(np.float64))  # float64 in, float64 out: the same formula
    assert len(explanations) == base.shape[0]
    for explanation, logit in zip(explanations, expected, strict=True):
        total = explanation.intercept + sum(value for _, value in explanation.contributions) + explanation.other
        assert total == pytest.approx(logit, abs=1e-6)
        assert explanation.logit == pytest.approx(logit, abs=1e-6)
        assert explanation.intercept == ranker.intercept
    # the serving path computes in float32: equal up to its rounding
    logits = np.array([e.logit for e in explanations])
    np.testing.assert_allclose(logits, ranker.logits(base), rtol=1e-4, atol=1e-4)


def test_contributions_are_the_largest_terms_by_absolute_value_with_their_feature_names(fitted):
    ranker, base = fitted
    names = feature_names(ranker.names)
    all_terms = with_crosses((base.astype(np.float64) - ranker.mean) / ranker.scale) * ranker.coef
    for row, explanation in enumerate(explain(ranker, base[:50], top=5)):
        assert len(explanation.contributions) == 5
        sizes = [abs(value) for _, value in explanation.contributions]
        assert sizes == sorted(sizes, reverse=True)
        assert min(sizes) >= np.sort(np.abs(all_terms[row]))[-5] - 1e-12
        for name, value in explanation.contributions:
            assert value == pytest.approx(all_terms[row, names.index(name)], abs=1e-9)
        assert any("*" in name for name in names)  # crosses are named a*b


def test_top_zero_puts_everything_in_other_and_a_large_top_takes_every_term(fitted):
    ranker, base = fitted
    nothing = explain(ranker, base[:3], top=0)
    assert all(e.contributions == [] for e in nothing)
    for e in nothing:
        assert e.intercept + e.other == pytest.approx(e.logit, abs=1e-9)
    everything = explain(ranker, base[:3], top=1000)
    n_features = len(feature_names(ranker.names))
    for e in everything:
        assert len(e.contributions) == n_features
        assert len({name for name, _ in e.contributions}) == n_features
        assert e.other == pytest.approx(0.0, abs=1e-9)


def test_both_ways_of_choosing_the_largest_terms_agree(fitted):
    ranker, base = fitted
    few = terms(ranker, base, top=16)  # repeated argmax
    many = terms(ranker, base, top=17)  # sort
    np.testing.assert_array_equal(few.features, many.features[:, :16])
    np.testing.assert_allclose(few.logits, many.logits)


def test_no_candidates_no_explanations(fitted):
    ranker, _ = fitted
    assert explain(ranker, np.empty((0, len(ranker.names)), dtype=np.float32)) == []


def test_bad_input_is_refused_with_a_clear_message(fitted):
    ranker, base = fitted
    with pytest.raises(ValueError, match=r"\(candidates, 11\)"):
        explain(ranker, base[:, :5])
    with pytest.raises(ValueError, match=r"\(candidates, 11\)"):
        explain(ranker, base[0])
    broken = base[:4].copy()
    broken[2, 3] = np.nan
    with pytest.raises(ValueError, match="'sim_last_item' of candidate 2"):
        explain(ranker, broken)
    with pytest.raises(ValueError, match="top"):
        explain(ranker, base, top=-1)
