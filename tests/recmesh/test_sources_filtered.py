"""Candidate sources under a filter mask: only allowed rows, k filled when k allowed rows exist, exclusions kept,
the ANN answer equal to (exact path) or close to (over-fetch path) the exact top-k over the allowed rows, and no
change at all without a mask."""

from __future__ import annotations

import numpy as np
import pytest

from recmesh.index.base import exact_allowed, search_excluding
from recmesh.index.scann_index import ScannIndex
from recmesh.pipeline import Model
from recmesh.sources import Session
from recmesh.sources.ann import AnnSource
from recmesh.sources.recipe import gather, parse_recipe
from tests.helpers import sample_sessions

K = 150
NONE = np.zeros(0, dtype=np.int64)


def random_mask(n: int, passing: int, seed: int) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    mask[np.random.default_rng(seed).choice(n, passing, replace=False)] = True
    return mask


def masks(n: int) -> dict[str, np.ndarray]:
    """Pass fractions 50 %, 20 %, 1 % and exactly 10 items."""
    return {
        "50%": random_mask(n, n // 2, 1),
        "20%": random_mask(n, n // 5, 2),
        "1%": random_mask(n, n // 100, 3),
        "10 items": random_mask(n, 10, 4),
    }


def sessions(model: Model, count: int) -> list[Session]:
    """Realistic sessions (their own items excluded), each with the caller bringing 300 random rows."""
    rng = np.random.default_rng(9)
    out = []
    for items in sample_sessions(count):
        history = model.lookup(items)[0][-50:]
        given = rng.integers(0, model.n_items, 300)
        out.append(Session(history, model.query(history), np.unique(history), given))
    return out


def with_mask(session: Session, allowed: np.ndarray) -> Session:
    return Session(session.history, session.query, session.exclude, session.given, allowed)


def exact_top(model: Model, session: Session, allowed: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The reference: every row scored against the query, the allowed non-excluded ones, best first, ties by row."""
    assert session.query is not None
    scores = np.asarray(model.space.context_vectors) @ session.query
    rows = np.flatnonzero(allowed & ~np.isin(np.arange(model.n_items), session.exclude))
    order = np.argsort(-scores[rows], kind="stable")[:k]
    return rows[order], scores[rows][order]


def unfiltered_then_masked(model: Model, name: str, session: Session, allowed: np.ndarray, k: int) -> np.ndarray:
    """What a filtered source must answer: its whole unfiltered answer, the disallowed rows dropped, cut to k."""
    everything, _ = model.sources[name].candidates(session, model.n_items)
    return everything[allowed[everything]][:k]


# ------------------------------------------------------------------------------------- every source, every mask


@pytest.mark.parametrize("fraction", ["50%", "20%", "1%", "10 items"])
def test_every_source_returns_only_allowed_rows_and_fills_k(model: Model, fraction: str):
    allowed = masks(model.n_items)[fraction]
    for session in sessions(model, 20):
        filtered = with_mask(session, allowed)
        available = int(np.count_nonzero(allowed & ~np.isin(np.arange(model.n_items), session.exclude)))
        for name, source in model.sources.items():
            rows, scores = source.candidates(filtered, K)
            assert rows.dtype == np.int64 and scores.dtype == np.float32 and rows.size == scores.size, name
            assert allowed[rows].all(), f"{name} returned rows the filter does not allow"
            assert not np.isin(rows, session.exclude).any(), f"{name} returned an excluded row"
            assert np.unique(rows).size == rows.size, name
            if name in ("ann", "popular"):  # these can reach every row: k is filled whenever possible
                assert rows.size == min(K, available), (name, fraction)
            if name != "ann":  # the rest keep their own order: the unfiltered answer with disallowed rows dropped
                assert rows.tolist() == unfiltered_then_masked(model, name, session, allowed, K).tolist(), name


def test_covisit_fills_k_from_further_neighbours_when_the_filter_removes_the_closest(model: Model):
    session = sessions(model, 1)[0]
    neighbours, _ = model.sources["covisit"].candidates(session, model.n_items)
    assert neighbours.size > 40  # the test needs a session with many neighbours
    allowed = np.ones(model.n_items, dtype=bool)
    allowed[neighbours[:20]] = False  # the 20 best neighbours do not pass
    rows, _ = model.sources["covisit"].candidates(with_mask(session, allowed), 20)
    assert rows.tolist() == neighbours[20:40].tolist()


def test_popular_walks_past_a_filter_that_passes_only_the_least_popular(model: Model):
    source = model.sources["popular"]
    order = np.argsort(-model.space.tables.popularity, kind="stable")
    for tail in (model.n_items // 3, 30):  # a walk that doubles to the end; the few-rows path
        allowed = np.zeros(model.n_items, dtype=bool)
        allowed[order[-tail:]] = True
        exclude = np.sort(order[-5:])
        rows, scores = source.candidates(Session(NONE, None, exclude, allowed=allowed), K)
        want = [r for r in order[-tail:] if r not in exclude][:K]
        assert rows.tolist() == want
        assert (
            scores.tolist()
            == (model.space.tables.popularity[want] / model.space.tables.popularity.max()).astype(np.float32).tolist()
        )


def test_a_mask_that_allows_nothing_gives_empty_answers(model: Model):
    nothing = np.zeros(model.n_items, dtype=bool)
    for session in sessions(model, 5):
        for name, source in model.sources.items():
            rows, scores = source.candidates(with_mask(session, nothing), K)
            assert rows.size == 0 and scores.size == 0, name
    assert model.popular(10, allowed=nothing)[0].size == 0
    assert model.recommend(sessions(model, 1)[0].history, 10, allowed=nothing)[0].size == 0
    assert model.recommend(NONE, 10, allowed=nothing)[0].size == 0


# ------------------------------------------------------------------------------------------------------- ann


def test_ann_with_a_mask_equals_the_exact_top_k_over_the_allowed_rows(model: Model):
    """The test catalogue is small (2000 rows): every mask takes the exact path."""
    for allowed in masks(model.n_items).values():
        for session in sessions(model, 20):
            rows, scores = model.sources["ann"].candidates(with_mask(session, allowed), K)
            want_rows, want_scores = exact_top(model, session, allowed, K)
            assert rows.tolist() == want_rows.tolist()
            np.testing.assert_allclose(scores, want_scores, rtol=0, atol=1e-5)


def test_ann_over_fetch_falls_back_to_exact_when_the_filter_removes_the_index_answer(model: Model):
    """Forced onto the over-fetch path; a mask passing only the rows least like the query leaves the over-fetched
    rows all disallowed, so the source must score the allowed rows exactly."""
    source = AnnSource(model.index, model.n_items, model.space.context_vectors, exact_fraction=0, exact_rows=0)
    for session in sessions(model, 10):
        assert session.query is not None
        scores = np.asarray(model.space.context_vectors) @ session.query
        allowed = np.zeros(model.n_items, dtype=bool)
        allowed[np.argsort(scores)[: model.n_items // 2]] = True  # the worse half
        rows, _ = source.candidates(with_mask(session, allowed), K)
        assert rows.tolist() == exact_top(model, session, allowed, K)[0].tolist()


def test_ann_over_fetch_on_a_tree_index_agrees_with_the_exact_top_k():
    """A tree index (partitions, AH, reordering), as a large catalogue serves; the over-fetch path forced."""
    rng = np.random.default_rng(6)
    n, dim = 6000, 16
    centres = rng.standard_normal((40, dim))
    vectors = (centres[rng.integers(0, 40, n)] + 0.5 * rng.standard_normal((n, dim))).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    params = {
        "mode": "tree_ah",
        "k": 50,
        "num_leaves": 80,
        "num_leaves_to_search": 20,
        "training_sample_size": n,
        "dims_per_block": 2,
        "anisotropic_quantization_threshold": 0.2,
        "reorder": 400,
    }
    index = ScannIndex.build(vectors, params)
    source = AnnSource(index, n, vectors, exact_fraction=0, exact_rows=0)
    queries = vectors[rng.integers(0, n, 40)] + 0.1 * rng.standard_normal((40, dim)).astype(np.float32)
    for allowed in (random_mask(n, n // 2, 1), random_mask(n, n // 5, 2)):
        recalls = []
        for query in queries:
            exclude = np.unique(rng.integers(0, n, 5))
            rows, scores = source.candidates(Session(NONE, query, exclude, allowed=allowed), 50)
            assert rows.size == 50 and allowed[rows].all() and not np.isin(rows, exclude).any()
            assert np.all(np.diff(scores) <= 1e-6)  # best first
            exact = vectors @ query
            candidates = np.flatnonzero(allowed & ~np.isin(np.arange(n), exclude))
            want = candidates[np.argsort(-exact[candidates], kind="stable")[:50]]
            recalls.append(np.isin(rows, want).mean())
            np.testing.assert_allclose(scores, exact[rows], atol=1e-4)  # comparable: the same inner products
        assert np.mean(recalls) >= 0.9, np.mean(recalls)


def test_the_exact_path_breaks_ties_by_row_even_at_the_cut():
    rng = np.random.default_rng(8)
    for _ in range(300):
        n = int(rng.integers(1, 300))
        vectors = rng.integers(-2, 3, (n, 3)).astype(np.float32)  # small integers: many exactly equal scores
        query = rng.integers(-2, 3, 3).astype(np.float32)
        allowed, exclude, k = rng.random(n) < 0.5, np.unique(rng.integers(0, n, 5)), int(rng.integers(1, 40))
        rows, _ = exact_allowed(vectors, query, k, exclude, allowed)
        candidates = np.flatnonzero(allowed & ~np.isin(np.arange(n), exclude))
        assert rows.tolist() == candidates[np.argsort(-(vectors[candidates] @ query), kind="stable")[:k]].tolist()


def test_ann_without_vectors_refuses_a_filter_but_serves_without_one(model: Model):
    source = AnnSource(model.index, model.n_items)
    session = sessions(model, 1)[0]
    assert source.candidates(session, 10)[0].size == 10
    with pytest.raises(ValueError, match="no vectors"):
        source.candidates(with_mask(session, np.ones(model.n_items, dtype=bool)), 10)


# -------------------------------------------------------------------------------------------- the pipeline


def test_model_stages_take_the_mask(model: Model):
    allowed = masks(model.n_items)["20%"]
    recipe = parse_recipe("ann:100,covisit:100,popular:20")
    for session in sessions(model, 10):
        pool = model.candidates(session.history, recipe, allowed=allowed)
        assert allowed[pool.rows].all() and pool.rows.size >= 100
        same = gather(model.sources, recipe, with_mask(session, allowed))
        assert pool.rows.tolist() == same.rows.tolist()
        ranked, _ = model.recommend(session.history, 10, allowed=allowed)
        assert ranked.size == 10 and allowed[ranked].all()
        assert session.query is not None
        retrieved, _ = model.retrieve(session.query, K, session.exclude, allowed)
        assert retrieved.tolist() == exact_top(model, session, allowed, K)[0].tolist()
        ann_only, _ = model.recommend(session.history, 10, n_candidates=K, allowed=allowed)
        assert ann_only.size == 10 and allowed[ann_only].all()
    cold, _ = model.recommend(NONE, 10, allowed=allowed)
    assert cold.tolist() == model.popular(10, allowed=allowed)[0].tolist()
    order = np.argsort(-model.space.tables.popularity, kind="stable")
    assert cold.tolist() == order[allowed[order]][:10].tolist()


def test_no_mask_changes_nothing(model: Model):
    """allowed=None answers byte for byte what the code before masks answered (its reference copies here)."""
    pop = model.space.tables.popularity
    rng = np.random.default_rng(3)
    for k, exclude in ((10, None), (40, rng.integers(0, model.n_items, 30)), (0, None), (5000, NONE)):
        order = np.argsort(-pop, kind="stable")
        if exclude is not None and exclude.size:
            order = order[~np.isin(order, exclude)]
        want = order[:k]
        got = model.popular(k, exclude)
        assert got[0].tobytes() == want.tobytes() and got[0].dtype == want.dtype
        want_scores = pop[want] / max(float(pop.max()), 1.0)
        assert got[1].tobytes() == want_scores.tobytes() and got[1].dtype == want_scores.dtype
    for session in sessions(model, 10):
        assert session.query is not None
        ann_rows, ann_scores = model.sources["ann"].candidates(session, K)
        ref_rows, ref_scores = search_excluding(model.index, session.query, K, session.exclude, model.n_items)
        assert ann_rows.tobytes() == ref_rows.tobytes() and ann_scores.tobytes() == ref_scores.tobytes()
        assert Session(session.history, session.query, session.exclude, allowed=None).allowed_count is None


def test_bad_masks_are_refused_with_a_clear_error(model: Model):
    recipe = parse_recipe("ann:10")
    history = sessions(model, 1)[0].history
    with pytest.raises(ValueError, match="has 5 entries but the model has"):
        model.candidates(history, recipe, allowed=np.ones(5, dtype=bool))
    with pytest.raises(ValueError, match="1-d bool array"):
        model.candidates(history, recipe, allowed=np.ones(model.n_items, dtype=np.int64))
    with pytest.raises(ValueError, match="allowed_count"):
        model.candidates(history, recipe, allowed=np.ones(model.n_items, dtype=bool), allowed_count=-1)
    with pytest.raises(ValueError, match="has 5 entries"):
        model.popular(3, allowed=np.ones(5, dtype=bool))
    with pytest.raises(ValueError, match="has 5 entries"):
        model.sources["covisit"].candidates(Session(history, None, allowed=np.ones(5, dtype=bool)), 3)
