"""Reordering rules over a ranked list: boosts and buries, the diversity cap, MMR, pins, and their order."""

import numpy as np
import pytest

from recmesh.catalog.rerank import (
    Boost,
    Diversity,
    Mmr,
    Ranked,
    RerankPlan,
    apply,
    attribute_codes,
    check_pins,
    max_per_value,
    mmr,
)
from recmesh.catalog.table import Catalog

IDS = ["a", "b", "c", "d", "e", "f"]


def _ranked(scores=(0.9, 0.8, 0.7, 0.6, 0.5, 0.4)) -> Ranked:
    return Ranked(IDS[: len(scores)], np.array(scores))


def _mask(*ids: str) -> np.ndarray:
    return np.isin(IDS, ids)


def test_no_rules_cuts_to_k():
    out = apply(_ranked(), RerankPlan(), k=4)
    assert out.item_ids == ["a", "b", "c", "d"]
    np.testing.assert_array_equal(out.scores, [0.9, 0.8, 0.7, 0.6])
    assert out.moved_by == [[], [], [], []]
    assert not out.diversity_relaxed


def test_boost_multiplies_adds_and_resorts_recording_the_rule():
    plan = RerankPlan(boosts=[Boost(_mask("d"), multiply=2.0, add=0.1, name="sale")])
    out = apply(_ranked(), plan, k=6)
    assert out.item_ids == ["d", "a", "b", "c", "e", "f"]
    assert out.scores[0] == pytest.approx(1.3)
    assert out.moved_by[0] == ["sale"]
    assert out.moved_by[1:] == [[]] * 5  # shifted by d passing them, not moved by the rule


def test_bury_moves_down():
    plan = RerankPlan(boosts=[Boost(_mask("a"), multiply=0.5, name="out_of_stock")])
    out = apply(_ranked(), plan, k=6)
    assert out.item_ids == ["b", "c", "d", "e", "a", "f"]  # a: 0.45
    assert out.moved_by[4] == ["out_of_stock"]
    negative = RerankPlan(boosts=[Boost(_mask("b"), add=-1.0, name="seen")])
    assert apply(_ranked(), negative, k=6).item_ids[-1] == "b"


def test_a_matching_item_that_keeps_its_place_is_not_recorded():
    out = apply(_ranked(), RerankPlan(boosts=[Boost(_mask("a"), multiply=3.0, name="top")]), k=3)
    assert out.item_ids == ["a", "b", "c"]
    assert out.moved_by[0] == []


def test_ties_keep_the_previous_order():
    ranked = _ranked((0.9, 0.5, 0.5, 0.5, 0.1, 0.0))
    # e reaches 0.5 exactly: it ties with b, c, d and stays behind them
    plan = RerankPlan(boosts=[Boost(_mask("e"), add=0.4, name="lift")])
    out = apply(ranked, plan, k=6)
    assert out.item_ids == ["a", "b", "c", "d", "e", "f"]
    # d then b raised to the same score: b was before d, and stays before it
    plan = RerankPlan(boosts=[Boost(_mask("d"), add=0.5, name="one"), Boost(_mask("b"), add=0.5, name="two")])
    assert apply(ranked, plan, k=6).item_ids == ["d", "b", "a", "c", "e", "f"]


def test_boosts_apply_in_order_each_on_the_previous_scores():
    plan = RerankPlan(
        boosts=[Boost(_mask("f"), add=1.0, name="first"), Boost(_mask("f", "e"), multiply=0.1, name="second")]
    )
    out = apply(_ranked(), plan, k=6)
    assert out.item_ids == ["a", "b", "c", "d", "f", "e"]  # f: 1.4 then 0.14; e: 0.05
    assert out.scores[4] == pytest.approx(0.14)
    assert out.moved_by[4] == ["first", "second"]


def test_the_diversity_cap_holds_in_the_top_k_and_pushed_out_items_follow():
    codes = np.array([0, 0, 0, 1, 1, 2])  # a b c share a value, d e another
    out = apply(_ranked(), RerankPlan(diversity=Diversity(codes, max_per_value=1)), k=3)
    assert out.item_ids == ["a", "d", "f"]
    assert not out.diversity_relaxed
    positions, relaxed = max_per_value(codes, 1, 3)
    assert positions.tolist() == [0, 3, 5, 1, 2, 4]
    assert not relaxed
    out = apply(_ranked(), RerankPlan(diversity=Diversity(codes, max_per_value=2)), k=6)
    assert out.item_ids == ["a", "b", "d", "e", "f", "c"]
    assert out.moved_by[5] == ["diversity"]
    assert out.moved_by[:5] == [[]] * 5


