"""Metric functions against cases computed by hand."""

import math

import numpy as np
import pytest

from recmesh.evaluate.metrics import rank_of_target, summarize
from recmesh.evaluate.run import rank_with_head


def test_rank_counts_only_better_items_and_skips_history():
    scores = np.array([0.9, 0.1, 0.5, 0.7])
    assert rank_of_target(scores, 2) == 3  # 0.9 and 0.7 ahead
    assert rank_of_target(scores, 2, excluded=np.array([0])) == 2  # history item 0 removed


def test_ties_are_broken_by_item_index_not_in_the_targets_favour():
    scores = np.array([1.0, 1.0, 1.0])
    assert rank_of_target(scores, 0) == 1
    assert rank_of_target(scores, 2) == 3


def test_summarize_matches_hand_computed_values():
    ranks = np.array([1, 3, 15, 40])
    got = summarize(ranks)
    assert got["hr@10"] == pytest.approx(2 / 4)
    assert got["hr@20"] == pytest.approx(3 / 4)
    assert got["ndcg@10"] == pytest.approx((1 / math.log2(2) + 1 / math.log2(4)) / 4)
    assert got["ndcg@20"] == pytest.approx((1 + 0.5 + 1 / math.log2(16)) / 4)
    assert got["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 15 + 1 / 40) / 4)


def test_summarize_refuses_no_ranks():
    with pytest.raises(ValueError):
        summarize(np.array([]))


def test_rank_with_head_puts_candidates_first_then_the_rest_by_score():
    head = np.array([4, 2])
    tail = np.array([0.1, 0.9, 0.8, 0.7, 0.0, 0.5])
    assert rank_with_head(head, tail, 2, np.array([], dtype=np.int64)) == 2
    # item 3 is not a candidate: after the 2 candidates, behind item 1 (0.9); item 5 is history
    assert rank_with_head(head, tail, 3, np.array([1])) == 3
