"""Ranking metrics for one held-out target per user, from the target's 1-based rank in a full ranking."""

from __future__ import annotations

import numpy as np

CUTOFFS = (10, 20)


def rank_of_target(scores: np.ndarray, target: int, excluded: np.ndarray | None = None) -> int:
    """1-based rank of `target` when all items are sorted by score, best first.

    Ties are broken by item index (lower first) so the order is total and deterministic: integer-valued scores
    such as counts would otherwise flatter or punish a system at random. Excluded items (history) do not count.
    """
    target_score = scores[target]
    ahead = (scores > target_score) | ((scores == target_score) & (np.arange(scores.size) < target))
    if excluded is not None and excluded.size:
        ahead[excluded] = False
    return int(ahead.sum()) + 1


def summarize(ranks: np.ndarray) -> dict[str, float]:
    """HR@k, NDCG@k for k in CUTOFFS and MRR from an array of 1-based ranks (one per user)."""
    ranks = np.asarray(ranks, dtype=np.float64)
    if ranks.size == 0:
        raise ValueError("no ranks to summarize")
    out: dict[str, float] = {}
    for k in CUTOFFS:
        hit = ranks <= k
        out[f"hr@{k}"] = float(hit.mean())
        out[f"ndcg@{k}"] = float(np.where(hit, 1.0 / np.log2(ranks + 1.0), 0.0).mean())
    out["mrr"] = float((1.0 / ranks).mean())
    return out
