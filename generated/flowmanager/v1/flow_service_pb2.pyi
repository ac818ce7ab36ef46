import datetime

from flowmanager.v1 import flow_pb2 as _flow_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExecutionStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXECUTION_STATUS_UNSPECIFIED: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_COMPLETED: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_FAILED: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_CANCELLED: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_TIMED_OUT: _ClassVar[ExecutionStatus]

class TaskOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_OUTCOME_UNSPECIFIED: _ClassVar[TaskOutcome]
    TASK_OUTCOME_SUCCESS: _ClassVar[TaskOutcome]
    TASK_OUTCOME_FAILURE: _ClassVar[TaskOutcome]

class Branch(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BRANCH_UNSPECIFIED: _ClassVar[Branch]
    BRANCH_SUCCESS: _ClassVar[Branch]
    BRANCH_FAILURE: _ClassVar[Branch]
EXECUTION_STATUS_UNSPECIFIED: ExecutionStatus
EXECUTION_STATUS_COMPLETED: ExecutionStatus
EXECUTION_STATUS_FAILED: ExecutionStatus
EXECUTION_STATUS_CANCELLED: ExecutionStatus
EXECUTION_STATUS_TIMED_OUT: ExecutionStatus
TASK_OUTCOME_UNSPECIFIED: TaskOutcome
TASK_OUTCOME_SUCCESS: TaskOutcome
TASK_OUTCOME_FAILURE: TaskOutcome
BRANCH_UNSPECIFIED: Branch
BRANCH_SUCCESS: Branch
BRANCH_FAILURE: Branch

class ExecuteRequest(_message.Message):
    __slots__ = ("flow", "input", "stubs", "request_id", "flow_ref")
    class StubsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: TaskStub
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[TaskStub, _Mapping]] = ...) -> None: ...
    FLOW_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    STUBS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    FLOW_REF_FIELD_NUMBER: _ClassVar[int]
    flow: _flow_pb2.Flow
    input: _struct_pb2.Struct
    stubs: _containers.MessageMap[str, TaskStub]
    request_id: str
    flow_ref: FlowReference
    def __init__(self, flow: _Optional[_Union[_flow_pb2.Flow, _Mapping]] = ..., input: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., stubs: _Optional[_Mapping[str, TaskStub]] = ..., request_id: _Optional[str] = ..., flow_ref: _Optional[_Union[FlowReference, _Mapping]] = ...) -> None: ...

class ExecuteResponse(_message.Message):
    __slots__ = ("flow_id", "status", "executed_tasks", "failed_task", "execution_id", "task_results", "error", "start_time", "duration", "output", "error_type")
    FLOW_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    EXECUTED_TASKS_FIELD_NUMBER: _ClassVar[int]
    FAILED_TASK_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_RESULTS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ERROR_TYPE_FIELD_NUMBER: _ClassVar[int]
    flow_id: str
    status: ExecutionStatus
    executed_tasks: _containers.RepeatedScalarFieldContainer[str]
    failed_task: str
    execution_id: str
    task_results: _containers.RepeatedCompositeFieldContainer[TaskResult]
    error: str
    start_time: _timestamp_pb2.Timestamp
    duration: _duration_pb2.Duration
    output: _struct_pb2.Value
    error_type: str
    def __init__(self, flow_id: _Optional[str] = ..., status: _Optional[_Union[ExecutionStatus, str]] = ..., executed_tasks: _Optional[_Iterable[str]] = ..., failed_task: _Optional[str] = ..., execution_id: _Optional[str] = ..., task_results: _Optional[_Iterable[_Union[TaskResult, _Mapping]]] = ..., error: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., output: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., error_type: _Optional[str] = ...) -> None: ...

class ExecuteStreamRequest(_message.Message):
    __slots__ = ("flow", "input", "stubs", "request_id", "flow_ref")
    class StubsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: TaskStub
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[TaskStub, _Mapping]] = ...) -> None: ...
    FLOW_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    STUBS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    FLOW_REF_FIELD_NUMBER: _ClassVar[int]
    flow: _flow_pb2.Flow
    input: _struct_pb2.Struct
    stubs: _containers.MessageMap[str, TaskStub]
    request_id: str
    flow_ref: FlowReference
    def __init__(self, flow: _Optional[_Union[_flow_pb2.Flow, _Mapping]] = ..., input: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., stubs: _Optional[_Mapping[str, TaskStub]] = ..., request_id: _Optional[str] = ..., flow_ref: _Optional[_Union[FlowReference, _Mapping]] = ...) -> None: ...

