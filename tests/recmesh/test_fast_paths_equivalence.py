"""The vectorised hot paths give exactly (bit for bit) what the straightforward code they replaced gave.

The references below are the previous implementations, kept verbatim: a per-row CSR lookup, base features
summed item by item and stacked with np.column_stack, crosses with np.hstack, exclusions with np.isin, the
bundle's vectors as np.memmap. They are compared on the test bundle (realistic sessions and candidates) and on
random inputs (repeated and unknown rows, empty table rows, odd sizes, float64 scores).
"""

from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from recmesh.index import search_excluding
from recmesh.index.base import is_in
from recmesh.index.scann_index import ScannIndex
from recmesh.pipeline import Model
from recmesh.rank import tables as tables_mod
from recmesh.rank.features import BASE_FEATURES, RECENT_DECAY, RECENT_ITEMS, ItemSpace, base_features, with_crosses
from recmesh.rank.model import Ranker
from recmesh.rank.tables import Csr, lookup
from tests.helpers import sample_sessions

# ------------------------------------------------------------------------------------------------ references


def ref_lookup(csr: Csr, row: int, cols: np.ndarray) -> np.ndarray:
    start, end = csr.indptr[row], csr.indptr[row + 1]
    if start == end:
        return np.zeros(cols.size, dtype=np.float32)
    row_cols = csr.indices[start:end]
    pos = np.searchsorted(row_cols, cols)
    pos_clipped = np.minimum(pos, row_cols.size - 1)
    found = row_cols[pos_clipped] == cols
    return np.where(found, csr.data[start:end][pos_clipped], 0.0).astype(np.float32)


def ref_base_features(
    space: ItemSpace, history: np.ndarray, candidates: np.ndarray, retrieval_scores: np.ndarray, session_unit: Any
) -> np.ndarray:
    tables = space.tables
    last = int(history[-1])
    cand_unit = space.vectors[candidates]
    from_last = ref_lookup(tables.transitions, last, candidates)
    recent = history[::-1][:RECENT_ITEMS]
    trans_recent = np.zeros(candidates.size, dtype=np.float32)
    covisit_recent = np.zeros(candidates.size, dtype=np.float32)
    for j, item in enumerate(recent):
        weight = RECENT_DECAY**j
        trans_recent += weight * ref_lookup(tables.transitions, int(item), candidates)
        covisit_recent += weight * ref_lookup(tables.covisits, int(item), candidates)
    columns = (
        retrieval_scores,
        np.log1p(np.arange(candidates.size, dtype=np.float32)),
        cand_unit @ session_unit,
        cand_unit @ space.vectors[last],
        space.context_vectors[candidates] @ space.vectors[last],
        np.log1p(tables.popularity[candidates]),
        np.log1p(from_last),
        from_last / (tables.transition_out[last] + 1.0),
        np.log1p(trans_recent),
        np.log1p(covisit_recent),
        np.full(candidates.size, np.log1p(history.size), dtype=np.float32),
    )
    return np.column_stack(columns).astype(np.float32)


def ref_with_crosses(standardised: np.ndarray) -> np.ndarray:
    left, right = np.triu_indices(standardised.shape[1], k=1)  # every pair (a, b), a < b, in combinations order
    return np.hstack([standardised, standardised[:, left] * standardised[:, right]])


def ref_probabilities(ranker: Ranker, base: np.ndarray) -> np.ndarray:
    logits = ref_with_crosses((base - ranker.mean) / ranker.scale) @ ranker.coef + ranker.intercept
    return 1.0 / (1.0 + np.exp(-logits))


