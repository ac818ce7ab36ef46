"""Pure conversions between protobuf messages and domain models.

The only module besides the servicer that knows both worlds. Enum values are
mapped through explicit tables so that a renumbered or added value fails
loudly here instead of being misread.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from google.protobuf import duration_pb2, json_format, struct_pb2

from flowmanager.v1 import flow_pb2, flow_service_pb2
from flowservice.errors import InvalidFlowError, Violation
from flowservice.events import (
    ConditionEvaluated,
    Event,
    ExecutionFinished,
    ExecutionStarted,
    TaskFinished,
    TaskRetrying,
    TaskStarted,
)
from flowservice.models import (
    DEFAULT_TASK_TYPE,
    Branch,
    Condition,
    ExecutionStatus,
    ExecutionSummary,
    Flow,
    RetryPolicy,
    Task,
    TaskOutcome,
    TaskResult,
)

__all__ = [
    "event_to_proto",
    "flow_from_proto",
    "flow_from_request",
    "summary_to_proto",
    "task_result_to_proto",
]

_STATUS: Mapping[ExecutionStatus, flow_service_pb2.ExecutionStatus] = {
    ExecutionStatus.COMPLETED: flow_service_pb2.EXECUTION_STATUS_COMPLETED,
    ExecutionStatus.FAILED: flow_service_pb2.EXECUTION_STATUS_FAILED,
    ExecutionStatus.CANCELLED: flow_service_pb2.EXECUTION_STATUS_CANCELLED,
    ExecutionStatus.TIMED_OUT: flow_service_pb2.EXECUTION_STATUS_TIMED_OUT,
}
_OUTCOME: Mapping[TaskOutcome, flow_service_pb2.TaskOutcome] = {
    TaskOutcome.SUCCESS: flow_service_pb2.TASK_OUTCOME_SUCCESS,
    TaskOutcome.FAILURE: flow_service_pb2.TASK_OUTCOME_FAILURE,
}
_BRANCH: Mapping[Branch, flow_service_pb2.Branch] = {
    Branch.SUCCESS: flow_service_pb2.BRANCH_SUCCESS,
    Branch.FAILURE: flow_service_pb2.BRANCH_FAILURE,
}


def flow_from_request(
    request: flow_service_pb2.ExecuteRequest | flow_service_pb2.ExecuteStreamRequest,
) -> Flow:
    """The domain flow of a request; `InvalidFlowError` when the request has none."""
    if not request.HasField("flow"):
        raise InvalidFlowError((Violation("flow", "flow is required", "MISSING_FLOW"),))
    return flow_from_proto(request.flow)


def flow_from_proto(message: flow_pb2.Flow) -> Flow:
    """The domain `Flow` a `flowmanager.v1.Flow` message describes (not yet validated)."""
    return Flow(
        id=message.id,
        name=message.name,
        start_task=message.start_task,
        tasks=tuple(
            Task(
                name=task.name,
                type=task.type or DEFAULT_TASK_TYPE,
                description=task.description,
                params=_struct_to_dict(task.params) if task.HasField("params") else {},
                timeout=_timedelta(task.timeout) if task.HasField("timeout") else None,
                retry=_retry_from_proto(task.retry) if task.HasField("retry") else RetryPolicy(),
            )
            for task in message.tasks
        ),
        conditions=tuple(
            Condition(
                name=condition.name,
                source_task=condition.source_task,
                outcome=condition.outcome,
                target_task_success=condition.target_task_success,
                target_task_failure=condition.target_task_failure,
            )
            for condition in message.conditions
        ),
        max_steps=message.max_steps,
        timeout=_timedelta(message.timeout) if message.HasField("timeout") else None,
    )


def _retry_from_proto(message: flow_pb2.RetryPolicy) -> RetryPolicy:
    """Applies the documented defaults for unset fields; other values pass to validation."""
    defaults = RetryPolicy()
    return RetryPolicy(
        max_attempts=message.max_attempts or defaults.max_attempts,
        initial_interval=(
            _timedelta(message.initial_interval)
            if message.HasField("initial_interval")
            else defaults.initial_interval
        ),
        backoff_coefficient=message.backoff_coefficient or defaults.backoff_coefficient,
        maximum_interval=(
            _timedelta(message.maximum_interval) if message.HasField("maximum_interval") else None
        ),
        jitter=message.jitter,
        non_retryable_errors=frozenset(message.non_retryable_errors),
    )


def task_result_to_proto(result: TaskResult) -> flow_service_pb2.TaskResult:
    """The `TaskResult` message of a domain task result."""
    message = flow_service_pb2.TaskResult(
        task=result.task,
        outcome=_OUTCOME[result.outcome],
        error=result.error,
        error_type=result.error_type,
        step=result.step,
        attempts=result.attempts,
    )
    if result.output:
        message.output.update(result.output)
    message.start_time.FromDatetime(result.started_at)
    message.duration.FromTimedelta(result.duration)
    return message


def summary_to_proto(summary: ExecutionSummary) -> flow_service_pb2.ExecuteResponse:
    """The `ExecuteResponse` message of an execution summary."""
    message = flow_service_pb2.ExecuteResponse(
        flow_id=summary.flow_id,
        status=_STATUS[summary.status],
        executed_tasks=summary.executed_tasks,
        failed_task=summary.failed_task,
        execution_id=summary.execution_id,
        task_results=[task_result_to_proto(result) for result in summary.task_results],
        error=summary.error,
    )
    message.start_time.FromDatetime(summary.started_at)
    message.duration.FromTimedelta(summary.duration)
    return message


def event_to_proto(event: Event) -> flow_service_pb2.ExecuteStreamResponse:
    """The `ExecuteStreamResponse` message of a domain event."""
    message = flow_service_pb2.ExecuteStreamResponse(
        execution_id=event.execution_id, sequence=event.sequence
    )
    message.time.FromDatetime(event.time)
    match event:
        case ExecutionStarted():
            message.execution_started.CopyFrom(
                flow_service_pb2.ExecutionStartedEvent(
                    flow_id=event.flow_id, flow_name=event.flow_name, start_task=event.start_task
                )
            )
        case TaskStarted():
            message.task_started.CopyFrom(
                flow_service_pb2.TaskStartedEvent(task=event.task, type=event.type, step=event.step)
            )
        case TaskRetrying():
            retrying = message.task_retrying
            retrying.task = event.task
            retrying.attempt = event.attempt
            retrying.error = event.error
            retrying.error_type = event.error_type
            retrying.delay.FromTimedelta(event.delay)
        case TaskFinished():
            message.task_finished.result.CopyFrom(task_result_to_proto(event.result))
        case ConditionEvaluated():
            message.condition_evaluated.CopyFrom(
                flow_service_pb2.ConditionEvaluatedEvent(
                    condition=event.condition,
                    source_task=event.source_task,
                    expected_outcome=event.expected_outcome,
                    actual_outcome=_OUTCOME[event.actual_outcome],
                    branch=_BRANCH[event.branch],
                    next_task=event.next_task,
                )
            )
        case ExecutionFinished():
            message.execution_finished.result.CopyFrom(summary_to_proto(event.summary))
    return message


def _struct_to_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    return json_format.MessageToDict(struct)


def _timedelta(duration: duration_pb2.Duration) -> timedelta:
    return duration.ToTimedelta()
