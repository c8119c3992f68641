"""`slist`: a closed-form linear item-to-item model (SLIST, Choi et al., WWW 2021), served as sparse neighbour rows.

Fitted at training on the training parts only, in closed form over the whole catalogue:

    B = (alpha X'X + (1 - alpha) S'S + l2 I)^-1 (alpha X'X + (1 - alpha) S'T),   diagonal set to 0

X is the user x item matrix of the training parts (1 where the user has the item: SLIS, the session-as-a-whole
part), S / T the "what came before -> what came next" pairs of every position (SLIT, the transition part): S's row
holds the WINDOW items before the position, the j-th previous one weighted SOURCE_DECAY ** j, T's row the item at
the position. Each row of B keeps its TOP largest positive weights (a CSR like the feature tables, `slist.npz` in
the bundle), so serving is a sum of a few sparse rows, like covisit:

    score(c) = sum over the RECENT most recent session items r_j (j = 0 is the last) of DECAY ** j * B[r_j, c]

The ranker reads the same score, and the candidate's rank in this order, for every candidate (recmesh.rank.features,
whichever source found it: `scores_and_ranks`). The fit costs O(n^3) time and a few n^2 float32 arrays (about 40 s
and about 3 GB at peak for 12k items, one BLAS thread); a catalogue over MAX_ITEMS items gets no slist (the bundle then
lacks the source, and its default recipe does not name it).

Usage::

    weights = fit_slist(sequences, n_items)          # Csr, or None over MAX_ITEMS
    SlistSource(weights).candidates(session, 100)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.linalg import lapack
from threadpoolctl import threadpool_limits

from recmesh.rank.tables import Csr
from recmesh.sources import Session, mask_for, top_k

# Above this no slist source: the fit is cubic in time and holds a few n x n float32 arrays (12k items: ~40 s and
# ~3 GB at peak, twice per training with the extra fold; 20k items: ~3 min and ~8 GB each).
MAX_ITEMS = 20_000


@dataclass(frozen=True)
class SlistParams:
    alpha: float = 0.5  # weight of the session-as-a-whole part (SLIS) against the transition part (SLIT)
    l2: float = 200.0  # ridge penalty
    window: int = 5  # how many earlier items form a position's source row (SLIT)
    source_decay: float = 0.5  # weight of the j-th earlier item in a source row
    top: int = 300  # weights kept per item row
    recent: int = 10  # how many of the latest session items vote at serving
    decay: float = 0.7  # weight of the j-th most recent item: decay ** j


def gram_parts(sequences: list[np.ndarray], n_items: int, params: SlistParams) -> tuple[sp.csr_matrix, ...]:
    """(X'X, S'S, S'T) as sparse float64 n x n matrices, from index-encoded sequences."""
    seqs = [s for s in sequences if s.size]
    if not seqs:
        empty = sp.csr_matrix((n_items, n_items), dtype=np.float64)
        return empty, empty, empty
    user = np.repeat(np.arange(len(seqs)), [s.size for s in seqs])
    x = sp.csr_matrix((np.ones(user.size), (user, np.concatenate(seqs))), shape=(len(seqs), n_items))
    x.data[:] = 1.0  # a repeated item counts once
    none = np.zeros(0, dtype=np.int64)
    s_rows: list[np.ndarray] = [none]
    s_cols: list[np.ndarray] = [none]
    s_vals: list[np.ndarray] = [np.zeros(0)]
    targets: list[np.ndarray] = [none]
    row = 0
    for seq in seqs:
        for gap in range(1, params.window + 1):
            if seq.size <= gap:
                break
            positions = np.arange(gap, seq.size)
            s_rows.append(row + positions - 1)
            s_cols.append(seq[positions - gap])
            s_vals.append(np.full(positions.size, params.source_decay ** (gap - 1)))
        targets.append(seq[1:])
        row += seq.size - 1
    t_cols = np.concatenate(targets)
    s = sp.csr_matrix(
        (np.concatenate(s_vals), (np.concatenate(s_rows), np.concatenate(s_cols))),
        shape=(row, n_items),
    )
    t = sp.csr_matrix((np.ones(row), (np.arange(row), t_cols)), shape=(row, n_items))
    st = s.T.tocsr()
    return (x.T @ x).tocsr(), (st @ s).tocsr(), (st @ t).tocsr()


def closed_form(
    xtx: sp.spmatrix, sts: sp.spmatrix, stt: sp.spmatrix, alpha: float, l2: float, dtype: type = np.float32
) -> np.ndarray:
    """The dense n x n B of the module docstring (diagonal 0), by a Cholesky inverse on one BLAS thread (a second
    thread spin-waiting for a shared core only slows it)."""
    n = xtx.shape[0]
    gram = (alpha * xtx + (1.0 - alpha) * sts).astype(dtype).toarray()
    gram[np.diag_indices(n)] += dtype(l2)
    potrf, potri = (lapack.spotrf, lapack.spotri) if dtype == np.float32 else (lapack.dpotrf, lapack.dpotri)
    with threadpool_limits(1):
        factor, info = potrf(gram, lower=1, overwrite_a=1)
        if info != 0:
            raise np.linalg.LinAlgError(f"slist: the Gram matrix is not positive definite (potrf info {info})")
        inverse, info = potri(factor, lower=1, overwrite_c=1)
        if info != 0:
            raise np.linalg.LinAlgError(f"slist: inverse failed (potri info {info})")
        del factor, gram
        _mirror_lower(inverse)  # potri fills the lower triangle only
        target = (alpha * xtx + (1.0 - alpha) * stt).astype(dtype).tocsc()
        weights: np.ndarray = np.asarray((target.T @ inverse.T).T, dtype=dtype)  # inverse @ target
    weights[np.diag_indices(n)] = 0
    return weights


def _mirror_lower(square: np.ndarray, block: int = 1024) -> None:
    """Copy the lower triangle onto the upper one in place, block by block (no n^2 index arrays)."""
    n = square.shape[0]
    for start in range(0, n, block):
        end = min(start + block, n)
        diagonal = square[start:end, start:end]
        upper = np.triu_indices(end - start, 1)
        diagonal[upper] = diagonal.T[upper]
        square[start:end, end:] = square[end:, start:end].T


def sparsify(weights: np.ndarray, top: int) -> Csr:
    """Each row's `top` largest positive weights, as a Csr (columns sorted)."""
    n = weights.shape[0]
    top = min(top, n)
    if top == 0:
        return Csr(np.zeros(n + 1, dtype=np.int64), np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.float32))
    cols = np.argpartition(-weights, top - 1, axis=1)[:, :top]
    vals = np.take_along_axis(weights, cols, axis=1)
    rows = np.repeat(np.arange(n), top)
    keep = vals.ravel() > 0
    m = sp.csr_matrix((vals.ravel()[keep], (rows[keep], cols.ravel()[keep])), shape=(n, n))
    m.sort_indices()
    return Csr(m.indptr.astype(np.int64), m.indices.astype(np.int32), m.data.astype(np.float32))


