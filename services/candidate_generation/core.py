"""Candidate generation without gRPC: nearest items of a query vector or of a list of items, in one model version.

Usage::

    generator = CandidateGenerator(registry)
    found = await generator.retrieve(item_ids=["a", "b"], k=100, exclude_item_ids=["a", "b"])
    found.item_ids, found.scores, found.model_version, found.unknown_item_ids

The search is `Model.retrieve` (the ANN index with exclusions), the query by items is `Model.query`: the same
functions the offline pipeline calls, so a served candidate list equals the offline one for the same bundle. With
``sources`` (a recipe, ``"ann:100,covisit:100"``) the pool is `Model.candidates`, the offline pipeline's, in the
same hop: every source of the recipe runs here. A ``filter`` over the live item catalogue (and every item marked
``available: false``) removes items inside the sources, so they still fill their counts (services/candidate_generation/
filters.py); ``fill_from_popular`` tops a short pool up with popular items that pass.
A request is checked once (:func:`validate_query`), before the model version it pins is looked up (a request
never loads one: recmesh.registry).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from recmesh.catalog.table import Catalog
from recmesh.pipeline import Model
from recmesh.registry import ModelRegistry
from recmesh.sources.recipe import KNOWN_SOURCES, Recipe, RecipeError, parse_recipe
from services.candidate_generation.filters import ModelFilters
from serving import limits
from serving.catalog_live import LiveCatalog
from serving.errors import InvalidArgument, Unavailable
from serving.filters import check_syntax
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
    filter: str = ""  # checked for syntax; the catalogue checks names and types
    fill_from_popular: bool = False
    with_provenance: bool = False


_NO_ROWS = np.zeros(0, dtype=np.int64)


@dataclass(frozen=True)
class Candidates:
    """Retrieved items best first, their similarity scores, and what the answer is based on."""

    item_ids: list[str]
    scores: np.ndarray  # float32, one per item
    model_version: str
    unknown_item_ids: list[str]  # query ids not in the catalogue, first occurrence order, no duplicates
    source_names: list[str] = field(default_factory=list)  # with provenance: the recipe's sources (+ "fill")
    found_by: bytes = b""  # with provenance: per item, bit i = source_names[i] found it
    filled: int = 0  # items added from popular ones by fill_from_popular (the last ones)
    catalog_seq: int = 0
    catalog_stale_reason: str = ""
    rows: np.ndarray = field(default_factory=lambda: _NO_ROWS)  # the items' rows in the model version, int64


def validate_query(
    *,
    query_vector: bytes = b"",
    item_ids: Sequence[str] = (),
    k: int = 0,
    exclude_item_ids: Sequence[str] = (),
    sources: str = "",
    given_item_ids: Sequence[str] = (),
    filter: str = "",
    fill_from_popular: bool = False,
    with_provenance: bool = False,
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
    if filter:
        check_syntax(filter, "filter")
    # with sources, k = 0 keeps the whole merged pool
    resolved_k = k if sources else k or limits.CANDIDATES_DEFAULT_K
    return CandidateQuery(
        query_vector,
        item_ids,
        resolved_k,
        exclude_item_ids,
        sources,
        given_item_ids,
        filter,
        fill_from_popular,
        with_provenance,
    )


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


def retrieve_candidates(model: Model, query: CandidateQuery, allowed: np.ndarray | None = None) -> Candidates:
    """One retrieval in `model`. The query is `query.query_vector`, or the session query of `query.item_ids`
    (oldest first, the most recent MAX_SESSION known ones). Unknown query ids are reported; when none is known the
    answer is empty (the caller falls back to popular items). Unknown excluded ids are ignored. `allowed` (bool
    per model row, None = all) is what the filter and the catalogue's availability let through."""
    if query.sources or allowed is not None or query.fill_from_popular or query.with_provenance:
        # ANN alone as a one-source recipe: the same search, with the mask, the fill and provenance on one path
        return _gather(model, query if query.sources else replace(query, sources=f"ann:{query.k}"), allowed)
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
    return Candidates(model.ids_of(rows), scores, model.version, unknown, rows=rows)


def _gather(model: Model, query: CandidateQuery, allowed: np.ndarray | None) -> Candidates:
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
    excluded = np.unique(excluded)
    pool = model.candidates(history, recipe, excluded, given, query=vector, allowed=allowed)
    size = query.k or recipe.total
    rows, scores = pool.rows[:size], pool.scores[:size]
    if not np.isfinite(scores).all():  # as for ANN alone: only the caller's vector can do it
        raise InvalidArgument(QUERY_TOO_LARGE, field="query_vector")
    filled = 0
    if query.fill_from_popular and rows.size < size:
        extra, extra_scores = model.popular(size - rows.size, np.union1d(excluded, rows), allowed)
        filled = int(extra.size)
        rows, scores = np.concatenate([rows, extra]), np.concatenate([scores, extra_scores.astype(np.float32)])
    found = Candidates(
        model.ids_of(rows), scores.astype(np.float32, copy=False), model.version, unknown, filled=filled, rows=rows
    )
    if not query.with_provenance:
        return found
    found_by = pool.found_by[:size]  # computed only when asked: a membership test per source
    names = list(recipe.names)
    if filled:
        names.append("fill")
        found_by = np.vstack([found_by, np.zeros((filled, found_by.shape[1]), dtype=bool)])
        found_by = np.hstack([found_by, (np.arange(rows.size) >= rows.size - filled)[:, None]])
    return replace(found, source_names=names, found_by=_bits(found_by))


def _bits(found_by: np.ndarray) -> bytes:
    """One byte per row: bit i set when column i is (at most 8 columns: 4 sources and the fill)."""
    weights = (1 << np.arange(found_by.shape[1], dtype=np.uint16)).astype(np.uint16)
    return bytes((found_by.astype(np.uint16) @ weights).astype(np.uint8))


class CandidateGenerator:
    """Retrieval in the model version each request pins (empty = the registry's current one)."""

    def __init__(self, registry: ModelRegistry, catalog: LiveCatalog | None = None) -> None:
        self.registry = registry
        self.catalog = catalog  # None: no live catalogue (a filter then sees no attributes)
        self.filters = ModelFilters()
        self._empty = Catalog()

    async def refresh_catalog(self) -> None:
        """Bring the live catalogue up to date: once per call or batch, so an acknowledged catalogue write is seen
        by every call that arrives after it (one Redis GET when nothing changed)."""
        if self.catalog is not None:
            await self.catalog.refresh()

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
        filter: str = "",
        fill_from_popular: bool = False,
        with_provenance: bool = False,
    ) -> Candidates:
        query = validate_query(
            query_vector=query_vector,
            item_ids=item_ids,
            k=k,
            exclude_item_ids=exclude_item_ids,
            sources=sources,
            given_item_ids=given_item_ids,
            filter=filter,
            fill_from_popular=fill_from_popular,
            with_provenance=with_provenance,
        )
        catalog = self.catalog.catalog if self.catalog is not None else self._empty
        stale = (self.catalog.stale or "") if self.catalog is not None else ""
        # A version the registry does not hold is NOT_FOUND (serving.errors); the lease keeps it while in use.
        async with self.registry.lease(model_version) as model:
            try:
                allowed = self.filters.allowed(model, catalog, query.filter)
            except InvalidArgument as e:
                if stale:  # the gateway checked it against a newer catalogue: ours is behind, not the caller wrong
                    raise Unavailable(f"the live catalogue is behind ({stale}): {e}") from e
                raise
            found = retrieve_candidates(model, query, allowed)
        return replace(found, catalog_seq=catalog.seq, catalog_stale_reason=stale)