class ValidateRequest(_message.Message):
    __slots__ = ("flow", "input", "stubs", "request_id", "flow_ref")
    class StubsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: TaskStub
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[TaskStub, _Mapping]] = ...) -> None: ...
    FLOW_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    STUBS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    FLOW_REF_FIELD_NUMBER: _ClassVar[int]
    flow: _flow_pb2.Flow
    input: _struct_pb2.Struct
    stubs: _containers.MessageMap[str, TaskStub]
    request_id: str
    flow_ref: FlowReference
    def __init__(self, flow: _Optional[_Union[_flow_pb2.Flow, _Mapping]] = ..., input: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., stubs: _Optional[_Mapping[str, TaskStub]] = ..., request_id: _Optional[str] = ..., flow_ref: _Optional[_Union[FlowReference, _Mapping]] = ...) -> None: ...

class ValidateResponse(_message.Message):
    __slots__ = ("valid", "errors", "warnings")
    VALID_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    valid: bool
    errors: _containers.RepeatedCompositeFieldContainer[ValidationIssue]
    warnings: _containers.RepeatedCompositeFieldContainer[ValidationIssue]
    def __init__(self, valid: _Optional[bool] = ..., errors: _Optional[_Iterable[_Union[ValidationIssue, _Mapping]]] = ..., warnings: _Optional[_Iterable[_Union[ValidationIssue, _Mapping]]] = ...) -> None: ...

class ExecuteStreamResponse(_message.Message):
    __slots__ = ("execution_id", "sequence", "time", "execution_started", "task_started", "task_finished", "condition_evaluated", "execution_finished", "task_retrying")
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_STARTED_FIELD_NUMBER: _ClassVar[int]
    TASK_STARTED_FIELD_NUMBER: _ClassVar[int]
    TASK_FINISHED_FIELD_NUMBER: _ClassVar[int]
    CONDITION_EVALUATED_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_FINISHED_FIELD_NUMBER: _ClassVar[int]
    TASK_RETRYING_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    sequence: int
    time: _timestamp_pb2.Timestamp
    execution_started: ExecutionStartedEvent
    task_started: TaskStartedEvent
    task_finished: TaskFinishedEvent
    condition_evaluated: ConditionEvaluatedEvent
    execution_finished: ExecutionFinishedEvent
    task_retrying: TaskRetryingEvent
    def __init__(self, execution_id: _Optional[str] = ..., sequence: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., execution_started: _Optional[_Union[ExecutionStartedEvent, _Mapping]] = ..., task_started: _Optional[_Union[TaskStartedEvent, _Mapping]] = ..., task_finished: _Optional[_Union[TaskFinishedEvent, _Mapping]] = ..., condition_evaluated: _Optional[_Union[ConditionEvaluatedEvent, _Mapping]] = ..., execution_finished: _Optional[_Union[ExecutionFinishedEvent, _Mapping]] = ..., task_retrying: _Optional[_Union[TaskRetryingEvent, _Mapping]] = ...) -> None: ...

class ExecutionStartedEvent(_message.Message):
    __slots__ = ("flow_id", "flow_name", "start_task")
    FLOW_ID_FIELD_NUMBER: _ClassVar[int]
    FLOW_NAME_FIELD_NUMBER: _ClassVar[int]
    START_TASK_FIELD_NUMBER: _ClassVar[int]
    flow_id: str
    flow_name: str
    start_task: str
    def __init__(self, flow_id: _Optional[str] = ..., flow_name: _Optional[str] = ..., start_task: _Optional[str] = ...) -> None: ...

class TaskStartedEvent(_message.Message):
    __slots__ = ("task", "type", "step")
    TASK_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    task: str
    type: str
    step: int
    def __init__(self, task: _Optional[str] = ..., type: _Optional[str] = ..., step: _Optional[int] = ...) -> None: ...