def fit_slist(sequences: list[np.ndarray], n_items: int, params: SlistParams = SlistParams()) -> Csr | None:
    """The sparsified model over index-encoded `sequences`, or None for a catalogue over MAX_ITEMS items."""
    if n_items > MAX_ITEMS or n_items < 2:
        return None
    xtx, sts, stt = gram_parts(sequences, n_items, params)
    return sparsify(closed_form(xtx, sts, stt, params.alpha, params.l2), params.top)


def recent_weights(history: np.ndarray, params: SlistParams) -> tuple[np.ndarray, np.ndarray]:
    """(the RECENT latest rows, most recent first; their weights decay ** j)."""
    recent = history[::-1][: params.recent]
    return recent, params.decay ** np.arange(recent.size, dtype=np.float64)


def dense_scores(weights: Csr, history: np.ndarray, params: SlistParams) -> np.ndarray:
    """Every item's score (float64, one per item row; 0 where no recent row holds it): the sum of the module
    docstring, each item's terms added in a fixed order (recent row by row), the same bytes wherever it runs."""
    recent, decay = recent_weights(history, params)
    n = weights.indptr.size - 1
    if recent.size == 0:
        return np.zeros(n, dtype=np.float64)
    starts, ends = weights.indptr[recent], weights.indptr[recent + 1]
    entries = np.concatenate([np.arange(s, e) for s, e in zip(starts.tolist(), ends.tolist(), strict=True)])
    values = weights.data[entries].astype(np.float64) * np.repeat(decay, ends - starts)
    return np.bincount(weights.indices[entries], values, minlength=n)


def neighbour_scores(weights: Csr, history: np.ndarray, params: SlistParams) -> tuple[np.ndarray, np.ndarray]:
    """(columns ascending, float64 scores > 0) of every item some recent row holds (`dense_scores`' positives)."""
    dense = dense_scores(weights, history, params)
    cols = np.flatnonzero(dense > 0)
    return cols, dense[cols]


def scores_and_ranks(
    weights: Csr, history: np.ndarray, params: SlistParams, candidates: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each candidate's score (0 where no recent row holds it) and its rank among the items the source could return
    (1 + how many items outside the session score higher; one past the last for an unscored candidate)."""
    dense = dense_scores(weights, history, params)
    at = dense[candidates]
    dense[history] = 0.0  # the session's own items: never returned, so never ahead of a candidate
    descending = np.sort(-dense[dense > 0])
    ranks = np.where(at > 0, np.searchsorted(descending, -at, side="left") + 1, descending.size + 1)
    return at, ranks.astype(np.float64)


class SlistSource:
    name = "slist"

    def __init__(self, weights: Csr, params: SlistParams = SlistParams()) -> None:
        self.weights = weights
        self.params = params
        self._n = weights.indptr.size - 1

    def candidates(self, session: Session, k: int) -> tuple[np.ndarray, np.ndarray]:
        if session.history.size == 0 or k <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        cols, scores = neighbour_scores(self.weights, session.history, self.params)
        return top_k(cols, scores, k, session.exclude, mask_for(session, self._n))
