"""Feature tables the ranker reads: item popularity and sparse item-to-item counts, built from sessions.

Stored as plain arrays (CSR parts) so a bundle needs no pickle. `lookup` reads the counts of a whole candidate
list from several rows in a few vectorised calls.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


@dataclass
class Csr:
    """A read-only square CSR matrix of counts: row i's columns are indices[indptr[i]:indptr[i+1]], sorted, each
    once."""

    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray

    @classmethod
    def from_pairs(cls, rows: np.ndarray, cols: np.ndarray, n: int) -> Csr:
        m = sp.csr_matrix((np.ones(rows.size, dtype=np.float32), (rows, cols)), shape=(n, n))
        m.sum_duplicates()
        m.sort_indices()
        return cls(m.indptr.astype(np.int64), m.indices.astype(np.int32), m.data.astype(np.float32))

    def row(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        start, end = self.indptr[row], self.indptr[row + 1]
        return self.indices[start:end], self.data[start:end]

    def row_sums(self) -> np.ndarray:
        return np.add.reduceat(np.append(self.data, 0), np.minimum(self.indptr[:-1], self.data.size)) * (
            np.diff(self.indptr) > 0
        )


def lookup(cells: Sequence[tuple[Csr, int]], cols: np.ndarray) -> np.ndarray:
    """Counts at (row, cols[j]) for each cell (table, row): a (len(cells), len(cols)) float32 array, zero where
    absent. `cols` are column ids of the tables (repeats allowed).

    The cells' entries are matched to `cols` through a dense column -> position map, in a few numpy calls
    whatever the number of cells. (A binary search of the columns in each row costs ~8 numpy calls per row, and
    its mispredicted branches, over a few hundred candidates, cost as much as the calls.)"""
    cols = np.asarray(cols)
    counts = np.zeros((len(cells), cols.size), dtype=np.float32)
    if not cells or cols.size == 0:
        return counts
    n_cols = max(csr.indptr.size - 1 for csr, _ in cells)
    if cols.min() < 0 or cols.max() >= n_cols:
        raise IndexError(f"columns must be in [0, {n_cols})")  # checked first: the map must be left clean
    entry_cols, entry_counts, lengths = [], [], []
    for csr, row in cells:
        start, end = csr.indptr[row], csr.indptr[row + 1]
        entry_cols.append(csr.indices[start:end])
        entry_counts.append(csr.data[start:end])
        lengths.append(end - start)
    entries = np.concatenate(entry_cols)
    position = _column_positions(n_cols)
    position[cols] = np.arange(cols.size, dtype=np.int32)  # a repeated column keeps one of its positions
    try:
        found = position[entries]  # the position of each entry's column in `cols`, -1 if not there
        kept = position[cols]  # where each column's counts are written (itself, or its repeat's)
    finally:
        position[cols] = -1
    hits = np.flatnonzero(found >= 0)
    cell = np.repeat(np.arange(len(cells)), lengths)
    counts[cell[hits], found[hits]] = np.concatenate(entry_counts)[hits]
    return counts[:, kept]


_scratch = threading.local()


def _column_positions(size: int) -> np.ndarray:
    """This thread's column -> position map, all -1 and at least `size` long; `lookup` leaves it all -1 again. One
    per thread, allocated once: a fresh map per call would cost a pass over a catalogue-sized array."""
    position: np.ndarray | None = getattr(_scratch, "position", None)
    if position is None or position.size < size:
        position = _scratch.position = np.full(size, -1, dtype=np.int32)
    return position


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


@dataclass
class OwnCounts:
    """The counts one training sequence added to the tables from position `start` on: what a ranker example at
    that position must not see (at serving time a session's future is in no table). Small dicts, row -> {col: n}.

    Usage::

        own = OwnCounts.of(sequence, t)  # the example: history sequence[:t], target sequence[t]
        own.at(own.transitions, row, candidates)  # the counts to subtract, aligned with candidates
    """

    transitions: dict[int, dict[int, float]]
    covisits: dict[int, dict[int, float]]
    popularity: dict[int, float]

    @classmethod
    def of(cls, sequence: np.ndarray, start: int) -> OwnCounts:
        seq = sequence.tolist()
        trans: dict[int, dict[int, float]] = {}
        cov: dict[int, dict[int, float]] = {}
        pop: dict[int, float] = {}
        for i in range(start, len(seq)):
            pop[seq[i]] = pop.get(seq[i], 0.0) + 1.0
        for gap in range(1, COVISIT_WINDOW + 1):
            for i in range(max(0, start - gap), len(seq) - gap):
                a, b = seq[i], seq[i + gap]
                if a == b:
                    continue
                if gap == 1:
                    _add(trans, a, b)
                _add(cov, a, b)
                _add(cov, b, a)
        return cls(trans, cov, pop)

    @staticmethod
    def at(table: dict[int, dict[int, float]], row: int, cols: np.ndarray) -> np.ndarray:
        out = np.zeros(cols.size, dtype=np.float32)
        entries = table.get(row)
        if entries:
            for col, n in entries.items():
                out[cols == col] = n
        return out

    def row_sum(self, table: dict[int, dict[int, float]], row: int) -> float:
        return float(sum(table.get(row, {}).values()))


def _add(table: dict[int, dict[int, float]], a: int, b: int) -> None:
    row = table.setdefault(a, {})
    row[b] = row.get(b, 0.0) + 1.0