def ref_rank(
    model: Model, space: ItemSpace, history: np.ndarray, candidates: np.ndarray, scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    if candidates.size == 0 or history.size == 0:
        return candidates, scores
    session_unit = model.query(history)
    probs = ref_probabilities(model.ranker, ref_base_features(space, history, candidates, scores, session_unit))
    order = np.argsort(-probs, kind="stable")
    return candidates[order], probs[order]


def ref_search_excluding(
    index: Any, query: np.ndarray, k: int, exclude: np.ndarray | None, n_items: int
) -> tuple[np.ndarray, np.ndarray]:
    if exclude is None or exclude.size == 0:
        return index.search(query, min(n_items, k))
    ids, scores = index.search(query, min(n_items, k + int(exclude.size)))
    keep = ~np.isin(ids, exclude)
    return ids[keep][:k], scores[keep][:k]


def same(a: np.ndarray, b: np.ndarray) -> bool:
    """Same shape, dtype and bytes (NaN-safe, and -0.0 differs from 0.0)."""
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


# ------------------------------------------------------------------------------------------------ inputs


@pytest.fixture(scope="module")
def memmap_space(bundle_path: Path, model: Model) -> ItemSpace:
    """The bundle's vectors as the np.memmap the model used to hold."""
    return ItemSpace(
        np.load(bundle_path / "vectors.npy", mmap_mode="r"),
        np.load(bundle_path / "context_vectors.npy", mmap_mode="r"),
        model.space.tables,
    )


def realistic(model: Model, n: int = 300) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(history, candidates, retrieval scores) of session prefixes, candidates as the pipeline retrieves them."""
    rng = np.random.default_rng(0)
    cases = []
    for session in sample_sessions(n):
        cut = int(rng.integers(1, len(session) + 1))
        history, _ = model.recent_known(session[:cut])
        if history.size:
            candidates, scores = model.retrieve(model.query(history), 150, np.unique(history))
            cases.append((history, candidates, scores))
    return cases


def random_cases(model: Model, n: int = 200) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Random histories (repeats, 1 to 60 items) and candidate rows (unsorted, repeats, history items)."""
    rng = np.random.default_rng(1)
    cases = []
    for i in range(n):
        history = rng.integers(0, model.n_items, int(rng.integers(1, 61)))
        if i % 4 == 0:
            history = rng.choice(history[:3], history.size)  # few distinct items, repeated
        candidates = rng.integers(0, model.n_items, int(rng.choice([1, 2, 7, 150, 600])))
        if i % 3 == 0:
            candidates[: history.size] = history[: candidates.size]
        scores = rng.standard_normal(candidates.size).astype(np.float64 if i % 5 == 0 else np.float32)
        cases.append((history, candidates, scores))
    return cases


# ------------------------------------------------------------------------------------------------ tests


def test_bundle_vectors_are_plain_arrays_still_mapped_from_the_file(model: Model):
    for array in (model.space.vectors, model.space.context_vectors):
        assert type(array) is np.ndarray and isinstance(array.base, np.memmap)
        assert not array.flags.writeable


def test_lookup_equals_per_row_lookups_on_random_tables():
    rng = np.random.default_rng(2)
    for n, pairs in [(1, 0), (5, 3), (40, 200), (300, 5000)]:
        tables = [Csr.from_pairs(rng.integers(0, n, pairs), rng.integers(0, n, pairs), n) for _ in range(2)]
        for _ in range(50):
            # cells of both tables in any order, repeated cells, empty rows; repeated and unsorted columns
            which, rows = rng.integers(0, 2, 9), rng.integers(0, n, 9)
            cells = [(tables[int(t)], int(r)) for t, r in zip(which, rows, strict=True)][: int(rng.integers(0, 10))]
            cols = rng.integers(0, n, int(rng.integers(0, 50)))
            got = lookup(cells, cols)
            assert got.shape == (len(cells), cols.size) and got.dtype == np.float32
            for i, (csr, row) in enumerate(cells):
                assert same(got[i], ref_lookup(csr, row, cols))
    assert (tables_mod._column_positions(1) == -1).all()  # the shared map is left clean


def test_lookup_refuses_columns_out_of_range_and_leaves_its_map_clean():
    csr = Csr.from_pairs(np.array([0, 1, 2]), np.array([1, 2, 0]), 3)
    for cols in (np.array([0, 3]), np.array([-1, 2])):
        with pytest.raises(IndexError):
            lookup([(csr, 0)], cols)
    assert (tables_mod._column_positions(1) == -1).all()
    assert same(lookup([(csr, 0)], np.array([1, 2, 1])), np.array([[1.0, 0.0, 1.0]], dtype=np.float32))


def test_lookup_is_right_in_concurrent_threads(model: Model):
    """Each thread has its own column map."""
    tables = model.space.tables
    cases = random_cases(model, 40)

    def check(case: tuple[np.ndarray, np.ndarray, np.ndarray]) -> bool:
        history, candidates, _ = case
        cells = [(tables.covisits, int(r)) for r in history[:5]] + [(tables.transitions, int(history[0]))]
        got = lookup(cells, candidates)
        return all(same(got[i], ref_lookup(csr, row, candidates)) for i, (csr, row) in enumerate(cells))

    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(check, cases * 5))


def test_lookup_equals_per_row_lookups_on_the_bundle_tables(model: Model):
    tables = model.space.tables
    for history, candidates, _ in realistic(model, 100) + random_cases(model, 50):
        cells = [(csr, int(r)) for csr in (tables.transitions, tables.covisits) for r in history[::-1][:RECENT_ITEMS]]
        got = lookup(cells, candidates)
        for i, (csr, row) in enumerate(cells):
            assert same(got[i], ref_lookup(csr, row, candidates))


