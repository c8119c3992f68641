"""REST/JSON request and response models (the OpenAPI schema at /openapi.json).

Requests check types and shape here (unknown fields and wrong types are 400s with pydantic's message); ranges,
caps and id lengths are checked once, by :mod:`gateway.checks`, for REST and gRPC alike. The schema still states
every default and cap of :mod:`serving.limits` (``json_schema_extra``), so the document says what the checks
enforce. Responses are documented with these models but rendered straight to JSON with orjson (no second
validation on the way out).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Discriminator, Field, StrictBool, StrictInt, StrictStr, Tag
from pydantic.config import JsonDict

from gateway.events import EARLIEST_DATE, MAX_FUTURE_HOURS
from serving import limits

ItemId = Annotated[str, Field(json_schema_extra={"minLength": 1, "maxLength": limits.MAX_ID_LEN})]
# Strict numbers: `"k": false` or `"k": "5"` is a 400, not 0 or 5 (a JSON integer is still a valid float).
StrictFloat = Annotated[
    float, Field(strict=True, json_schema_extra={"minimum": -limits.MAX_SCORE, "maximum": limits.MAX_SCORE})
]
QueryVector = list[StrictFloat] | None
_QUERY_VECTOR_SIZE: JsonDict = {"minItems": 1, "maxItems": limits.MAX_QUERY_DIM}
_QUERY_VECTOR_RULES = (
    "Non-empty; finite values whose squared norm fits float32 (at most about 3.4e38): a larger vector's scores "
    "would overflow."
)


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is a 400, not silently ignored


ModelVersion = Annotated[
    str,
    Field(
        description="Model version for every stage. Empty = the current version.",
        json_schema_extra={"maxLength": limits.MAX_VERSION_LEN},
    ),
]


# -------------------------------------------------------------------------------------------------- requests
FILTER_HELP = (
    'An expression over catalogue attributes, e.g. `available and category in ("shoes", "bags") and price < 50` '
    "(docs/catalogue.md)."
)


class BoostIn(Request):
    filter: str = Field(
        description="The items the rule applies to. " + FILTER_HELP,
        json_schema_extra={"minLength": 1, "maxLength": limits.MAX_EXPRESSION_CHARS},
    )
    multiply: StrictFloat = Field(1.0, description="Score multiplier: below 1 buries, above 1 boosts.")
    add: StrictFloat = Field(0.0, description="Added to the score after multiplying.")
    include: StrictInt = Field(
        0,
        description="Also add up to this many catalogue items that pass `filter` and that no source found (new "
        f"items without a vector, say), newest first. At most {limits.MAX_BOOST_INCLUDE}.",
        json_schema_extra={"minimum": 0, "maximum": limits.MAX_BOOST_INCLUDE},
    )
    name: str = Field("", description='Shown in explanations; default "boost<i>".', json_schema_extra={"maxLength": 64})


class PinIn(Request):
    item_id: ItemId
    position: StrictInt = Field(description="1 = first; at most k.", json_schema_extra={"minimum": 1})


class DiversityIn(Request):
    attribute: str = Field(description="The attribute whose values are capped, e.g. brand.")
    max_per_value: StrictInt = Field(description="At most this many items per value.", json_schema_extra={"minimum": 1})


class RecommendOptionsIn(Request):
    skip_ranking: StrictBool = Field(False, description="Return candidates in retrieval order without ranking them.")
    candidate_count: StrictInt | None = Field(
        None,
        description="Candidates retrieved before ranking (at least k). Default: the count the model version's "
        f"ranker was trained on (its manifest's params.candidates; {limits.DEFAULT_CANDIDATE_COUNT} when it does "
        f"not say). At most {limits.MAX_CANDIDATE_COUNT}.",
        json_schema_extra={"minimum": 1, "maximum": limits.MAX_CANDIDATE_COUNT},
    )
    exclude_item_ids: list[ItemId] = Field(
        default_factory=list,
        description=f"Never recommended, besides the session's items. At most {limits.MAX_EXCLUDE}.",
        json_schema_extra={"maxItems": limits.MAX_EXCLUDE},
    )
    sources: str | None = Field(
        None,
        description='Candidate sources and how many from each, merged in this order, e.g. "ann:100,covisit:100,'
        'popular:20" (sources: ann, covisit, slist, popular). Default: candidate_count from ANN alone when that is '
        "set, else the model version's default recipe.",
        json_schema_extra={"maxLength": 200},
    )
    budget_ms: StrictInt | None = Field(
        None,
        description=f"End-to-end budget; default the gateway's BUDGET_MS ({limits.DEFAULT_BUDGET_MS}). "
        f"At most {limits.MAX_BUDGET_MS}.",
        json_schema_extra={"minimum": 1, "maximum": limits.MAX_BUDGET_MS},
    )
    query_vector: QueryVector = Field(
        None,
        description="Bring your own query vector (the model's dimension); the session is then not used to build it. "
        + _QUERY_VECTOR_RULES,
        json_schema_extra=_QUERY_VECTOR_SIZE,
    )
    include_seen: StrictBool = Field(False, description="Allow the session's items in the result.")
    filter: str | None = Field(
        None,
        description="Only items whose catalogue attributes pass it. " + FILTER_HELP + " Items with `available: "
        "false` are never recommended, filter or not.",
        json_schema_extra={"maxLength": limits.MAX_EXPRESSION_CHARS},
    )
    filter_strict: StrictBool = Field(
        False,
        description="true: only what the sources found that passes (possibly fewer than k); false: fill up to k "
        "with the most popular items that pass (filled_from_popular counts them).",
    )
    boosts: list[BoostIn] = Field(
        default_factory=list,
        description=f"Score rules applied in order after ranking. At most {limits.MAX_BOOSTS}.",
        json_schema_extra={"maxItems": limits.MAX_BOOSTS},
    )
    pins: list[PinIn] = Field(
        default_factory=list, description="Items at fixed positions of the answer (each position and item once)."
    )
    diversity: DiversityIn | None = Field(None, description="At most max_per_value items per attribute value.")
    explain: StrictBool = Field(
        False, description="Explain each item: its sources, the ranker's largest terms, the rules that moved it."
    )


class RecommendIn(Request):
    session: list[ItemId] = Field(
        default_factory=list,
        description=f"The visitor's recent items, oldest first. Only the most recent {limits.MAX_SESSION} are used "
        f"(session_items_dropped says how many were not). At most {limits.MAX_SESSION_ITEMS}.",
        json_schema_extra={"maxItems": limits.MAX_SESSION_ITEMS},
    )
    user_id: str | None = Field(
        None,
        description="The visitor: their recorded events (oldest first) are put before `session`.",
        json_schema_extra={"maxLength": limits.MAX_ID_LEN},
    )
    k: StrictInt = Field(
        limits.DEFAULT_K,
        description=f"Number of items to return. At most {limits.MAX_K}.",
        json_schema_extra={"minimum": 1, "maximum": limits.MAX_K},
    )
    options: RecommendOptionsIn = Field(default_factory=RecommendOptionsIn)
    model_version: ModelVersion = ""
    session_id: str | None = Field(
        None,
        description="An anonymous visitor's id: assigns the request to an A/B experiment's variant when there is no "
        "user_id (docs/experiments.md).",
        json_schema_extra={"maxLength": limits.MAX_ID_LEN},
    )
    forced_variant: str | None = Field(
        None,
        description="QA: serve this variant of the running experiment.",
        json_schema_extra={"maxLength": 32},
    )


class EmbeddingsIn(Request):
    item_ids: list[ItemId] = Field(
        description=f"Required, at most {limits.MAX_ITEMS}.",
        json_schema_extra={"minItems": 1, "maxItems": limits.MAX_ITEMS},
    )
    model_version: ModelVersion = ""


class CandidatesIn(Request):
    query_vector: QueryVector = Field(
        None,
        description="Exactly one of query_vector (the model's dimension) and item_ids. " + _QUERY_VECTOR_RULES,
        json_schema_extra=_QUERY_VECTOR_SIZE,
    )
    item_ids: list[ItemId] = Field(
        default_factory=list,
        description="Query by items: the recency-weighted sum of their unit vectors (normalised). "
        f"At most {limits.MAX_ITEMS}.",
        json_schema_extra={"maxItems": limits.MAX_ITEMS},
    )
    k: StrictInt = Field(
        limits.CANDIDATES_DEFAULT_K,
        description=f"Number of candidates. At most {limits.CANDIDATES_MAX_K}.",
        json_schema_extra={"minimum": 1, "maximum": limits.CANDIDATES_MAX_K},
    )
    exclude_item_ids: list[ItemId] = Field(
        default_factory=list,
        description=f"Items never returned. At most {limits.MAX_EXCLUDE}.",
        json_schema_extra={"maxItems": limits.MAX_EXCLUDE},
    )
    model_version: ModelVersion = ""


class CandidateIn(Request):
    item_id: ItemId
    score: StrictFloat = Field(0.0, description="Retrieval score (a ranker feature); 0 if unknown.")


class RankIn(Request):
    session: list[ItemId] = Field(
        default_factory=list,
        description=f"The visitor's recent items, oldest first. At most {limits.MAX_SESSION_ITEMS}.",
        json_schema_extra={"maxItems": limits.MAX_SESSION_ITEMS},
    )
    candidates: list[ItemId | CandidateIn] = Field(
        description=f'Ids ("a") or {{"item_id": "a", "score": 0.8}}. Required, at most {limits.MAX_ITEMS}.',
        json_schema_extra={"minItems": 1, "maxItems": limits.MAX_ITEMS},
    )
    k: StrictInt = Field(
        0,
        description=f"Number of items to return; 0 = all. At most {limits.RANK_MAX_K}.",
        json_schema_extra={"minimum": 0, "maximum": limits.RANK_MAX_K},
    )
    model_version: ModelVersion = ""


class EventIn(Request):
    user_id: ItemId = Field(description="The visitor. Required.")
    item_id: ItemId = Field(description="The item. Stored even when the current model does not know it.")
    type: str = Field("view", json_schema_extra={"enum": list(limits.EVENT_TYPES)})
    timestamp_ms: StrictInt | None = Field(
        None,
        description=f"Milliseconds since the epoch; default (or 0) now; from {EARLIEST_DATE} to "
        f"{MAX_FUTURE_HOURS:g} hours in the future.",
        # 0 (now) or from 2000 on; the upper bound moves with the clock, so only the description states it.
        json_schema_extra={
            "anyOf": [
                {"type": "integer", "enum": [0]},
                {"type": "integer", "minimum": limits.MIN_TIMESTAMP_MS},
                {"type": "null"},
            ]
        },
    )
    session_id: str = Field(
        "",
        description="Optional; may carry a recommendation_id.",
        json_schema_extra={"maxLength": limits.MAX_ID_LEN},
    )


class EventsIn(Request):
    events: list[EventIn] = Field(
        description=f"At most {limits.MAX_EVENTS_PER_CALL}, validated whole and stored all or none (a bad event "
        "or a visitor over the per-second rate limit stores nothing).",
        json_schema_extra={"minItems": 1, "maxItems": limits.MAX_EVENTS_PER_CALL},
    )


def _event_kind(value: Any) -> str:
    return "batch" if isinstance(value, dict) and "events" in value else "one"


EventsBody = Annotated[Annotated[EventIn, Tag("one")] | Annotated[EventsIn, Tag("batch")], Discriminator(_event_kind)]


# ------------------------------------------------------------------------------------------------- responses
class ItemScoreOut(BaseModel):
    item_id: str
    score: float


class DegradationOut(BaseModel):
    stage: str = Field(description='"events", "embeddings", "candidates" or "ranking".')
    reason: str


class ContributionOut(BaseModel):
    feature: str
    value: float


class ExplanationOut(BaseModel):
    item_id: str
    sources: list[str] = Field(description='The sources that found it ("fill", "rule" and "pin" included).')
    logit: float = Field(description="intercept + sum(contributions) + other; 0 when the ranker did not score it.")
    intercept: float
    contributions: list[ContributionOut] = Field(description="The ranker's largest terms, largest first.")
    other: float
    rules: list[str] = Field(description="The rules that changed its score or position.")


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
    explanations: list[ExplanationOut] | None = Field(None, description="With options.explain: one per item.")
    filled_from_popular: int = Field(0, description="Items added from popular ones that pass the filter.")
    diversity_relaxed: bool = Field(False, description="The diversity cap could not hold within k.")
    experiment: str = Field("", description="The A/B experiment that served it (empty: none).")
    variant: str = Field("", description="Its variant; events echoing recommendation_id are attributed to it.")


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


class HealthOut(BaseModel):
    status: str = Field(description='"ok".')


class ReadyOut(BaseModel):
    ready: bool
    checks: dict[str, str] = Field(
        description='What each backend said: "SERVING" (the stage services), "PONG" (Redis), else why not.'
    )
    degraded: dict[str, str] = Field(description="The backends that are not well: answers are degraded meanwhile.")
    reason: str | None = Field(None, description="Why not ready (503 only): draining, or no model yet.")


class FieldViolationOut(BaseModel):
    field: str = Field(description='The path of the field at fault, e.g. "k", "session[3]", "options.budget_ms".')
    description: str


class ErrorDetail(BaseModel):
    """A google.rpc detail message in its JSON form: ``google.rpc.BadRequest`` (fieldViolations) or
    ``google.rpc.RetryInfo`` (retryDelay)."""

    model_config = ConfigDict(populate_by_name=True)

    type: str = Field(
        alias="@type",
        description='"type.googleapis.com/google.rpc.BadRequest" or "type.googleapis.com/google.rpc.RetryInfo".',
    )
    fieldViolations: list[FieldViolationOut] | None = Field(None, description="BadRequest: the fields at fault.")
    retryDelay: str | None = Field(None, description='RetryInfo: when to retry, e.g. "1s".')


class ErrorBody(BaseModel):
    code: int = Field(description="The HTTP status, e.g. 400.")
    status: str = Field(description='The gRPC status name, e.g. "INVALID_ARGUMENT".')
    message: str = Field(description="What is wrong, for a developer.")
    details: list[ErrorDetail] = Field(description="Machine-readable details (may be empty).")
    request_id: str = Field(description="The request's id, also in the x-request-id header: quote it in reports.")


class ErrorOut(BaseModel):
    """Every error: Google's API error shape (docs/errors.md)."""

    error: ErrorBody


