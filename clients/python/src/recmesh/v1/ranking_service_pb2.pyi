from recmesh.v1 import batch_pb2 as _batch_pb2
from recmesh.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RankRequest(_message.Message):
    __slots__ = ("session_item_ids", "k", "model_version", "candidate_ids", "candidate_scores", "explain", "candidate_rows")
    SESSION_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_IDS_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_SCORES_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_ROWS_FIELD_NUMBER: _ClassVar[int]
    session_item_ids: _containers.RepeatedScalarFieldContainer[str]
    k: int
    model_version: str
    candidate_ids: _containers.RepeatedScalarFieldContainer[str]
    candidate_scores: bytes
    explain: bool
    candidate_rows: bytes
    def __init__(self, session_item_ids: _Optional[_Iterable[str]] = ..., k: _Optional[int] = ..., model_version: _Optional[str] = ..., candidate_ids: _Optional[_Iterable[str]] = ..., candidate_scores: _Optional[bytes] = ..., explain: _Optional[bool] = ..., candidate_rows: _Optional[bytes] = ...) -> None: ...

class RankResponse(_message.Message):
    __slots__ = ("items", "model_version", "unknown_item_ids", "explanations")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    EXPLANATIONS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[_common_pb2.ItemScore]
    model_version: str
    unknown_item_ids: _containers.RepeatedScalarFieldContainer[str]
    explanations: _containers.RepeatedCompositeFieldContainer[ScoreExplanation]
    def __init__(self, items: _Optional[_Iterable[_Union[_common_pb2.ItemScore, _Mapping]]] = ..., model_version: _Optional[str] = ..., unknown_item_ids: _Optional[_Iterable[str]] = ..., explanations: _Optional[_Iterable[_Union[ScoreExplanation, _Mapping]]] = ...) -> None: ...

class ScoreExplanation(_message.Message):
    __slots__ = ("logit", "intercept", "features", "contributions", "other")
    LOGIT_FIELD_NUMBER: _ClassVar[int]
    INTERCEPT_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTIONS_FIELD_NUMBER: _ClassVar[int]
    OTHER_FIELD_NUMBER: _ClassVar[int]
    logit: float
    intercept: float
    features: _containers.RepeatedScalarFieldContainer[str]
    contributions: _containers.RepeatedScalarFieldContainer[float]
    other: float
    def __init__(self, logit: _Optional[float] = ..., intercept: _Optional[float] = ..., features: _Optional[_Iterable[str]] = ..., contributions: _Optional[_Iterable[float]] = ..., other: _Optional[float] = ...) -> None: ...

class BatchRankRequest(_message.Message):
    __slots__ = ("requests", "members")
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[RankRequest]
    members: _containers.RepeatedCompositeFieldContainer[_batch_pb2.BatchMember]
    def __init__(self, requests: _Optional[_Iterable[_Union[RankRequest, _Mapping]]] = ..., members: _Optional[_Iterable[_Union[_batch_pb2.BatchMember, _Mapping]]] = ...) -> None: ...

class BatchRankResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[RankResult]
    def __init__(self, results: _Optional[_Iterable[_Union[RankResult, _Mapping]]] = ...) -> None: ...

class RankResult(_message.Message):
    __slots__ = ("response", "error")
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    response: RankResponse
    error: _batch_pb2.BatchError
    def __init__(self, response: _Optional[_Union[RankResponse, _Mapping]] = ..., error: _Optional[_Union[_batch_pb2.BatchError, _Mapping]] = ...) -> None: ...
