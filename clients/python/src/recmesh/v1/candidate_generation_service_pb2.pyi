from recmesh.v1 import batch_pb2 as _batch_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RetrieveCandidatesRequest(_message.Message):
    __slots__ = ("query_vector", "item_ids", "k", "exclude_item_ids", "model_version", "sources", "given_item_ids")
    QUERY_VECTOR_FIELD_NUMBER: _ClassVar[int]
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    GIVEN_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    query_vector: bytes
    item_ids: _containers.RepeatedScalarFieldContainer[str]
    k: int
    exclude_item_ids: _containers.RepeatedScalarFieldContainer[str]
    model_version: str
    sources: str
    given_item_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, query_vector: _Optional[bytes] = ..., item_ids: _Optional[_Iterable[str]] = ..., k: _Optional[int] = ..., exclude_item_ids: _Optional[_Iterable[str]] = ..., model_version: _Optional[str] = ..., sources: _Optional[str] = ..., given_item_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class RetrieveCandidatesResponse(_message.Message):
    __slots__ = ("model_version", "unknown_item_ids", "item_ids", "scores")
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    model_version: str
    unknown_item_ids: _containers.RepeatedScalarFieldContainer[str]
    item_ids: _containers.RepeatedScalarFieldContainer[str]
    scores: bytes
    def __init__(self, model_version: _Optional[str] = ..., unknown_item_ids: _Optional[_Iterable[str]] = ..., item_ids: _Optional[_Iterable[str]] = ..., scores: _Optional[bytes] = ...) -> None: ...

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
