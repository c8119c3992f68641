"""The stage cores' fast id/row conversions answer exactly (same ids, same float32 bytes) what the straightforward
code they replaced answered: per-item loops over candidates and rows, `[item_ids[r] for r in rows]`.

The references are the previous `retrieve_candidates` / `rank_candidates` bodies, kept verbatim; the model calls
inside them are themselves checked against their own references in tests/recmesh/test_fast_paths_equivalence.py.
"""

from __future__ import annotations

import numpy as np

from recmesh.pipeline import Model
from services.candidate_generation import core as cg
from services.ranking import core as rk
from serving.vectors import pack
from tests.helpers import sample_sessions


def ref_retrieve(model: Model, query: cg.CandidateQuery) -> cg.Candidates:
    unknown: list[str] = []
    if query.query_vector:
        vector = cg.parse_query_vector(query.query_vector, model)
    else:
        history, unknown = model.recent_known(query.item_ids)
        if history.size == 0:
            return cg.Candidates([], np.zeros(0, dtype=np.float32), model.version, unknown)
        vector = model.query(history)
    excluded, _ = model.lookup(list(query.exclude_item_ids))
    exclude = np.unique(excluded) if excluded.size else None
    k = query.k
    if exclude is None:
        rows, scores = model.index.search(vector, min(model.n_items, k))
    else:
        ids, all_scores = model.index.search(vector, min(model.n_items, k + int(exclude.size)))
        keep = ~np.isin(ids, exclude)
        rows, scores = ids[keep][:k], all_scores[keep][:k]
    return cg.Candidates([model.item_ids[r] for r in rows], scores, model.version, unknown)


def ref_rank(model: Model, query: rk.RankQuery) -> rk.Ranked:
    history, unknown = model.recent_known(query.session_item_ids)
    rows: list[int] = []
    keep: list[int] = []
    seen: set[int] = set()
    for position, item in enumerate(query.candidate_ids):
        row = model.index_of.get(item)
        if row is None:
            unknown.append(item)
        elif row not in seen:
            seen.add(row)
            rows.append(row)
            keep.append(position)
    candidates = np.array(rows, dtype=np.int64)
    ranked, probabilities = model.rank(history, candidates, query.retrieval_scores[keep])
    if query.k:
        ranked, probabilities = ranked[: query.k], probabilities[: query.k]
    return rk.Ranked(
        [model.item_ids[r] for r in ranked],
        np.asarray(probabilities, dtype=np.float32),
        model.version,
        list(dict.fromkeys(unknown)),
    )


def assert_same(got: cg.Candidates | rk.Ranked, want: cg.Candidates | rk.Ranked) -> None:
    assert got.item_ids == want.item_ids
    assert got.scores.dtype == want.scores.dtype and got.scores.tobytes() == want.scores.tobytes()
    assert (got.model_version, got.unknown_item_ids) == (want.model_version, want.unknown_item_ids)


def test_retrieve_candidates_equals_the_reference(model: Model):
    rng = np.random.default_rng(0)
    sessions = sample_sessions(150)
    for i, session in enumerate(sessions):
        session = session[: int(rng.integers(1, len(session) + 1))]
        if i % 5 == 0:
            session = [*session, "no-such-item"]
        exclude: list[str] = [[], session, [*session, *session[:2], "nope"]][i % 3]
        if i % 7 == 0:
            exclude = [model.item_ids[r] for r in rng.integers(0, model.n_items, 400)]
        vector = model.query(model.recent_known(session)[0]) if i % 11 else rng.standard_normal(model.dim)
        for k in (1, 25, 150):
            for query in (
                cg.validate_query(item_ids=session, k=k, exclude_item_ids=exclude),
                cg.validate_query(query_vector=pack(np.asarray(vector, np.float32)), k=k, exclude_item_ids=exclude),
            ):
                assert_same(cg.retrieve_candidates(model, query), ref_retrieve(model, query))
    unknown_only = cg.validate_query(item_ids=["x", "y"], k=10)
    assert_same(cg.retrieve_candidates(model, unknown_only), ref_retrieve(model, unknown_only))


def test_rank_candidates_equals_the_reference(model: Model):
    rng = np.random.default_rng(1)
    for i, session in enumerate(sample_sessions(150)):
        session = session[: int(rng.integers(1, len(session) + 1))]
        history, _ = model.recent_known(session)
        rows, scores = model.retrieve(model.query(history), 150, np.unique(history))
        ids = [model.item_ids[r] for r in rows]
        if i % 3 == 1:  # repeats and unknown candidates: the slow path
            ids = [*ids[:50], "no-such-item", *ids[10:20], *ids[50:], "no-such-item"]
            scores = rng.standard_normal(len(ids)).astype(np.float32)
        if i % 4 == 2:  # random catalogue items, unsorted scores
            ids = [model.item_ids[r] for r in rng.choice(model.n_items, 200, replace=False)]
            scores = rng.standard_normal(len(ids)).astype(np.float32)
        if i % 10 == 0:
            session = ["unknown-session-item"]  # nothing to rank against: retrieval order
        for k in (0, 1, 10):
            query = rk.validate_query(session_item_ids=session, candidate_ids=ids, retrieval_scores=scores, k=k)
            assert_same(rk.rank_candidates(model, query), ref_rank(model, query))
