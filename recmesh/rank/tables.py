"""Feature tables the ranker reads: item popularity and sparse item-to-item counts, built from sessions.

Stored as plain arrays (CSR parts) so a bundle needs no pickle, and looked up with a binary search per row so a
whole candidate list costs one vectorised call per recent item.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


@dataclass
class Csr:
    """A read-only CSR matrix of counts: row i's columns are indices[indptr[i]:indptr[i+1]], sorted."""

    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray

    @classmethod
    def from_pairs(cls, rows: np.ndarray, cols: np.ndarray, n: int) -> Csr:
        m = sp.csr_matrix((np.ones(rows.size, dtype=np.float32), (rows, cols)), shape=(n, n))
        m.sum_duplicates()
        m.sort_indices()
        return cls(m.indptr.astype(np.int64), m.indices.astype(np.int32), m.data.astype(np.float32))

    def lookup(self, row: int, cols: np.ndarray) -> np.ndarray:
        """Counts at (row, cols), zero where absent."""
        start, end = self.indptr[row], self.indptr[row + 1]
        if start == end:
            return np.zeros(cols.size, dtype=np.float32)
        row_cols = self.indices[start:end]
        pos = np.searchsorted(row_cols, cols)
        pos_clipped = np.minimum(pos, row_cols.size - 1)
        found = row_cols[pos_clipped] == cols
        return np.where(found, self.data[start:end][pos_clipped], 0.0).astype(np.float32)

    def row(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        start, end = self.indptr[row], self.indptr[row + 1]
        return self.indices[start:end], self.data[start:end]

    def row_sums(self) -> np.ndarray:
        return np.add.reduceat(np.append(self.data, 0), np.minimum(self.indptr[:-1], self.data.size)) * (
            np.diff(self.indptr) > 0
        )


@dataclass
class FeatureTables:
    popularity: np.ndarray  # (n,) interaction counts
    transitions: Csr  # a -> b where b directly follows a
    covisits: Csr  # a <-> b within COVISIT_WINDOW positions, both directions
    transition_out: np.ndarray  # (n,) row sums of transitions


COVISIT_WINDOW = 3


def build_tables(sequences: list[np.ndarray], n_items: int) -> FeatureTables:
    """Count popularity, direct transitions and windowed co-visits over index-encoded sequences."""
    nonempty = [s for s in sequences if s.size]
    flat = np.concatenate(nonempty) if nonempty else np.zeros(0, dtype=np.int64)
    popularity = np.bincount(flat, minlength=n_items).astype(np.float32)
    trans_rows, trans_cols, co_rows, co_cols = [], [], [], []
    for seq in nonempty:
        for gap in range(1, COVISIT_WINDOW + 1):
            if seq.size <= gap:
                break
            a, b = seq[:-gap], seq[gap:]
            keep = a != b
            if gap == 1:
                trans_rows.append(a[keep])
                trans_cols.append(b[keep])
            co_rows += [a[keep], b[keep]]
            co_cols += [b[keep], a[keep]]
    empty = np.zeros(0, dtype=np.int64)
    transitions = Csr.from_pairs(np.concatenate(trans_rows or [empty]), np.concatenate(trans_cols or [empty]), n_items)
    covisits = Csr.from_pairs(np.concatenate(co_rows or [empty]), np.concatenate(co_cols or [empty]), n_items)
    return FeatureTables(popularity, transitions, covisits, transitions.row_sums().astype(np.float32))
