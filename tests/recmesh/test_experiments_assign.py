"""Assignment (recmesh.experiments.assign): sticky, faithful to the shares over 100k ids, and stable under the
configuration changes the design calls safe; and which changes are not."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import pytest

from recmesh.experiments.assign import assign_variant, bucket, unit_id, variant_index
from recmesh.experiments.config import ExperimentConfig, validate

IDS = [f"visitor-{i}" for i in range(100_000)]


def experiment(shares: list[tuple[str, float]], name: str = "ranker-test", **options: Any) -> ExperimentConfig:
    variants = [{"name": n, "share": s, "options": dict(options) if i == 1 else {}} for i, (n, s) in enumerate(shares)]
    running = validate({"experiments": [{"name": name, "status": "running", "variants": variants}]}).running
    assert running is not None
    return running


def assignments(exp: ExperimentConfig, ids: list[str] = IDS) -> list[str]:
    return [assign_variant(exp, unit).name for unit in ids]


def test_bucket_is_deterministic_in_range_and_depends_on_the_experiment():
    assert bucket("a", "u1") == bucket("a", "u1")
    assert all(0 <= bucket("a", unit) < 10_000 for unit in IDS[:1000])
    same = sum(bucket("a", unit) == bucket("b", unit) for unit in IDS[:1000])
    assert same < 10  # independent buckets: about 1000 / 10,000 coincide


def test_variant_index_is_the_first_bound_above_the_bucket():
    bounds = (5000, 9500, 10000)
    assert [variant_index(bounds, b) for b in (0, 4999, 5000, 9499, 9500, 9999)] == [0, 0, 1, 1, 2, 2]


def test_assignment_is_sticky_across_calls_and_reparsed_configurations():
    shares = [("control", 50), ("no-ranking", 45), ("holdout", 5)]
    first = assignments(experiment(shares), IDS[:5000])
    assert assignments(experiment(shares), IDS[:5000]) == first  # a new parse: another replica, a restart
    assert assignments(experiment(shares), IDS[:5000]) == assignments(experiment(shares), IDS[:5000])


@pytest.mark.parametrize(
    "shares",
    [
        [("control", 50), ("no-ranking", 45), ("holdout", 5)],
        [("a", 33.33), ("b", 33.33), ("c", 33.34)],
        [("a", 99.5), ("b", 0.5)],
    ],
)
def test_shares_hold_within_sampling_error_over_100k_ids(shares: list[tuple[str, float]]):
    counts = Counter(assignments(experiment(shares)))
    n = len(IDS)
    chi_square = 0.0
    for name, share in shares:
        p = share / 100
        expected = n * p
        sd = math.sqrt(n * p * (1 - p))
        assert abs(counts[name] - expected) < 5 * sd, (name, counts[name], expected)  # per variant, 5 sigma
        chi_square += (counts[name] - expected) ** 2 / expected
    # chi-square goodness of fit at p = 0.001: 10.83 (1 df), 13.82 (2 df)
    assert chi_square < {2: 10.83, 3: 13.82}[len(shares)], chi_square


def test_unit_ids():
    assert unit_id("visitor", "u1", "s1") == "u1"
    assert unit_id("visitor", "", "s1") == "s1"
    assert unit_id("session", "u1", "s1") == "s1"
    assert unit_id("session", "u1", "") == ""
    assert unit_id("visitor", "", "") == ""


# -------------------------------------------------------------------------------------------- safe changes
# Safe: the same variants in the same order with the same shares (options, description, other experiments may
# change), or a variant appended at the end whose share is taken from the last one. Each moves nobody whose
# variant keeps its buckets.


def test_changing_options_or_other_experiments_moves_nobody():
    shares = [("control", 50), ("treatment", 50)]
    before = assignments(experiment(shares))
    assert assignments(experiment(shares, skip_ranking=True, candidate_count=50)) == before
    doc = {
        "version": 9,
        "experiments": [
            {"name": "old", "status": "stopped", "variants": [{"name": "a", "share": 50}, {"name": "b", "share": 50}]},
            {
                "name": "ranker-test",
                "status": "running",
                "unit": "visitor",
                "description": "edited",
                "variants": [{"name": "control", "share": 50}, {"name": "treatment", "share": 50}],
            },
        ],
    }
    running = validate(doc).running
    assert running is not None
    assert assignments(running) == before


def test_appending_a_variant_moves_only_visitors_of_the_last_ones_released_range():
    before = assignments(experiment([("control", 50), ("treatment", 50)]))
    after = assignments(experiment([("control", 50), ("treatment", 40), ("new", 10)]))
    moved = Counter((b, a) for b, a in zip(before, after, strict=True) if b != a)
    assert set(moved) == {("treatment", "new")}  # control untouched, treatment -> new only
    assert abs(moved["treatment", "new"] - 10_000) < 5 * math.sqrt(100_000 * 0.1 * 0.9)


def test_editing_shares_moves_only_the_buckets_that_change_hands():
    before = assignments(experiment([("a", 40), ("b", 30), ("c", 30)]))
    after = assignments(experiment([("a", 40), ("b", 20), ("c", 40)]))
    moved = Counter((b, a) for b, a in zip(before, after, strict=True) if b != a)
    assert set(moved) == {("b", "c")}  # buckets 6000..6999 change hands, no one else moves
    assert abs(moved["b", "c"] - 10_000) < 5 * math.sqrt(100_000 * 0.1 * 0.9)


def test_unsafe_changes_do_move_visitors():
    # Documented as unsafe: reordering variants, or renaming the experiment (the name is hashed in).
    before = assignments(experiment([("control", 50), ("treatment", 50)]), IDS[:10_000])
    reordered = assignments(experiment([("treatment", 50), ("control", 50)]), IDS[:10_000])
    renamed = assignments(experiment([("control", 50), ("treatment", 50)], name="ranker-test-2"), IDS[:10_000])
    assert sum(b != a for b, a in zip(before, reordered, strict=True)) > 9_000  # every bucket changes hands
    assert 4_000 < sum(b != a for b, a in zip(before, renamed, strict=True)) < 6_000  # reshuffled: half move
