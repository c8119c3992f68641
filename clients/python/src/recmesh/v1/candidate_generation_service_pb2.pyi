from recmesh.v1 import batch_pb2 as _batch_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RetrieveCandidatesRequest(_message.Message):
    __slots__ = ("query_vector", "item_ids", "k", "exclude_item_ids", "model_version", "sources", "given_item_ids", "filter", "fill_from_popular", "with_provenance")
    QUERY_VECTOR_FIELD_NUMBER: _ClassVar[int]
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    GIVEN_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    FILL_FROM_POPULAR_FIELD_NUMBER: _ClassVar[int]
    WITH_PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    query_vector: bytes
    item_ids: _containers.RepeatedScalarFieldContainer[str]
    k: int
    exclude_item_ids: _containers.RepeatedScalarFieldContainer[str]
    model_version: str
    sources: str
    given_item_ids: _containers.RepeatedScalarFieldContainer[str]
    filter: str
    fill_from_popular: bool
    with_provenance: bool
    def __init__(self, query_vector: _Optional[bytes] = ..., item_ids: _Optional[_Iterable[str]] = ..., k: _Optional[int] = ..., exclude_item_ids: _Optional[_Iterable[str]] = ..., model_version: _Optional[str] = ..., sources: _Optional[str] = ..., given_item_ids: _Optional[_Iterable[str]] = ..., filter: _Optional[str] = ..., fill_from_popular: _Optional[bool] = ..., with_provenance: _Optional[bool] = ...) -> None: ...

class RetrieveCandidatesResponse(_message.Message):
    __slots__ = ("model_version", "unknown_item_ids", "item_ids", "scores", "source_names", "found_by", "filled", "catalog_seq", "catalog_stale_reason", "rows")
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    SOURCE_NAMES_FIELD_NUMBER: _ClassVar[int]
    FOUND_BY_FIELD_NUMBER: _ClassVar[int]
    FILLED_FIELD_NUMBER: _ClassVar[int]
    CATALOG_SEQ_FIELD_NUMBER: _ClassVar[int]
    CATALOG_STALE_REASON_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    model_version: str
    unknown_item_ids: _containers.RepeatedScalarFieldContainer[str]
    item_ids: _containers.RepeatedScalarFieldContainer[str]
    scores: bytes
    source_names: _containers.RepeatedScalarFieldContainer[str]
    found_by: bytes
    filled: int
    catalog_seq: int
    catalog_stale_reason: str
    rows: bytes
    def __init__(self, model_version: _Optional[str] = ..., unknown_item_ids: _Optional[_Iterable[str]] = ..., item_ids: _Optional[_Iterable[str]] = ..., scores: _Optional[bytes] = ..., source_names: _Optional[_Iterable[str]] = ..., found_by: _Optional[bytes] = ..., filled: _Optional[int] = ..., catalog_seq: _Optional[int] = ..., catalog_stale_reason: _Optional[str] = ..., rows: _Optional[bytes] = ...) -> None: ...

class BatchRetrieveCandidatesRequest(_message.Message):
    __slots__ = ("requests", "members")
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[RetrieveCandidatesRequest]
    members: _containers.RepeatedCompositeFieldContainer[_batch_pb2.BatchMember]
    def __init__(self, requests: _Optional[_Iterable[_Union[RetrieveCandidatesRequest, _Mapping]]] = ..., members: _Optional[_Iterable[_Union[_batch_pb2.BatchMember, _Mapping]]] = ...) -> None: ...

class BatchRetrieveCandidatesResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[RetrieveCandidatesResult]
    def __init__(self, results: _Optional[_Iterable[_Union[RetrieveCandidatesResult, _Mapping]]] = ...) -> None: ...

class RetrieveCandidatesResult(_message.Message):
    __slots__ = ("response", "error")
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    response: RetrieveCandidatesResponse
    error: _batch_pb2.BatchError
    def __init__(self, response: _Optional[_Union[RetrieveCandidatesResponse, _Mapping]] = ..., error: _Optional[_Union[_batch_pb2.BatchError, _Mapping]] = ...) -> None: ...