class TaskFinishedEvent(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: TaskResult
    def __init__(self, result: _Optional[_Union[TaskResult, _Mapping]] = ...) -> None: ...

class TaskRetryingEvent(_message.Message):
    __slots__ = ("task", "attempt", "error", "error_type", "delay")
    TASK_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ERROR_TYPE_FIELD_NUMBER: _ClassVar[int]
    DELAY_FIELD_NUMBER: _ClassVar[int]
    task: str
    attempt: int
    error: str
    error_type: str
    delay: _duration_pb2.Duration
    def __init__(self, task: _Optional[str] = ..., attempt: _Optional[int] = ..., error: _Optional[str] = ..., error_type: _Optional[str] = ..., delay: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class ConditionEvaluatedEvent(_message.Message):
    __slots__ = ("condition", "source_task", "expected_outcome", "actual_outcome", "branch", "next_task", "expression", "value", "condition_index", "links_tested")
    CONDITION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_TASK_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_OUTCOME_FIELD_NUMBER: _ClassVar[int]
    ACTUAL_OUTCOME_FIELD_NUMBER: _ClassVar[int]
    BRANCH_FIELD_NUMBER: _ClassVar[int]
    NEXT_TASK_FIELD_NUMBER: _ClassVar[int]
    EXPRESSION_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    CONDITION_INDEX_FIELD_NUMBER: _ClassVar[int]
    LINKS_TESTED_FIELD_NUMBER: _ClassVar[int]
    condition: str
    source_task: str
    expected_outcome: str
    actual_outcome: TaskOutcome
    branch: Branch
    next_task: str
    expression: str
    value: bool
    condition_index: int
    links_tested: int
    def __init__(self, condition: _Optional[str] = ..., source_task: _Optional[str] = ..., expected_outcome: _Optional[str] = ..., actual_outcome: _Optional[_Union[TaskOutcome, str]] = ..., branch: _Optional[_Union[Branch, str]] = ..., next_task: _Optional[str] = ..., expression: _Optional[str] = ..., value: _Optional[bool] = ..., condition_index: _Optional[int] = ..., links_tested: _Optional[int] = ...) -> None: ...

class ExecutionFinishedEvent(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: ExecuteResponse
    def __init__(self, result: _Optional[_Union[ExecuteResponse, _Mapping]] = ...) -> None: ...

class TaskResult(_message.Message):
    __slots__ = ("task", "outcome", "output", "error", "start_time", "duration", "step", "attempts", "error_type", "stubbed", "inputs", "decision")
    TASK_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    ERROR_TYPE_FIELD_NUMBER: _ClassVar[int]
    STUBBED_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    task: str
    outcome: TaskOutcome
    output: _struct_pb2.Struct
    error: str
    start_time: _timestamp_pb2.Timestamp
    duration: _duration_pb2.Duration
    step: int
    attempts: int
    error_type: str
    stubbed: bool
    inputs: _struct_pb2.Struct
    decision: ConditionEvaluatedEvent
    def __init__(self, task: _Optional[str] = ..., outcome: _Optional[_Union[TaskOutcome, str]] = ..., output: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., error: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., step: _Optional[int] = ..., attempts: _Optional[int] = ..., error_type: _Optional[str] = ..., stubbed: _Optional[bool] = ..., inputs: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., decision: _Optional[_Union[ConditionEvaluatedEvent, _Mapping]] = ...) -> None: ...

class TaskStub(_message.Message):
    __slots__ = ("outcome", "output", "error")
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    outcome: TaskOutcome
    output: _struct_pb2.Struct
    error: str
    def __init__(self, outcome: _Optional[_Union[TaskOutcome, str]] = ..., output: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., error: _Optional[str] = ...) -> None: ...

class FlowReference(_message.Message):
    __slots__ = ("flow_id", "version")
    FLOW_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    flow_id: str
    version: int
    def __init__(self, flow_id: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class ValidationIssue(_message.Message):
    __slots__ = ("field", "description", "reason")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    field: str
    description: str
    reason: str
    def __init__(self, field: _Optional[str] = ..., description: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...
