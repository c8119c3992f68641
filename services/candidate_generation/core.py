"""Candidate generation without gRPC: nearest items of a query vector or of a list of items, in one model version.

Usage::

    generator = CandidateGenerator(registry)
    found = await generator.retrieve(item_ids=["a", "b"], k=100, exclude_item_ids=["a", "b"])
    found.item_ids, found.scores, found.model_version, found.unknown_item_ids

The search is `Model.retrieve` (the ANN index with exclusions), the query by items is `Model.query`: the same
functions the offline pipeline calls, so a served candidate list equals the offline one for the same bundle. With
``sources`` (a recipe, ``"ann:100,covisit:100"``) the pool is `Model.candidates`, the offline pipeline's, in the
same hop: every source of the recipe runs here.
A request is checked once (:func:`validate_query`), before the model version it pins is looked up (a request
never loads one: recmesh.registry).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from recmesh.pipeline import Model
from recmesh.registry import ModelRegistry
from recmesh.sources.recipe import KNOWN_SOURCES, Recipe, RecipeError, parse_recipe
from serving import limits
from serving.errors import InvalidArgument
from serving.vectors import unpack_vector


@dataclass(frozen=True)
class CandidateQuery:
    """A request that passed the checks needing no model: one query form, the caps, k resolved (0 -> default)."""

    query_vector: bytes  # packed float32, or empty when the query is item_ids
    item_ids: Sequence[str]
    k: int
    exclude_item_ids: Sequence[str]
    sources: str = ""  # a recipe checked for syntax, names and caps; the model checks what it has
    given_item_ids: Sequence[str] = ()


@dataclass(frozen=True)
class Candidates:
    """Retrieved items best first, their similarity scores, and what the answer is based on."""

    item_ids: list[str]
    scores: np.ndarray  # float32, one per item
    model_version: str
    unknown_item_ids: list[str]  # query ids not in the catalogue, first occurrence order, no duplicates


def validate_query(
    *,
    query_vector: bytes = b"",
    item_ids: Sequence[str] = (),
    k: int = 0,
    exclude_item_ids: Sequence[str] = (),
    sources: str = "",
    given_item_ids: Sequence[str] = (),
) -> CandidateQuery:
    """Exactly one query form (with `sources`, either or both: the vector is the ANN query, the items the
    session); 0 <= k <= CANDIDATES_MAX_K (0 = CANDIDATES_DEFAULT_K, or the whole pool with `sources`); at most
    MAX_ITEMS query / given ids and MAX_EXCLUDE exclusions; a recipe of known sources within the caps. Anything
    else is InvalidArgument naming the range."""
    if not sources and bool(query_vector) == bool(item_ids):
        which = "both were set" if query_vector else "neither was set"
        raise InvalidArgument(f"set exactly one of query_vector and item_ids; {which}", field="query_vector")
    if not 0 <= k <= limits.CANDIDATES_MAX_K:
        raise InvalidArgument(
            f"k must be >= 0 and <= {limits.CANDIDATES_MAX_K} (0 = default {limits.CANDIDATES_DEFAULT_K}), got {k}",
            field="k",
        )
    if len(item_ids) > limits.MAX_ITEMS:
        raise InvalidArgument(f"at most {limits.MAX_ITEMS} item_ids, got {len(item_ids)}", field="item_ids")
    if len(exclude_item_ids) > limits.MAX_EXCLUDE:
        raise InvalidArgument(
            f"at most {limits.MAX_EXCLUDE} exclude_item_ids, got {len(exclude_item_ids)}", field="exclude_item_ids"
        )
    if len(given_item_ids) > limits.MAX_ITEMS:
        raise InvalidArgument(
            f"at most {limits.MAX_ITEMS} given_item_ids, got {len(given_item_ids)}", field="given_item_ids"
        )
    if sources:
        _recipe(sources, KNOWN_SOURCES)
    # with sources, k = 0 keeps the whole merged pool
    resolved_k = k if sources else k or limits.CANDIDATES_DEFAULT_K
    return CandidateQuery(query_vector, item_ids, resolved_k, exclude_item_ids, sources, given_item_ids)


def _recipe(text: str, available: Iterable[str]) -> Recipe:
    if len(text) > MAX_RECIPE_CHARS:
        raise InvalidArgument(f"sources is longer than {MAX_RECIPE_CHARS} characters", field="sources")
    try:
        return parse_recipe(text, available)
    except RecipeError as e:
        raise InvalidArgument(str(e), field="sources") from e


MAX_RECIPE_CHARS = 200


def parse_query_vector(data: bytes, model: Model) -> np.ndarray:
    """The packed float32 query as a (dim,) array; INVALID_ARGUMENT unless it has the model's dimension, only
    finite values and a squared norm within float32's range (so that every score is finite)."""
    vector = unpack_vector(data, model.dim, "query_vector", f"model {model.version}")
    if not np.isfinite(vector).all():
        raise InvalidArgument("query_vector contains NaN or infinite values", field="query_vector")
    wide = vector.astype(np.float64)
    if float(np.dot(wide, wide)) > limits.MAX_QUERY_SQUARED_NORM:  # its scores could overflow float32
        raise InvalidArgument(QUERY_TOO_LARGE, field="query_vector")
    return vector