def test_items_without_the_attribute_are_never_capped():
    codes = np.array([-1, -1, -1, 0, 0, 0])
    out = apply(_ranked(), RerankPlan(diversity=Diversity(codes, max_per_value=1)), k=4)
    assert out.item_ids == ["a", "b", "c", "d"]


def test_too_few_values_fill_the_top_k_with_the_best_remaining_and_say_so():
    codes = np.array([0, 0, 0, 1, 1, 1])
    out = apply(_ranked(), RerankPlan(diversity=Diversity(codes, max_per_value=1)), k=4)
    assert out.item_ids == ["a", "d", "b", "c"]  # the cap holds in the first two places, then the best left
    assert out.diversity_relaxed
    # a list shorter than k that fits the cap is not relaxed
    short = apply(_ranked((0.9, 0.8)), RerankPlan(diversity=Diversity(np.array([0, 1]), 1)), k=5)
    assert short.item_ids == ["a", "b"]
    assert not short.diversity_relaxed


def test_mmr_with_lambda_one_keeps_the_order():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(6, 4))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    out = apply(_ranked(), RerankPlan(mmr=Mmr(vectors, lam=1.0)), k=6)
    assert out.item_ids == IDS
    assert out.moved_by == [[]] * 6
    assert mmr(np.array([0.1, 0.9, 0.5]), None, 1.0, 3).tolist() == [0, 1, 2]  # even unsorted


def test_mmr_prefers_a_different_item_over_a_near_duplicate():
    vectors = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.0, 0.0], [1.0, 0.0]])
    out = apply(_ranked(), RerankPlan(mmr=Mmr(vectors, lam=0.5)), k=3)
    # a first; b is a's duplicate; c is orthogonal; e has no vector (similarity 0) but scores lower than c
    assert out.item_ids == ["a", "c", "e"]
    assert out.moved_by == [[], ["mmr"], ["mmr"]]
    # without vectors every similarity is 0: the score order
    assert apply(_ranked(), RerankPlan(mmr=Mmr(None, lam=0.3)), k=6).item_ids == IDS


def test_pinned_items_sit_at_their_positions():
    out = apply(_ranked(), RerankPlan(pins=[("e", 0), ("new", 2)]), k=4)
    assert out.item_ids == ["e", "a", "new", "b"]
    assert out.moved_by[0] == ["pin"] and out.moved_by[2] == ["pin"]
    assert out.scores[0] == pytest.approx(0.5)
    assert np.isnan(out.scores[2])  # not in the list: not scored
    # already in place: still recorded as pinned
    assert apply(_ranked(), RerankPlan(pins=[("b", 1)]), k=3).moved_by == [[], ["pin"], []]


def test_a_pin_past_the_end_of_a_short_list_goes_at_its_end():
    out = apply(_ranked((0.9, 0.8)), RerankPlan(pins=[("x", 4), ("y", 3)]), k=5)
    assert out.item_ids == ["a", "b", "y", "x"]


def test_combined_boosts_then_mmr_and_diversity_then_pins():
    codes = np.array([0, 0, 1, 1, 3, 2])
    plan = RerankPlan(
        boosts=[Boost(_mask("f"), multiply=3.0, name="promo"), Boost(_mask("a"), multiply=0.1, name="bury")],
        diversity=Diversity(codes, max_per_value=1),
        mmr=Mmr(None, lam=0.7),
        pins=[("b", 0)],
    )
    out = apply(_ranked(), plan, k=4)
    # boosts: f 1.2, b .8, c .7, d .6, e .5, a .09; MMR without vectors keeps that; cap 1 per value: f, b, c, e
    # (d and a follow); pin b at 0: b, f, c, e
    assert out.item_ids == ["b", "f", "c", "e"]
    assert out.moved_by == [["pin"], ["promo"], [], []]  # e only moved up past d, which the cap pushed down
    assert not out.diversity_relaxed
    np.testing.assert_allclose(out.scores, [0.8, 1.2, 0.7, 0.5])


@pytest.mark.parametrize(
    ("pins", "k", "message"),
    [
        ([("a", 3)], 3, r"pins\[0\] \('a'\): position must be an integer in 0..2"),
        ([("a", -1)], 3, "position must be"),
        ([("a", 1.0)], 3, "position must be"),
        ([("a", True)], 3, "position must be"),
        ([("a", 0), ("b", 0)], 3, r"pins\[1\] \('b'\): position 0 is pinned twice"),
        ([("a", 0), ("a", 1)], 3, r"pins\[1\]: item 'a' is pinned twice"),
        ([("", 0)], 3, "non-empty string"),
        ([("a",)], 3, r"expected \(item id, position\)"),
        ([], 0, "k must be a positive integer"),
    ],
)
def test_bad_pins_are_refused(pins, k, message):
    with pytest.raises(ValueError, match=message):
        check_pins(pins, k)
    with pytest.raises(ValueError, match=message):
        apply(_ranked(), RerankPlan(pins=pins), k=k)


