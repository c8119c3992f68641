"""Item vectors from gensim Word2Vec skip-gram over sessions (item2vec).

Both of word2vec's matrices are kept: `vectors` (input, "what an item is") and `context_vectors` (output,
"what follows it"). Skip-gram trains input·output to predict co-occurrence, so a session's input vector against
candidates' output vectors scores "what comes next"; the ranker uses both.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np
from tqdm import tqdm

from recmesh.extras import MissingExtra, missing_extra

try:
    from gensim.models import Word2Vec
    from gensim.models.callbacks import CallbackAny2Vec
except ModuleNotFoundError as e:  # the `train` extra. A serving install has no gensim, but this module still
    # imports there (the CLI reads Word2VecParams' defaults for every command): training raises the error.
    _without_gensim: MissingExtra | None = missing_extra(e, "train", "training (recmesh train)")
    CallbackAny2Vec = object  # type: ignore[misc,assignment]
else:
    _without_gensim = None


@dataclass(frozen=True)
class Word2VecParams:
    """Hyperparameters that matter for recommendation (Caselles-Dupré et al., 2018, "Word2vec applied to
    recommendation: hyperparameters matter"). Defaults chosen on beauty's validation targets, see
    docs/evaluation.md."""

    dim: int = 64
    window: int = 5
    negative: int = 5
    ns_exponent: float = -0.25
    sample: float = 1e-3
    epochs: int = 50
    min_count: int = 1
    alpha: float = 0.025
    seed: int = 0
    workers: int = 2

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass
class ItemVectors:
    item_ids: list[str]
    vectors: np.ndarray  # (n, dim) float32, input vectors
    context_vectors: np.ndarray  # (n, dim) float32, output vectors (zero for items without one)
    trained: np.ndarray  # (n,) bool: False where the vector was borrowed from neighbours (rare item)


class _EpochBar(CallbackAny2Vec):
    def __init__(self, epochs: int, show: bool) -> None:
        self.bar = tqdm(total=epochs, desc="word2vec epochs", unit="epoch", disable=not show)

    def on_epoch_end(self, model: Word2Vec) -> None:
        self.bar.update(1)

    def on_train_end(self, model: Word2Vec) -> None:
        self.bar.close()


def train_item_vectors(
    sequences: list[list[str]], catalogue: list[str], params: Word2VecParams, progress: bool = False
) -> ItemVectors:
    """Train on `sequences`; return vectors for every item of `catalogue`, in its order.

    Items too rare for word2vec (below min_count, or absent from training) borrow the mean vector of the items
    next to them in the sequences, so every catalogue item stays servable.
    """
    if _without_gensim is not None:
        raise _without_gensim
    logging.getLogger("gensim").setLevel(logging.WARNING)
    model = Word2Vec(
        sentences=sequences,
        vector_size=params.dim,
        window=params.window,
        negative=params.negative,
        ns_exponent=params.ns_exponent,
        sample=params.sample,
        epochs=params.epochs,
        min_count=params.min_count,
        alpha=params.alpha,
        seed=params.seed,
        workers=params.workers,
        sg=1,
        hs=0,
        callbacks=[_EpochBar(params.epochs, progress)],
    )
    n, dim = len(catalogue), params.dim
    vectors = np.zeros((n, dim), dtype=np.float32)
    context = np.zeros((n, dim), dtype=np.float32)
    trained = np.zeros(n, dtype=bool)
    key_to_index = model.wv.key_to_index
    rows = np.array([key_to_index.get(item, -1) for item in catalogue])
    known = rows >= 0
    vectors[known] = model.wv.vectors[rows[known]]
    context[known] = model.syn1neg[rows[known]]
    trained[known] = True
    if not known.all():
        _borrow_from_neighbours(sequences, catalogue, vectors, context, trained)
    return ItemVectors(list(catalogue), vectors, context, trained)


def _borrow_from_neighbours(
    sequences: list[list[str]],
    catalogue: list[str],
    vectors: np.ndarray,
    context: np.ndarray,
    trained: np.ndarray,
) -> None:
    position = {item: i for i, item in enumerate(catalogue)}
    sums = np.zeros_like(vectors)
    ctx_sums = np.zeros_like(context)
    counts = np.zeros(len(catalogue))
    for seq in sequences:
        idx = [position[item] for item in seq if item in position]
        for a, b in zip(idx, idx[1:], strict=False):
            for rare, other in ((a, b), (b, a)):
                if not trained[rare] and trained[other]:
                    sums[rare] += vectors[other]
                    ctx_sums[rare] += context[other]
                    counts[rare] += 1
    fill = (~trained) & (counts > 0)
    vectors[fill] = sums[fill] / counts[fill, None]
    context[fill] = ctx_sums[fill] / counts[fill, None]
