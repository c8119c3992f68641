"""REST/JSON request and response models (the OpenAPI schema at /openapi.json).

Requests are validated here first (unknown fields, wrong types and out-of-range numbers are 400s with
pydantic's message); :mod:`gateway.core` checks the same caps again for gRPC callers. Responses are documented
with these models but rendered straight to JSON with orjson (no second validation on the way out).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from gateway.core import (
    DEFAULT_FIND_K,
    DEFAULT_K,
    MAX_BUDGET_MS,
    MAX_CANDIDATES,
    MAX_EVENTS,
    MAX_EXCLUDE,
    MAX_ITEMS,
    MAX_K,
)
from gateway.events import EVENT_TYPES
from gateway.popular import DEFAULT_CANDIDATES
from recmesh.pipeline import MAX_SESSION

ItemId = Annotated[str, Field(min_length=1, max_length=256)]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is a 400, not silently ignored


ModelVersion = Annotated[
    str, Field(max_length=128, description="Model version for every stage. Empty = the current version.")
]


# -------------------------------------------------------------------------------------------------- requests
class RecommendOptionsIn(Request):
    skip_ranking: bool = Field(False, description="Return candidates in retrieval order without ranking them.")
    candidate_count: int | None = Field(
        None,
        ge=1,
        le=MAX_CANDIDATES,
        description="Candidates retrieved before ranking (at least k). Default: the count the model version's "
        f"ranker was trained on (its manifest's params.candidates; {DEFAULT_CANDIDATES} when it does not say).",
    )
    exclude_item_ids: list[ItemId] = Field(
        default_factory=list, max_length=MAX_EXCLUDE, description="Never recommended, besides the session's items."
    )
    budget_ms: int | None = Field(
        None, ge=1, le=MAX_BUDGET_MS, description="End-to-end budget; default the gateway's BUDGET_MS (200)."
    )
    query_vector: list[float] | None = Field(
        None,
        max_length=4096,
        description="Bring your own query vector (the model's dimension); the session is then not used to build it.",
    )
    include_seen: bool = Field(False, description="Allow the session's items in the result.")


class RecommendIn(Request):
    session: list[ItemId] = Field(
        default_factory=list,
        description=f"The visitor's recent items, oldest first. Only the most recent {MAX_SESSION} are used "
        "(session_items_dropped says how many were not).",
    )
    user_id: str | None = Field(
        None,
        max_length=256,
        description="The visitor: their recorded events (oldest first) are put before `session`.",
    )
    k: int = Field(DEFAULT_K, ge=1, le=MAX_K, description="Number of items to return.")
    options: RecommendOptionsIn = Field(default_factory=RecommendOptionsIn)
    model_version: ModelVersion = ""


class EmbeddingsIn(Request):
    item_ids: list[ItemId] = Field(min_length=1, max_length=MAX_ITEMS)
    model_version: ModelVersion = ""


class CandidatesIn(Request):
    query_vector: list[float] | None = Field(
        None, max_length=4096, description="Exactly one of query_vector (the model's dimension) and item_ids."
    )
    item_ids: list[ItemId] = Field(
        default_factory=list, max_length=MAX_ITEMS, description="Query by items: their session query."
    )
    k: int = Field(DEFAULT_FIND_K, ge=1, le=MAX_CANDIDATES)
    exclude_item_ids: list[ItemId] = Field(default_factory=list, max_length=MAX_EXCLUDE)
    model_version: ModelVersion = ""


class CandidateIn(Request):
    item_id: ItemId
    score: float = Field(0.0, description="Retrieval score (a ranker feature); 0 if unknown.")


class RankIn(Request):
    session: list[ItemId] = Field(default_factory=list, description="The visitor's recent items, oldest first.")
    candidates: list[ItemId | CandidateIn] = Field(
        min_length=1, max_length=MAX_ITEMS, description='Ids ("a") or {"item_id": "a", "score": 0.8}.'
    )
    k: int = Field(0, ge=0, le=MAX_ITEMS, description="Number of items to return; 0 = all.")
    model_version: ModelVersion = ""


class EventIn(Request):
    user_id: ItemId = Field(description="The visitor. Required.")
    item_id: ItemId = Field(description="The item. Stored even when the current model does not know it.")
    type: Literal["view", "click", "add_to_cart", "purchase"] = "view"
    timestamp_ms: int | None = Field(
        None,
        ge=0,
        description="Milliseconds since the epoch; default (or 0) now; from 2000-01-01 to a day in the future.",
    )
    session_id: str = Field("", max_length=256, description="Optional; may carry a recommendation_id.")


class EventsIn(Request):
    events: list[EventIn] = Field(
        min_length=1,
        max_length=MAX_EVENTS,
        description=f"At most {MAX_EVENTS}, validated whole and stored all or none (a bad event or a visitor over "
        "the per-second rate limit stores nothing).",
    )


def _event_kind(value: Any) -> str:
    return "batch" if isinstance(value, dict) and "events" in value else "one"


EventsBody = Annotated[Annotated[EventIn, Tag("one")] | Annotated[EventsIn, Tag("batch")], Discriminator(_event_kind)]
assert set(EVENT_TYPES) == {"view", "click", "add_to_cart", "purchase"}


# ------------------------------------------------------------------------------------------------- responses
class ItemScoreOut(BaseModel):
    item_id: str
    score: float


class DegradationOut(BaseModel):
    stage: str = Field(description='"events", "embeddings", "candidates" or "ranking".')
    reason: str


class RecommendOut(BaseModel):
    items: list[ItemScoreOut] = Field(description="Best first: the order is the ranking.")
    model_version: str = Field(description="The model version every stage used.")
    degraded: bool
    degradations: list[DegradationOut]
    unknown_item_ids: list[str] = Field(
        description="Session ids (the request's or the visitor's events) not in the model's catalogue: ignored "
        "for the query vector."
    )
    session_items_dropped: int
    timings: dict[str, float] = Field(description="Milliseconds per stage, and total (also in Server-Timing).")
    recommendation_id: str = Field(description="Echo it as an event's session_id to attribute the event.")


class EmbeddingsOut(BaseModel):
    model_version: str
    dim: int
    embeddings: dict[str, list[float]]
    unknown_item_ids: list[str]
    degraded: bool
    degraded_reason: str


class SimilarOut(BaseModel):
    items: list[ItemScoreOut]
    model_version: str


class CandidatesOut(BaseModel):
    candidates: list[ItemScoreOut]
    model_version: str
    unknown_item_ids: list[str]


class RankOut(BaseModel):
    items: list[ItemScoreOut]
    model_version: str
    unknown_item_ids: list[str]


class EventOut(BaseModel):
    stored: bool
    known_item: bool = Field(description="False when the current model does not know the item (still stored).")


class EventsOut(BaseModel):
    stored: int
    unknown_item_ids: list[str]


class ErrorBody(BaseModel):
    code: str = Field(description='The gRPC status name, e.g. "INVALID_ARGUMENT".')
    message: str


class ErrorOut(BaseModel):
    error: ErrorBody
