from recmesh.v1 import catalog_pb2 as _catalog_pb2
from recmesh.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RecommendOptions(_message.Message):
    __slots__ = ("skip_ranking", "candidate_count", "exclude_item_ids", "budget_ms", "query_vector", "include_seen", "sources", "filter", "filter_strict", "boosts", "pins", "diversity", "explain")
    SKIP_RANKING_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_COUNT_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    BUDGET_MS_FIELD_NUMBER: _ClassVar[int]
    QUERY_VECTOR_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_SEEN_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    FILTER_STRICT_FIELD_NUMBER: _ClassVar[int]
    BOOSTS_FIELD_NUMBER: _ClassVar[int]
    PINS_FIELD_NUMBER: _ClassVar[int]
    DIVERSITY_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    skip_ranking: bool
    candidate_count: int
    exclude_item_ids: _containers.RepeatedScalarFieldContainer[str]
    budget_ms: int
    query_vector: bytes
    include_seen: bool
    sources: str
    filter: str
    filter_strict: bool
    boosts: _containers.RepeatedCompositeFieldContainer[_catalog_pb2.Boost]
    pins: _containers.RepeatedCompositeFieldContainer[_catalog_pb2.Pin]
    diversity: _catalog_pb2.Diversity
    explain: bool
    def __init__(self, skip_ranking: _Optional[bool] = ..., candidate_count: _Optional[int] = ..., exclude_item_ids: _Optional[_Iterable[str]] = ..., budget_ms: _Optional[int] = ..., query_vector: _Optional[bytes] = ..., include_seen: _Optional[bool] = ..., sources: _Optional[str] = ..., filter: _Optional[str] = ..., filter_strict: _Optional[bool] = ..., boosts: _Optional[_Iterable[_Union[_catalog_pb2.Boost, _Mapping]]] = ..., pins: _Optional[_Iterable[_Union[_catalog_pb2.Pin, _Mapping]]] = ..., diversity: _Optional[_Union[_catalog_pb2.Diversity, _Mapping]] = ..., explain: _Optional[bool] = ...) -> None: ...

class RecommendRequest(_message.Message):
    __slots__ = ("session_item_ids", "user_id", "k", "options", "model_version", "session_id", "forced_variant")
    SESSION_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    FORCED_VARIANT_FIELD_NUMBER: _ClassVar[int]
    session_item_ids: _containers.RepeatedScalarFieldContainer[str]
    user_id: str
    k: int
    options: RecommendOptions
    model_version: str
    session_id: str
    forced_variant: str
    def __init__(self, session_item_ids: _Optional[_Iterable[str]] = ..., user_id: _Optional[str] = ..., k: _Optional[int] = ..., options: _Optional[_Union[RecommendOptions, _Mapping]] = ..., model_version: _Optional[str] = ..., session_id: _Optional[str] = ..., forced_variant: _Optional[str] = ...) -> None: ...

class RecommendResponse(_message.Message):
    __slots__ = ("items", "model_version", "degraded", "degradations", "unknown_item_ids", "session_items_dropped", "timings", "recommendation_id", "explanations", "filled_from_popular", "diversity_relaxed", "experiment", "variant")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_FIELD_NUMBER: _ClassVar[int]
    DEGRADATIONS_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    SESSION_ITEMS_DROPPED_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    RECOMMENDATION_ID_FIELD_NUMBER: _ClassVar[int]
    EXPLANATIONS_FIELD_NUMBER: _ClassVar[int]
    FILLED_FROM_POPULAR_FIELD_NUMBER: _ClassVar[int]
    DIVERSITY_RELAXED_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[_common_pb2.ItemScore]
    model_version: str
    degraded: bool
    degradations: _containers.RepeatedCompositeFieldContainer[_common_pb2.Degradation]
    unknown_item_ids: _containers.RepeatedScalarFieldContainer[str]
    session_items_dropped: int
    timings: _containers.RepeatedCompositeFieldContainer[_common_pb2.StageTiming]
    recommendation_id: str
    explanations: _containers.RepeatedCompositeFieldContainer[_catalog_pb2.ItemExplanation]
    filled_from_popular: int
    diversity_relaxed: bool
    experiment: str
    variant: str
    def __init__(self, items: _Optional[_Iterable[_Union[_common_pb2.ItemScore, _Mapping]]] = ..., model_version: _Optional[str] = ..., degraded: _Optional[bool] = ..., degradations: _Optional[_Iterable[_Union[_common_pb2.Degradation, _Mapping]]] = ..., unknown_item_ids: _Optional[_Iterable[str]] = ..., session_items_dropped: _Optional[int] = ..., timings: _Optional[_Iterable[_Union[_common_pb2.StageTiming, _Mapping]]] = ..., recommendation_id: _Optional[str] = ..., explanations: _Optional[_Iterable[_Union[_catalog_pb2.ItemExplanation, _Mapping]]] = ..., filled_from_popular: _Optional[int] = ..., diversity_relaxed: _Optional[bool] = ..., experiment: _Optional[str] = ..., variant: _Optional[str] = ...) -> None: ...

