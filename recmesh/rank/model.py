"""Logistic regression over standardised base features and their pairwise crosses.

Stored as JSON (names, means, scales, weights): no pickle, readable, and loadable from an untrusted place.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from recmesh.rank.features import BASE_FEATURES, feature_names, with_crosses


@dataclass
class Ranker:
    mean: np.ndarray  # (n_base,)
    scale: np.ndarray  # (n_base,)
    coef: np.ndarray  # (n_base + n_crosses,)
    intercept: float

    def logits(self, base: np.ndarray) -> np.ndarray:
        return with_crosses((base - self.mean) / self.scale) @ self.coef + self.intercept

    def probabilities(self, base: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.logits(base)))

    def save(self, path: Path) -> None:
        path.write_text(
            json.dumps(
                {
                    "model": "logistic_regression",
                    "base_features": list(BASE_FEATURES),
                    "features": feature_names(),
                    "mean": self.mean.tolist(),
                    "scale": self.scale.tolist(),
                    "coef": self.coef.tolist(),
                    "intercept": self.intercept,
                },
                indent=1,
            )
        )

    @classmethod
    def load(cls, path: Path) -> Ranker:
        doc = json.loads(path.read_text())
        if doc.get("base_features") != list(BASE_FEATURES):
            raise ValueError(f"{path}: ranker was trained on other features than this code computes")
        return cls(
            np.array(doc["mean"], dtype=np.float32),
            np.array(doc["scale"], dtype=np.float32),
            np.array(doc["coef"], dtype=np.float32),
            float(doc["intercept"]),
        )


def fit_ranker(base: np.ndarray, labels: np.ndarray, c: float = 1.0, seed: int = 0) -> Ranker:
    mean = base.mean(axis=0)
    scale = base.std(axis=0)
    scale[scale < 1e-6] = 1.0
    x = with_crosses((base - mean) / scale)
    # newton-cholesky: exact second-order steps, fast with many rows and few (66) columns
    lr = LogisticRegression(C=c, solver="newton-cholesky", max_iter=100, random_state=seed)
    lr.fit(x, labels)
    return Ranker(
        mean.astype(np.float32), scale.astype(np.float32), lr.coef_[0].astype(np.float32), float(lr.intercept_[0])
    )


def auc(ranker: Ranker, base: np.ndarray, labels: np.ndarray) -> float:
    return float(roc_auc_score(labels, ranker.logits(base)))
