import datetime

from flowmanager.v1 import flow_pb2 as _flow_pb2
from flowmanager.v1 import flow_service_pb2 as _flow_service_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateFlowRequest(_message.Message):
    __slots__ = ("flow",)
    FLOW_FIELD_NUMBER: _ClassVar[int]
    flow: _flow_pb2.Flow
    def __init__(self, flow: _Optional[_Union[_flow_pb2.Flow, _Mapping]] = ...) -> None: ...

class CreateFlowResponse(_message.Message):
    __slots__ = ("flow", "created", "warnings")
    FLOW_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    flow: FlowVersion
    created: bool
    warnings: _containers.RepeatedCompositeFieldContainer[_flow_service_pb2.ValidationIssue]
    def __init__(self, flow: _Optional[_Union[FlowVersion, _Mapping]] = ..., created: _Optional[bool] = ..., warnings: _Optional[_Iterable[_Union[_flow_service_pb2.ValidationIssue, _Mapping]]] = ...) -> None: ...

class GetFlowRequest(_message.Message):
    __slots__ = ("flow_id", "version")
    FLOW_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    flow_id: str
    version: int
    def __init__(self, flow_id: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class GetFlowResponse(_message.Message):
    __slots__ = ("flow",)
    FLOW_FIELD_NUMBER: _ClassVar[int]
    flow: FlowVersion
    def __init__(self, flow: _Optional[_Union[FlowVersion, _Mapping]] = ...) -> None: ...

class ListFlowsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListFlowsResponse(_message.Message):
    __slots__ = ("flows", "next_page_token")
    FLOWS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    flows: _containers.RepeatedCompositeFieldContainer[FlowVersion]
    next_page_token: str
    def __init__(self, flows: _Optional[_Iterable[_Union[FlowVersion, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListFlowVersionsRequest(_message.Message):
    __slots__ = ("flow_id", "page_size", "page_token")
    FLOW_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    flow_id: str
    page_size: int
    page_token: str
    def __init__(self, flow_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListFlowVersionsResponse(_message.Message):
    __slots__ = ("versions", "next_page_token")
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[FlowVersion]
    next_page_token: str
    def __init__(self, versions: _Optional[_Iterable[_Union[FlowVersion, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class FlowVersion(_message.Message):
    __slots__ = ("flow_id", "version", "flow", "create_time", "digest", "flow_name")
    FLOW_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FLOW_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    FLOW_NAME_FIELD_NUMBER: _ClassVar[int]
    flow_id: str
    version: int
    flow: _flow_pb2.Flow
    create_time: _timestamp_pb2.Timestamp
    digest: str
    flow_name: str
    def __init__(self, flow_id: _Optional[str] = ..., version: _Optional[int] = ..., flow: _Optional[_Union[_flow_pb2.Flow, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., digest: _Optional[str] = ..., flow_name: _Optional[str] = ...) -> None: ...
