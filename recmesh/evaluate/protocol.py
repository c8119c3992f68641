"""The leave-one-out split (the protocol published results on these data sets use), index-encoded.

Per sequence: the last item is the test target, the second-to-last the validation target, the rest is
training. Models are fitted on the training part only; validation targets choose hyperparameters and train the
ranker; test targets are only ever scored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recmesh.data.sessions import Dataset


@dataclass
class Split:
    item_ids: list[str]
    train: list[np.ndarray]  # training part of every sequence (may be empty)
    valid_history: list[np.ndarray]
    valid_target: np.ndarray
    test_history: list[np.ndarray]
    test_target: np.ndarray

    @property
    def n_items(self) -> int:
        return len(self.item_ids)


def catalogue(dataset: Dataset) -> list[str]:
    """Every item of the data set, in a stable order (first appearance)."""
    return list(dict.fromkeys(item for seq in dataset.sequences for item in seq))


def leave_one_out(dataset: Dataset, item_ids: list[str] | None = None) -> Split:
    """Split sequences of length >= 3; shorter ones only feed training (they have no targets)."""
    item_ids = item_ids or catalogue(dataset)
    position = {item: i for i, item in enumerate(item_ids)}
    train, vh, vt, th, tt = [], [], [], [], []
    for seq in dataset.sequences:
        idx = np.fromiter((position[x] for x in seq), dtype=np.int64, count=len(seq))
        if idx.size < 3:
            train.append(idx)
            continue
        train.append(idx[:-2])
        vh.append(idx[:-2])
        vt.append(idx[-2])
        th.append(idx[:-1])
        tt.append(idx[-1])
    return Split(item_ids, train, vh, np.array(vt, dtype=np.int64), th, np.array(tt, dtype=np.int64))