QUERY_TOO_LARGE = "query_vector is too large: its squared norm overflows float32 (its scores would not be finite)"


def retrieve_candidates(model: Model, query: CandidateQuery) -> Candidates:
    """One retrieval in `model`. The query is `query.query_vector`, or the session query of `query.item_ids`
    (oldest first, the most recent MAX_SESSION known ones). Unknown query ids are reported; when none is known the
    answer is empty (the caller falls back to popular items). Unknown excluded ids are ignored."""
    if query.sources:
        return _gather(model, query)
    unknown: list[str] = []
    if query.query_vector:
        vector = parse_query_vector(query.query_vector, model)
    else:
        history, unknown = model.recent_known(query.item_ids)
        if history.size == 0:
            return Candidates([], np.zeros(0, dtype=np.float32), model.version, unknown)
        vector = model.query(history)
    excluded, _ = model.lookup(list(query.exclude_item_ids))
    rows, scores = model.retrieve(vector, query.k, np.unique(excluded) if excluded.size else None)
    if not np.isfinite(scores).all():  # never an inf or NaN score on the wire; only the caller's vector can do it
        raise InvalidArgument(QUERY_TOO_LARGE, field="query_vector")
    return Candidates(model.ids_of(rows), scores, model.version, unknown)


def _gather(model: Model, query: CandidateQuery) -> Candidates:
    """The recipe's merged pool, as Model.candidates computes it offline (the first k kept when k was given). The
    session is item_ids (its most recent MAX_SESSION known ones); the ANN query the caller's vector, else the
    session's. Sources that need what the request lacks (ann and covisit without a session) find nothing."""
    recipe = _recipe(query.sources, model.sources)
    history, unknown = model.recent_known(query.item_ids)
    vector = parse_query_vector(query.query_vector, model) if query.query_vector else None
    if vector is None and history.size:
        vector = model.query(history)
    excluded, _ = model.lookup(list(query.exclude_item_ids))
    given, _ = model.lookup(list(query.given_item_ids))
    pool = model.candidates(history, recipe, np.unique(excluded), given, query=vector)
    rows, scores = pool.rows[: query.k or None], pool.scores[: query.k or None]
    if not np.isfinite(scores).all():  # as for ANN alone: only the caller's vector can do it
        raise InvalidArgument(QUERY_TOO_LARGE, field="query_vector")
    return Candidates(model.ids_of(rows), scores, model.version, unknown)


class CandidateGenerator:
    """Retrieval in the model version each request pins (empty = the registry's current one)."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    async def retrieve(
        self,
        *,
        query_vector: bytes = b"",
        item_ids: Sequence[str] = (),
        k: int = 0,
        exclude_item_ids: Sequence[str] = (),
        model_version: str = "",
        sources: str = "",
        given_item_ids: Sequence[str] = (),
    ) -> Candidates:
        query = validate_query(
            query_vector=query_vector,
            item_ids=item_ids,
            k=k,
            exclude_item_ids=exclude_item_ids,
            sources=sources,
            given_item_ids=given_item_ids,
        )
        # A version the registry does not hold is NOT_FOUND (serving.errors); the lease keeps it while in use.
        async with self.registry.lease(model_version) as model:
            return retrieve_candidates(model, query)