def test_bad_rules_are_refused_with_a_clear_message():
    ranked = _ranked()
    bad = [
        (RerankPlan(boosts=[Boost(np.ones(3, bool), name="short")]), "mask must be 6 booleans"),
        (RerankPlan(boosts=[Boost(np.ones(6), name="floats")]), "mask must be 6 booleans"),
        (RerankPlan(boosts=[Boost(_mask("a"), name="pin")]), "reserved"),
        (RerankPlan(boosts=[Boost(_mask("a"), name="")]), "non-empty name"),
        (RerankPlan(boosts=[Boost(_mask("a"), multiply=-1.0, name="flip")]), "multiply must be >= 0"),
        (RerankPlan(boosts=[Boost(_mask("a"), add=float("inf"), name="inf")]), "add must be a finite number"),
        (RerankPlan(boosts=[Boost(_mask("a"), name="x"), Boost(_mask("b"), name="x")]), "two boost rules"),
        (RerankPlan(diversity=Diversity(np.zeros(6), 1)), "codes must be 6 integers"),
        (RerankPlan(diversity=Diversity(np.zeros(6, int), 0)), "max_per_value must be a positive"),
        (RerankPlan(mmr=Mmr(None, 1.5)), r"lambda must be a number in \[0, 1\]"),
        (RerankPlan(mmr=Mmr(np.ones((5, 2)), 0.5)), "vectors must be 6 float rows"),
        (RerankPlan(mmr=Mmr(np.full((6, 2), np.nan), 0.5)), "vectors must be finite"),
    ]
    for plan, message in bad:
        with pytest.raises(ValueError, match=message):
            apply(ranked, plan, k=3)
    with pytest.raises(ValueError, match="overflow"):
        apply(ranked, RerankPlan(boosts=[Boost(_mask("a"), multiply=1e308, add=1e308, name="huge")]), k=3)


def test_a_bad_ranked_list_is_refused():
    with pytest.raises(ValueError, match="2 items but 3 scores"):
        Ranked(["a", "b"], np.array([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match=r"score 1 \('b'\) is not a finite number"):
        Ranked(["a", "b"], np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="item 'a' more than once"):
        Ranked(["a", "a"], np.array([1.0, 0.5]))


def test_attribute_codes_come_from_the_catalogue():
    catalog = Catalog.of(
        [
            ("a", {"brand": "x", "price": 10.0, "new": True}),
            ("b", {"brand": "y", "price": 20.0}),
            ("c", {"brand": "x", "price": 10.0, "new": False}),
        ]
    )
    rows = catalog.rows_of(["c", "zz", "b", "a"])
    brand = attribute_codes(catalog, rows, "brand")
    assert brand[0] == brand[3] != brand[2] and brand[1] == -1
    price = attribute_codes(catalog, rows, "price")
    assert price[0] == price[3] != price[2] and price[1] == -1
    assert attribute_codes(catalog, rows, "new").tolist()[1:3] == [-1, -1]
    with pytest.raises(ValueError, match="'colour'"):
        attribute_codes(catalog, rows, "colour")
    out = apply(
        Ranked(["c", "zz", "b", "a"], np.array([4.0, 3.0, 2.0, 1.0])), RerankPlan(diversity=Diversity(brand, 1)), k=3
    )
    assert out.item_ids == ["c", "zz", "b"]


def test_the_cap_holds_whenever_any_order_could_satisfy_it():
    rng = np.random.default_rng(7)
    for _ in range(200):
        size, k, cap = int(rng.integers(1, 40)), int(rng.integers(1, 20)), int(rng.integers(1, 4))
        codes = rng.integers(-1, 5, size=size)
        positions, relaxed = max_per_value(codes, cap, k)
        assert sorted(positions.tolist()) == list(range(size))
        top = codes[positions[:k]]
        values, counts = np.unique(codes[codes >= 0], return_counts=True)
        most_that_fit = int((codes < 0).sum() + np.minimum(counts, cap).sum())
        assert relaxed == (most_that_fit < min(k, size))
        # the longest prefix of the top k that keeps the cap: all of it, or as many items as fit at all
        fitting = min(k, size, most_that_fit)
        head = top[:fitting]
        for value in values:
            assert (head == value).sum() <= cap
