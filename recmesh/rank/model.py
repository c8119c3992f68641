"""Logistic regression over standardised base features and their pairwise crosses.

Stored as JSON (names, means, scales, weights): no pickle, readable, and loading it runs no code (whether the
bundle is authentic is recmesh/bundle.py's signature check). The
ranker says which base features it reads (`names`): BASE_FEATURES for rankers trained on ANN candidates alone
(older bundles), SOURCE_FEATURES for rankers trained on a mixed candidate pool.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.linalg import LinAlgWarning
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits

from recmesh.rank.features import ALL_FEATURES, BASE_FEATURES, feature_names, with_crosses


@dataclass
class Ranker:
    mean: np.ndarray  # (n_base,)
    scale: np.ndarray  # (n_base,)
    coef: np.ndarray  # (n_base + n_crosses,)
    intercept: float
    names: tuple[str, ...] = BASE_FEATURES  # the base features it reads, in column order

    def logits(self, base: np.ndarray) -> np.ndarray:
        return with_crosses((base - self.mean) / self.scale) @ self.coef + self.intercept

    def probabilities(self, base: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.logits(base)))

    def save(self, path: Path) -> None:
        path.write_text(
            json.dumps(
                {
                    "model": "logistic_regression",
                    "base_features": list(self.names),
                    "features": feature_names(self.names),
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
        names = doc.get("base_features")
        if not isinstance(names, list) or not names or not set(names) <= set(ALL_FEATURES):
            raise ValueError(f"{path}: ranker was trained on other features than this code computes")
        return cls(
            np.array(doc["mean"], dtype=np.float32),
            np.array(doc["scale"], dtype=np.float32),
            np.array(doc["coef"], dtype=np.float32),
            float(doc["intercept"]),
            tuple(names),
        )


def fit_ranker(
    base: np.ndarray,
    labels: np.ndarray,
    c: float = 1.0,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
    names: Sequence[str] = BASE_FEATURES,
) -> Ranker:
    """Fit on (examples, base features) float32 rows; a solver problem is reported to `log` in one line (it
    would otherwise surface as scikit-learn warnings), and the fit it ended with is returned anyway."""
    # In float64: the crosses of near-duplicate features (sim_session ~ sim_last_item, retrieval_score ~
    # next_item_score) make the Hessian ill-conditioned, and in float32 Newton-Cholesky found it singular on the
    # synthetic data (it then fell back to L-BFGS, which ran out of iterations). In float64 it converges in ~7 steps.
    base = base.astype(np.float64)
    mean = base.mean(axis=0)
    scale = base.std(axis=0)
    scale[scale < 1e-6] = 1.0
    x = with_crosses((base - mean) / scale)
    # newton-cholesky: exact second-order steps, fast with many rows and few (66) columns
    lr = LogisticRegression(C=c, solver="newton-cholesky", max_iter=100, random_state=seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        warnings.simplefilter("always", LinAlgWarning)
        # One thread: the Hessian products are small (rows x 78) and a second BLAS / OpenMP thread spin-waiting for
        # a core shared with other work made them 15x slower here (0.42 s vs 0.026 s per product on 2 cores).
        with threadpool_limits(limits=1):
            lr.fit(x, labels)
    problems = [w for w in caught if issubclass(w.category, ConvergenceWarning | LinAlgWarning)]
    for other in (w for w in caught if w not in problems):  # not ours to judge: passed on unchanged
        warnings.warn_explicit(other.message, other.category, other.filename, other.lineno)
    if problems and log is not None:
        first = str(problems[0].message).strip().splitlines()[0]
        log(f"ranker: the logistic regression did not converge cleanly ({first}); it may rank worse than it could")
    return Ranker(
        mean.astype(np.float32),
        scale.astype(np.float32),
        lr.coef_[0].astype(np.float32),
        float(lr.intercept_[0]),
        tuple(names),
    )


def auc(ranker: Ranker, base: np.ndarray, labels: np.ndarray) -> float:
    return float(roc_auc_score(labels, ranker.logits(base)))