# -------------------------------------------------------------------------------------------------- catalogue
AttributeValue = StrictBool | StrictInt | StrictFloat | StrictStr | None


class ItemAttributesIn(Request):
    attributes: dict[str, AttributeValue] = Field(
        description="Attribute -> string, number or boolean (null removes it, with PATCH). Names: letters, digits "
        "and _; each attribute keeps the type of its first value.",
        json_schema_extra={"maxProperties": 64},
    )


class CatalogItemIn(ItemAttributesIn):
    item_id: ItemId


class UpsertItemsIn(Request):
    items: list[CatalogItemIn] = Field(
        description=f"At most {limits.MAX_CATALOG_WRITE} items, each id once.",
        json_schema_extra={"minItems": 1, "maxItems": limits.MAX_CATALOG_WRITE},
    )
    merge: StrictBool = Field(
        False, description="false: replace each item's attributes; true: change only those given."
    )


class DeleteItemsIn(Request):
    item_ids: list[ItemId] = Field(json_schema_extra={"minItems": 1, "maxItems": limits.MAX_CATALOG_WRITE})


class CatalogWriteOut(BaseModel):
    count: int = Field(description="Items written (or deleted: those that had an entry).")
    catalog_seq: int = Field(description="The catalogue's position after the write.")


class CatalogItemOut(BaseModel):
    item_id: str
    attributes: dict[str, Any]
    known_to_model: bool = Field(description="Whether the current model version has a vector for it.")