def test_with_crosses_equals_hstack_of_column_products():
    rng = np.random.default_rng(3)
    for rows in (0, 1, 7, 200, 1000):
        for dtype in (np.float32, np.float64):
            x = rng.standard_normal((rows, 11)).astype(dtype)
            got = with_crosses(x)
            assert same(got, ref_with_crosses(x)) and got.flags.c_contiguous
            assert same(with_crosses(x[::2]), ref_with_crosses(x[::2]))  # a non-contiguous input too


@pytest.fixture(scope="module")
def base_model(model: Model) -> Model:
    """The test bundle with a ranker over BASE_FEATURES, the feature set the references compute (the bundle's
    own ranker reads SOURCE_FEATURES)."""
    rng = np.random.default_rng(7)
    n = len(BASE_FEATURES)
    old = copy.copy(model)
    old.ranker = Ranker(
        rng.standard_normal(n).astype(np.float32),
        (1.0 + rng.random(n)).astype(np.float32),
        rng.standard_normal(n + n * (n - 1) // 2).astype(np.float32),
        0.1,
        BASE_FEATURES,
    )
    return old


@pytest.mark.filterwarnings("ignore:overflow encountered in exp")  # random scores: extreme logits
def test_base_features_probabilities_and_rank_equal_the_references(base_model: Model, memmap_space: ItemSpace):
    model = base_model
    cases = realistic(model) + random_cases(model)
    assert len(cases) > 400
    for history, candidates, scores in cases:
        session_unit = model.query(history)
        features = base_features(model.space, history, candidates, scores, session_unit)
        want = ref_base_features(memmap_space, history, candidates, scores, session_unit)
        assert same(features, want)
        assert same(model.ranker.probabilities(features), ref_probabilities(model.ranker, want))
        got_rows, got_probs = model.rank(history, candidates, scores)
        want_rows, want_probs = ref_rank(model, memmap_space, history, candidates, scores)
        assert same(got_rows, want_rows) and same(got_probs, want_probs)


def test_session_query_is_unchanged_by_plain_array_vectors(model: Model, memmap_space: ItemSpace):
    for history, _, _ in random_cases(model, 50):
        assert same(model.query(history), model.query(history.copy()))
        from recmesh.pipeline import session_query

        assert same(model.query(history), session_query(memmap_space.vectors[history], model.query_decay))


def test_is_in_equals_np_isin():
    rng = np.random.default_rng(4)
    for _ in range(300):
        values = rng.integers(-5, 60, int(rng.integers(0, 300)))
        among = rng.integers(-5, 60, int(rng.integers(1, 40)))  # unsorted, repeats
        assert same(is_in(values, among), np.isin(values, among))


def test_search_excluding_equals_the_np_isin_version_on_the_bundle(model: Model):
    rng = np.random.default_rng(5)
    for history, _, _ in realistic(model, 150):
        query = model.query(history)
        for exclude in (None, np.zeros(0, np.int64), np.unique(history), rng.integers(0, model.n_items, 300)):
            for k in (1, 10, 150):
                got = search_excluding(model.index, query, k, exclude, model.n_items)
                want = ref_search_excluding(model.index, query, k, exclude, model.n_items)
                assert same(got[0], want[0]) and same(got[1], want[1])


def test_search_excluding_equals_the_np_isin_version_on_a_tree_index():
    """The test bundle's index is brute force; the served catalogue's is a tree (partitions, AH, reordering)."""
    rng = np.random.default_rng(6)
    n, dim = 3000, 16
    centres = rng.standard_normal((30, dim))
    vectors = (centres[rng.integers(0, 30, n)] + 0.5 * rng.standard_normal((n, dim))).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    params = {
        "mode": "tree_ah",
        "k": 50,
        "num_leaves": 60,
        "num_leaves_to_search": 12,
        "training_sample_size": n,
        "dims_per_block": 2,
        "anisotropic_quantization_threshold": 0.2,
        "reorder": 200,
    }
    index = ScannIndex.build(vectors, params)
    for query in vectors[rng.integers(0, n, 100)] + 0.1 * rng.standard_normal((100, dim)).astype(np.float32):
        for exclude in (np.unique(rng.integers(0, n, 3)), rng.integers(0, n, 40)):
            got = search_excluding(index, query, 50, exclude, n)
            want = ref_search_excluding(index, query, 50, exclude, n)
            assert same(got[0], want[0]) and same(got[1], want[1])


def test_ids_of_equals_indexing_the_id_list(model: Model):
    rng = np.random.default_rng(7)
    for size in (0, 1, 150, 2000):
        rows = rng.integers(0, model.n_items, size)
        assert model.ids_of(rows) == [model.item_ids[r] for r in rows]
