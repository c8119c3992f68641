"""`recmesh evaluate`: the leave-one-out full-ranking protocol for four systems side by side.

Every system ranks ALL items; the user's history is removed. The ANN and pipeline systems put their top-N
candidates first (in their order) and the rest of the catalogue after them by exact similarity, so their ranks
are full-catalogue ranks too (MRR included). The pipeline's candidates come from a recipe of sources (the
bundle's default, or ``--sources ann:100,covisit:100,popular:20``); the report gives the candidate recall of each
source and of the merged pool::

    report = evaluate(bundle_path, dataset, "valid", recipe="ann:150,covisit:50")
    report["candidate_recall"]  # {"ann": ..., "covisit": ..., "pool": ...}
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from recmesh.data.sessions import Dataset
from recmesh.evaluate.metrics import rank_of_target, summarize
from recmesh.evaluate.protocol import leave_one_out
from recmesh.index.exact import ExactIndex
from recmesh.pipeline import MAX_SESSION, Model, load_model
from recmesh.sources import Session
from recmesh.sources.recipe import gather
from recmesh.train.run import fingerprint

SYSTEMS = ("popularity", "transition", "ann", "pipeline")
ANN_RECALL_QUERIES = 2000


def rank_with_head(head: np.ndarray, tail_scores: np.ndarray, target: int, excluded: np.ndarray) -> int:
    """Rank of target when `head` comes first in its order and every other item follows by tail_scores."""
    hit = np.flatnonzero(head == target)
    if hit.size:
        return int(hit[0]) + 1
    return head.size + rank_of_target(tail_scores, target, np.concatenate([excluded, head]))


def evaluate(
    bundle_path: Path,
    dataset: Dataset,
    split_name: str = "test",
    n_candidates: int | None = None,
    progress: bool = True,
    limit: int | None = None,
    recipe: str | None = None,
) -> dict[str, Any]:
    started = time.perf_counter()
    model = load_model(bundle_path)
    mix = model.recipe(recipe) if recipe else model.default_recipe
    unknown = dataset.items() - model.index_of.keys()
    if unknown:
        raise ValueError(
            f"{len(unknown)} items of {dataset.name} are not in the bundle (e.g. {sorted(unknown)[:3]});"
            " evaluate on the data set the bundle was trained on"
        )
    split = leave_one_out(dataset, model.item_ids)
    histories, targets = (
        (split.test_history, split.test_target) if split_name == "test" else (split.valid_history, split.valid_target)
    )
    if limit:
        histories, targets = histories[:limit], targets[:limit]
    n = n_candidates or int(model.manifest["params"]["candidates"])
    tables = model.space.tables
    pop_tiebreak = tables.popularity / (float(tables.popularity.max()) + 1.0)
    ranks: dict[str, list[int]] = {s: [] for s in SYSTEMS}
    source_hits = dict.fromkeys([*mix.names, "pool"], 0)
    for history, target in tqdm(
        list(zip(histories, targets, strict=True)),
        desc=f"evaluate ({split_name})",
        unit="user",
        disable=not progress,
        mininterval=1.0,
    ):
        excluded = np.unique(history)
        ranks["popularity"].append(rank_of_target(tables.popularity, target, excluded))
        transition = pop_tiebreak.copy()
        cols, counts = tables.transitions.row(int(history[-1]))
        transition[cols] += counts
        ranks["transition"].append(rank_of_target(transition, target, excluded))

        recent = history[-MAX_SESSION:]
        query = model.query(recent)
        exact = model.space.context_vectors @ query
        cands, _ = model.retrieve(query, n, excluded)
        ranks["ann"].append(rank_with_head(cands, exact, target, excluded))
        pool = gather(model.sources, mix, Session(recent, query, excluded))
        for name, rows in pool.per_source.items():
            source_hits[name] += int(target in rows)
        source_hits["pool"] += int(target in pool.rows)
        ranked, _ = model.rank(recent, pool.rows, pool.scores)
        ranks["pipeline"].append(rank_with_head(ranked, exact, target, excluded))

    report: dict[str, Any] = {
        "dataset": dataset.name,
        "split": split_name,
        "bundle": model.version,
        "same_data_as_training": fingerprint(dataset) == model.manifest["dataset"]["fingerprint"],
        "users": len(targets),
        "items": model.n_items,
        "systems": {s: summarize(np.array(r)) for s, r in ranks.items()},
        "recipe": str(mix),
        "candidate_recall": {name: hits / max(len(targets), 1) for name, hits in source_hits.items()},
        f"candidate_recall@{mix.total}": source_hits["pool"] / max(len(targets), 1),
        "ann_recall_vs_exact": ann_recall(model, histories, n),
        "ranker_auc": model.manifest["metrics"]["ranker_auc"],
        "train_seconds": model.manifest["metrics"]["train_seconds"],
        "index": model.manifest["index"],
    }
    report["evaluate_seconds"] = round(time.perf_counter() - started, 1)
    return report


def ann_recall(model: Model, histories: list[np.ndarray], k: int) -> float:
    """Mean overlap of the ANN's top-k with exact search's top-k, for real session queries."""
    sample = histories[:ANN_RECALL_QUERIES]
    queries = np.stack([model.query(h[-MAX_SESSION:]) for h in sample])
    exact = ExactIndex(model.space.context_vectors).search_batch(queries, k)
    overlap = [np.intersect1d(model.index.search(q, k)[0], e).size / k for q, e in zip(queries, exact, strict=True)]
    return float(np.mean(overlap))


def format_table(report: dict[str, Any]) -> str:
    metrics = list(next(iter(report["systems"].values())))
    lines = [
        f"{report['dataset']} ({report['split']}, {report['users']:,} users, {report['items']:,} items)",
        f"{'system':<12}" + "".join(f"{m:>10}" for m in metrics),
    ]
    for name, values in report["systems"].items():
        lines.append(f"{name:<12}" + "".join(f"{values[m]:>10.4f}" for m in metrics))
    extras = {
        k: v
        for k, v in report.items()
        if k.startswith(("candidate_recall", "ann_recall", "ranker_auc")) and isinstance(v, float)
    }
    lines.append("  ".join(f"{k}={v:.4f}" for k, v in extras.items()))
    if "candidate_recall" in report:
        recall = "  ".join(f"{k}={v:.4f}" for k, v in report["candidate_recall"].items())
        lines.append(f"candidate recall of {report['recipe']}: {recall}")
    return "\n".join(lines)
