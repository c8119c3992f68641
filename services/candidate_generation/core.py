"""Candidate generation without gRPC: nearest items of a query vector or of a list of items, in one model version.

    generator = CandidateGenerator(registry)
    found = await generator.retrieve(item_ids=["a", "b"], k=100, exclude_item_ids=["a", "b"])
    found.item_ids, found.scores, found.model_version, found.unknown_item_ids

The search is `Model.retrieve` (the ANN index with exclusions), the query by items is `Model.query`: the same
functions the offline pipeline calls, so a served candidate list equals the offline one for the same bundle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from recmesh.pipeline import Model
from recmesh.registry import ModelRegistry
from serving.errors import InvalidArgument
from serving.models import pinned_model

DEFAULT_K = 100  # k = 0 asks for this many
MAX_K = 1000  # a larger k is capped to this
MAX_EXCLUDE = 1000  # more exclusions than this is INVALID_ARGUMENT
FLOAT32_BYTES = 4


@dataclass(frozen=True)
class Candidates:
    """Retrieved items best first, their similarity scores, and what the answer is based on."""

    item_ids: list[str]
    scores: np.ndarray  # float32, one per item
    model_version: str
    unknown_item_ids: list[str]  # query ids not in the catalogue, first occurrence order, no duplicates


def effective_k(k: int) -> int:
    """The number of candidates asked for: 0 -> DEFAULT_K, capped at MAX_K; negative is the caller's mistake."""
    if k < 0:
        raise InvalidArgument(f"k must be >= 0 (0 = default {DEFAULT_K}), got {k}")
    return min(k or DEFAULT_K, MAX_K)


def parse_query_vector(data: bytes, model: Model) -> np.ndarray:
    """The packed little-endian float32 query as a (dim,) array; INVALID_ARGUMENT unless it has the model's
    dimension and only finite values."""
    expected = model.dim
    if len(data) % FLOAT32_BYTES:
        raise InvalidArgument(
            f"query_vector is {len(data)} bytes, not a whole number of float32 values; "
            f"model {model.version} expects {expected} dims ({expected * FLOAT32_BYTES} bytes)"
        )
    got = len(data) // FLOAT32_BYTES
    if got != expected:
        raise InvalidArgument(f"query_vector has {got} dims, model {model.version} expects {expected} dims")
    vector = np.frombuffer(data, dtype="<f4").astype(np.float32)
    if not np.isfinite(vector).all():
        raise InvalidArgument("query_vector contains NaN or infinite values")
    return vector


def retrieve_candidates(
    model: Model,
    *,
    query_vector: bytes = b"",
    item_ids: Sequence[str] = (),
    k: int = 0,
    exclude_item_ids: Sequence[str] = (),
) -> Candidates:
    """One retrieval in `model`. Exactly one query form: `query_vector` (packed float32) or `item_ids` (the
    session query of their vectors, oldest first, the most recent MAX_SESSION known ones). Unknown query ids are
    reported; when none is known the answer is empty (the caller falls back to popular items). Unknown excluded
    ids are ignored."""
    check_request(query_vector, item_ids, k, exclude_item_ids)
    n = effective_k(k)
    unknown: list[str] = []
    if query_vector:
        query = parse_query_vector(query_vector, model)
    else:
        history, unknown = model.recent_known(item_ids)
        if history.size == 0:
            return Candidates([], np.zeros(0, dtype=np.float32), model.version, unknown)
        query = model.query(history)
    excluded, _ = model.lookup(list(exclude_item_ids))
    rows, scores = model.retrieve(query, n, np.unique(excluded) if excluded.size else None)
    return Candidates([model.item_ids[r] for r in rows], scores, model.version, unknown)


def check_request(query_vector: bytes, item_ids: Sequence[str], k: int, exclude_item_ids: Sequence[str]) -> None:
    """Validation that needs no model: query form, k, exclusion cap."""
    if bool(query_vector) == bool(item_ids):
        which = "both were set" if query_vector else "neither was set"
        raise InvalidArgument(f"set exactly one of query_vector and item_ids; {which}")
    effective_k(k)
    if len(exclude_item_ids) > MAX_EXCLUDE:
        raise InvalidArgument(f"at most {MAX_EXCLUDE} exclude_item_ids, got {len(exclude_item_ids)}")


class CandidateGenerator:
    """Retrieval in the model version each request pins (empty = the registry's current one)."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    async def model(self, version: str = "") -> Model:
        return await pinned_model(self.registry, version)

    async def retrieve(
        self,
        *,
        query_vector: bytes = b"",
        item_ids: Sequence[str] = (),
        k: int = 0,
        exclude_item_ids: Sequence[str] = (),
        model_version: str = "",
    ) -> Candidates:
        check_request(query_vector, item_ids, k, exclude_item_ids)  # before a version load it may trigger
        model = await self.model(model_version)
        return retrieve_candidates(
            model, query_vector=query_vector, item_ids=item_ids, k=k, exclude_item_ids=exclude_item_ids
        )
