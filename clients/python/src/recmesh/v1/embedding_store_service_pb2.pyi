from recmesh.v1 import batch_pb2 as _batch_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetEmbeddingsRequest(_message.Message):
    __slots__ = ("item_ids", "model_version")
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    item_ids: _containers.RepeatedScalarFieldContainer[str]
    model_version: str
    def __init__(self, item_ids: _Optional[_Iterable[str]] = ..., model_version: _Optional[str] = ...) -> None: ...

class GetEmbeddingsResponse(_message.Message):
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

class BatchGetEmbeddingsRequest(_message.Message):
    __slots__ = ("requests", "members")
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[GetEmbeddingsRequest]
    members: _containers.RepeatedCompositeFieldContainer[_batch_pb2.BatchMember]
    def __init__(self, requests: _Optional[_Iterable[_Union[GetEmbeddingsRequest, _Mapping]]] = ..., members: _Optional[_Iterable[_Union[_batch_pb2.BatchMember, _Mapping]]] = ...) -> None: ...

class BatchGetEmbeddingsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[GetEmbeddingsResult]
    def __init__(self, results: _Optional[_Iterable[_Union[GetEmbeddingsResult, _Mapping]]] = ...) -> None: ...

class GetEmbeddingsResult(_message.Message):
    __slots__ = ("response", "error")
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    response: GetEmbeddingsResponse
    error: _batch_pb2.BatchError
    def __init__(self, response: _Optional[_Union[GetEmbeddingsResponse, _Mapping]] = ..., error: _Optional[_Union[_batch_pb2.BatchError, _Mapping]] = ...) -> None: ...
