import datetime

from flowmanager.v1 import flow_service_pb2 as _flow_service_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CancellationReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CANCELLATION_REASON_UNSPECIFIED: _ClassVar[CancellationReason]
    CANCELLATION_REASON_CANCELLED: _ClassVar[CancellationReason]
    CANCELLATION_REASON_DEADLINE_EXCEEDED: _ClassVar[CancellationReason]
CANCELLATION_REASON_UNSPECIFIED: CancellationReason
CANCELLATION_REASON_CANCELLED: CancellationReason
CANCELLATION_REASON_DEADLINE_EXCEEDED: CancellationReason

class WorkRequest(_message.Message):
    __slots__ = ("start", "complete", "fail", "credits")
    START_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    FAIL_FIELD_NUMBER: _ClassVar[int]
    CREDITS_FIELD_NUMBER: _ClassVar[int]
    start: WorkStart
    complete: CompleteTaskRequest
    fail: FailTaskRequest
    credits: WorkCredits
    def __init__(self, start: _Optional[_Union[WorkStart, _Mapping]] = ..., complete: _Optional[_Union[CompleteTaskRequest, _Mapping]] = ..., fail: _Optional[_Union[FailTaskRequest, _Mapping]] = ..., credits: _Optional[_Union[WorkCredits, _Mapping]] = ...) -> None: ...

class WorkResponse(_message.Message):
    __slots__ = ("started", "assignment", "cancellation", "refused")
    STARTED_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENT_FIELD_NUMBER: _ClassVar[int]
    CANCELLATION_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    started: WorkStarted
    assignment: TaskAssignment
    cancellation: TaskCancellation
    refused: TaskResultRefused
    def __init__(self, started: _Optional[_Union[WorkStarted, _Mapping]] = ..., assignment: _Optional[_Union[TaskAssignment, _Mapping]] = ..., cancellation: _Optional[_Union[TaskCancellation, _Mapping]] = ..., refused: _Optional[_Union[TaskResultRefused, _Mapping]] = ...) -> None: ...

class CompleteTaskRequest(_message.Message):
    __slots__ = ("assignment_id", "output")
    ASSIGNMENT_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    assignment_id: str
    output: _struct_pb2.Struct
    def __init__(self, assignment_id: _Optional[str] = ..., output: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class CompleteTaskResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class FailTaskRequest(_message.Message):
    __slots__ = ("assignment_id", "error", "error_type", "output")
    ASSIGNMENT_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ERROR_TYPE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    assignment_id: str
    error: str
    error_type: str
    output: _struct_pb2.Struct
    def __init__(self, assignment_id: _Optional[str] = ..., error: _Optional[str] = ..., error_type: _Optional[str] = ..., output: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class FailTaskResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WorkStart(_message.Message):
    __slots__ = ("queues", "credits", "worker_name")
    QUEUES_FIELD_NUMBER: _ClassVar[int]
    CREDITS_FIELD_NUMBER: _ClassVar[int]
    WORKER_NAME_FIELD_NUMBER: _ClassVar[int]
    queues: _containers.RepeatedScalarFieldContainer[str]
    credits: int
    worker_name: str
    def __init__(self, queues: _Optional[_Iterable[str]] = ..., credits: _Optional[int] = ..., worker_name: _Optional[str] = ...) -> None: ...

class WorkCredits(_message.Message):
    __slots__ = ("credits",)
    CREDITS_FIELD_NUMBER: _ClassVar[int]
    credits: int
    def __init__(self, credits: _Optional[int] = ...) -> None: ...

class WorkStarted(_message.Message):
    __slots__ = ("worker_id",)
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    def __init__(self, worker_id: _Optional[str] = ...) -> None: ...

class TaskAssignment(_message.Message):
    __slots__ = ("assignment_id", "execution_id", "flow_id", "task_name", "queue", "step", "attempt", "params", "input", "results", "deadline", "idempotency_key")
    ASSIGNMENT_ID_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    FLOW_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_NAME_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    assignment_id: str
    execution_id: str
    flow_id: str
    task_name: str
    queue: str
    step: int
    attempt: int
    params: _struct_pb2.Struct
    input: _struct_pb2.Struct
    results: _containers.RepeatedCompositeFieldContainer[_flow_service_pb2.TaskResult]
    deadline: _timestamp_pb2.Timestamp
    idempotency_key: str
    def __init__(self, assignment_id: _Optional[str] = ..., execution_id: _Optional[str] = ..., flow_id: _Optional[str] = ..., task_name: _Optional[str] = ..., queue: _Optional[str] = ..., step: _Optional[int] = ..., attempt: _Optional[int] = ..., params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., input: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., results: _Optional[_Iterable[_Union[_flow_service_pb2.TaskResult, _Mapping]]] = ..., deadline: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class TaskCancellation(_message.Message):
    __slots__ = ("assignment_id", "reason")
    ASSIGNMENT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    assignment_id: str
    reason: CancellationReason
    def __init__(self, assignment_id: _Optional[str] = ..., reason: _Optional[_Union[CancellationReason, str]] = ...) -> None: ...

class TaskResultRefused(_message.Message):
    __slots__ = ("assignment_id", "reason", "message")
    ASSIGNMENT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    assignment_id: str
    reason: str
    message: str
    def __init__(self, assignment_id: _Optional[str] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...