class GetItemEmbeddingsRequest(_message.Message):
    __slots__ = ("item_ids", "model_version")
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    item_ids: _containers.RepeatedScalarFieldContainer[str]
    model_version: str
    def __init__(self, item_ids: _Optional[_Iterable[str]] = ..., model_version: _Optional[str] = ...) -> None: ...

class GetItemEmbeddingsResponse(_message.Message):
    __slots__ = ("model_version", "dim", "item_ids", "vectors", "unknown_item_ids", "degraded", "degraded_reason")
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_REASON_FIELD_NUMBER: _ClassVar[int]
    model_version: str
    dim: int
    item_ids: _containers.RepeatedScalarFieldContainer[str]
    vectors: bytes
    unknown_item_ids: _containers.RepeatedScalarFieldContainer[str]
    degraded: bool
    degraded_reason: str
    def __init__(self, model_version: _Optional[str] = ..., dim: _Optional[int] = ..., item_ids: _Optional[_Iterable[str]] = ..., vectors: _Optional[bytes] = ..., unknown_item_ids: _Optional[_Iterable[str]] = ..., degraded: _Optional[bool] = ..., degraded_reason: _Optional[str] = ...) -> None: ...

class GetSimilarItemsRequest(_message.Message):
    __slots__ = ("item_id", "k", "model_version")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    k: int
    model_version: str
    def __init__(self, item_id: _Optional[str] = ..., k: _Optional[int] = ..., model_version: _Optional[str] = ...) -> None: ...

class GetSimilarItemsResponse(_message.Message):
    __slots__ = ("items", "model_version")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[_common_pb2.ItemScore]
    model_version: str
    def __init__(self, items: _Optional[_Iterable[_Union[_common_pb2.ItemScore, _Mapping]]] = ..., model_version: _Optional[str] = ...) -> None: ...

class FindCandidatesRequest(_message.Message):
    __slots__ = ("query_vector", "item_ids", "k", "exclude_item_ids", "model_version")
    QUERY_VECTOR_FIELD_NUMBER: _ClassVar[int]
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    query_vector: bytes
    item_ids: _containers.RepeatedScalarFieldContainer[str]
    k: int
    exclude_item_ids: _containers.RepeatedScalarFieldContainer[str]
    model_version: str
    def __init__(self, query_vector: _Optional[bytes] = ..., item_ids: _Optional[_Iterable[str]] = ..., k: _Optional[int] = ..., exclude_item_ids: _Optional[_Iterable[str]] = ..., model_version: _Optional[str] = ...) -> None: ...

class FindCandidatesResponse(_message.Message):
    __slots__ = ("candidates", "model_version", "unknown_item_ids")
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    candidates: _containers.RepeatedCompositeFieldContainer[_common_pb2.ItemScore]
    model_version: str
    unknown_item_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, candidates: _Optional[_Iterable[_Union[_common_pb2.ItemScore, _Mapping]]] = ..., model_version: _Optional[str] = ..., unknown_item_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class RankCandidatesRequest(_message.Message):
    __slots__ = ("session_item_ids", "candidates", "k", "model_version")
    SESSION_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    session_item_ids: _containers.RepeatedScalarFieldContainer[str]
    candidates: _containers.RepeatedCompositeFieldContainer[_common_pb2.ItemScore]
    k: int
    model_version: str
    def __init__(self, session_item_ids: _Optional[_Iterable[str]] = ..., candidates: _Optional[_Iterable[_Union[_common_pb2.ItemScore, _Mapping]]] = ..., k: _Optional[int] = ..., model_version: _Optional[str] = ...) -> None: ...

class RankCandidatesResponse(_message.Message):
    __slots__ = ("items", "model_version", "unknown_item_ids")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[_common_pb2.ItemScore]
    model_version: str
    unknown_item_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, items: _Optional[_Iterable[_Union[_common_pb2.ItemScore, _Mapping]]] = ..., model_version: _Optional[str] = ..., unknown_item_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class RecordEventRequest(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: _common_pb2.Event
    def __init__(self, event: _Optional[_Union[_common_pb2.Event, _Mapping]] = ...) -> None: ...

class RecordEventResponse(_message.Message):
    __slots__ = ("stored", "known_item")
    STORED_FIELD_NUMBER: _ClassVar[int]
    KNOWN_ITEM_FIELD_NUMBER: _ClassVar[int]
    stored: bool
    known_item: bool
    def __init__(self, stored: _Optional[bool] = ..., known_item: _Optional[bool] = ...) -> None: ...

class RecordEventsResponse(_message.Message):
    __slots__ = ("stored", "unknown_item_ids")
    STORED_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    stored: int
    unknown_item_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, stored: _Optional[int] = ..., unknown_item_ids: _Optional[_Iterable[str]] = ...) -> None: ...
