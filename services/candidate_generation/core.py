"""Candidate generation without gRPC: nearest items of a query vector or of a list of items, in one model version.

Usage::

    generator = CandidateGenerator(registry)
    found = await generator.retrieve(item_ids=["a", "b"], k=100, exclude_item_ids=["a", "b"])
    found.item_ids, found.scores, found.model_version, found.unknown_item_ids

The search is `Model.retrieve` (the ANN index with exclusions), the query by items is `Model.query`: the same
functions the offline pipeline calls, so a served candidate list equals the offline one for the same bundle.
A request is checked once (:func:`validate_query`), before the model version it pins is loaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from recmesh.pipeline import Model
from recmesh.registry import ModelRegistry
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


@dataclass(frozen=True)
class Candidates:
    """Retrieved items best first, their similarity scores, and what the answer is based on."""

    item_ids: list[str]
    scores: np.ndarray  # float32, one per item
    model_version: str
    unknown_item_ids: list[str]  # query ids not in the catalogue, first occurrence order, no duplicates


def validate_query(
    *, query_vector: bytes = b"", item_ids: Sequence[str] = (), k: int = 0, exclude_item_ids: Sequence[str] = ()
) -> CandidateQuery:
    """Exactly one query form; 0 <= k <= CANDIDATES_MAX_K (0 = CANDIDATES_DEFAULT_K); at most MAX_ITEMS query ids
    and MAX_EXCLUDE exclusions. Anything else is InvalidArgument naming the range."""
    if bool(query_vector) == bool(item_ids):
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
    return CandidateQuery(query_vector, item_ids, k or limits.CANDIDATES_DEFAULT_K, exclude_item_ids)


def parse_query_vector(data: bytes, model: Model) -> np.ndarray:
    """The packed float32 query as a (dim,) array; INVALID_ARGUMENT unless it has the model's dimension and only
    finite values."""
    vector = unpack_vector(data, model.dim, "query_vector", f"model {model.version}")
    if not np.isfinite(vector).all():
        raise InvalidArgument("query_vector contains NaN or infinite values", field="query_vector")
    return vector


def retrieve_candidates(model: Model, query: CandidateQuery) -> Candidates:
    """One retrieval in `model`. The query is `query.query_vector`, or the session query of `query.item_ids`
    (oldest first, the most recent MAX_SESSION known ones). Unknown query ids are reported; when none is known the
    answer is empty (the caller falls back to popular items). Unknown excluded ids are ignored."""
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
    ) -> Candidates:
        query = validate_query(query_vector=query_vector, item_ids=item_ids, k=k, exclude_item_ids=exclude_item_ids)
        # Checked before the version load it may trigger; a version the registry lacks is NOT_FOUND (serving.errors).
        model = await self.registry.get(model_version)
        return retrieve_candidates(model, query)
