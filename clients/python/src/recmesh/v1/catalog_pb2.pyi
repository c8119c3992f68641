from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CatalogItem(_message.Message):
    __slots__ = ("item_id", "attributes")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    attributes: _struct_pb2.Struct
    def __init__(self, item_id: _Optional[str] = ..., attributes: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class UpsertItemsRequest(_message.Message):
    __slots__ = ("items", "merge")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    MERGE_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[CatalogItem]
    merge: bool
    def __init__(self, items: _Optional[_Iterable[_Union[CatalogItem, _Mapping]]] = ..., merge: _Optional[bool] = ...) -> None: ...

class UpsertItemsResponse(_message.Message):
    __slots__ = ("upserted", "catalog_seq")
    UPSERTED_FIELD_NUMBER: _ClassVar[int]
    CATALOG_SEQ_FIELD_NUMBER: _ClassVar[int]
    upserted: int
    catalog_seq: int
    def __init__(self, upserted: _Optional[int] = ..., catalog_seq: _Optional[int] = ...) -> None: ...

class GetItemRequest(_message.Message):
    __slots__ = ("item_id",)
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    def __init__(self, item_id: _Optional[str] = ...) -> None: ...

class GetItemResponse(_message.Message):
    __slots__ = ("item", "known_to_model")
    ITEM_FIELD_NUMBER: _ClassVar[int]
    KNOWN_TO_MODEL_FIELD_NUMBER: _ClassVar[int]
    item: CatalogItem
    known_to_model: bool
    def __init__(self, item: _Optional[_Union[CatalogItem, _Mapping]] = ..., known_to_model: _Optional[bool] = ...) -> None: ...

class DeleteItemsRequest(_message.Message):
    __slots__ = ("item_ids",)
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    item_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, item_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteItemsResponse(_message.Message):
    __slots__ = ("deleted", "catalog_seq")
    DELETED_FIELD_NUMBER: _ClassVar[int]
    CATALOG_SEQ_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    catalog_seq: int
    def __init__(self, deleted: _Optional[int] = ..., catalog_seq: _Optional[int] = ...) -> None: ...

class Boost(_message.Message):
    __slots__ = ("filter", "multiply", "add", "include", "name")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    MULTIPLY_FIELD_NUMBER: _ClassVar[int]
    ADD_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    filter: str
    multiply: float
    add: float
    include: int
    name: str
    def __init__(self, filter: _Optional[str] = ..., multiply: _Optional[float] = ..., add: _Optional[float] = ..., include: _Optional[int] = ..., name: _Optional[str] = ...) -> None: ...

class Pin(_message.Message):
    __slots__ = ("item_id", "position")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    position: int
    def __init__(self, item_id: _Optional[str] = ..., position: _Optional[int] = ...) -> None: ...

class Diversity(_message.Message):
    __slots__ = ("attribute", "max_per_value")
    ATTRIBUTE_FIELD_NUMBER: _ClassVar[int]
    MAX_PER_VALUE_FIELD_NUMBER: _ClassVar[int]
    attribute: str
    max_per_value: int
    def __init__(self, attribute: _Optional[str] = ..., max_per_value: _Optional[int] = ...) -> None: ...

class ItemExplanation(_message.Message):
    __slots__ = ("item_id", "sources", "logit", "intercept", "contributions", "other", "rules")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    LOGIT_FIELD_NUMBER: _ClassVar[int]
    INTERCEPT_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTIONS_FIELD_NUMBER: _ClassVar[int]
    OTHER_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    sources: _containers.RepeatedScalarFieldContainer[str]
    logit: float
    intercept: float
    contributions: _containers.RepeatedCompositeFieldContainer[FeatureContribution]
    other: float
    rules: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, item_id: _Optional[str] = ..., sources: _Optional[_Iterable[str]] = ..., logit: _Optional[float] = ..., intercept: _Optional[float] = ..., contributions: _Optional[_Iterable[_Union[FeatureContribution, _Mapping]]] = ..., other: _Optional[float] = ..., rules: _Optional[_Iterable[str]] = ...) -> None: ...

class FeatureContribution(_message.Message):
    __slots__ = ("feature", "value")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    feature: str
    value: float
    def __init__(self, feature: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
