"""Pure conversions between `flowmanager.v1.WorkerService` messages and the dispatcher's types.

Requests are checked here, every problem at once: a bad `WorkStart` or
result raises `InvalidWorkRequestError` with a field violation per problem.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from google.protobuf import struct_pb2, timestamp_pb2

from flowmanager.v1 import worker_service_pb2
from flowservice.api.convert import struct_to_json, task_result_to_proto
from flowservice.dispatch import (
    MAX_CREDITS,
    MAX_QUEUES_PER_WORKER,
    Assignment,
    Cancellation,
    Refusal,
    WorkResult,
)
from flowservice.errors import InvalidWorkRequestError, Violation

__all__ = [
    "WORKER_FAILURE",
    "assignment_to_proto",
    "cancellation_to_proto",
    "credits_from_proto",
    "refusal_to_proto",
    "result_from_complete",
    "result_from_fail",
    "start_from_proto",
]

WORKER_FAILURE = "WorkerFailure"
"""The error type of a failure that names none."""
MAX_ERROR_LENGTH = 4_096
"""The most characters of a failure's `error`."""

_CANCELLATION_REASON = {
    False: worker_service_pb2.CANCELLATION_REASON_CANCELLED,
    True: worker_service_pb2.CANCELLATION_REASON_DEADLINE_EXCEEDED,
}


def start_from_proto(
    start: worker_service_pb2.WorkStart, max_name_length: int
) -> tuple[str, tuple[str, ...], int]:
    """The worker's name, queues and credits; `InvalidWorkRequestError` lists every problem."""
    problems: list[Violation] = []
    queues = tuple(dict.fromkeys(start.queues))  # in order, each once
    if not queues:
        problems.append(Violation("start.queues", "name at least one queue", "NO_QUEUES"))
    if len(queues) > MAX_QUEUES_PER_WORKER:
        problems.append(
            Violation(
                "start.queues",
                f"at most {MAX_QUEUES_PER_WORKER} queues per worker",
                "TOO_MANY_QUEUES",
                ("max_queues_per_worker", MAX_QUEUES_PER_WORKER),
            )
        )
    for index, queue in enumerate(queues[:MAX_QUEUES_PER_WORKER]):
        if not queue.strip() or len(queue) > max_name_length:
            problems.append(
                Violation(
                    f"start.queues[{index}]",
                    f"a queue is a non-empty name of at most {max_name_length} characters",
                    "INVALID_QUEUE",
                    ("max_name_length", max_name_length),
                )
            )
    problems += _credit_problems("start.credits", start.credits)
    if len(start.worker_name) > max_name_length:
        problems.append(
            Violation(
                "start.worker_name",
                f"at most {max_name_length} characters",
                "NAME_TOO_LONG",
                ("max_name_length", max_name_length),
            )
        )
    if problems:
        raise InvalidWorkRequestError(tuple(problems))
    return start.worker_name, queues, start.credits


def credits_from_proto(credits: worker_service_pb2.WorkCredits) -> int:
    """The credits a worker adds; `InvalidWorkRequestError` when not in 1..MAX_CREDITS."""
    problems = _credit_problems("credits.credits", credits.credits)
    if problems:
        raise InvalidWorkRequestError(tuple(problems))
    return credits.credits


def _credit_problems(path: str, credits: int) -> list[Violation]:
    if 1 <= credits <= MAX_CREDITS:
        return []
    return [
        Violation(
            path,
            f"credits must be from 1 to {MAX_CREDITS}",
            "INVALID_CREDITS",
            ("max_credits", MAX_CREDITS),
        )
    ]


def result_from_complete(
    request: worker_service_pb2.CompleteTaskRequest, path: str = ""
) -> tuple[str, WorkResult]:
    """The assignment id and the success it reports."""
    output, problems = struct_to_json(request.output, f"{path}output")
    problems += _id_problems(request.assignment_id, path)
    if problems:
        raise InvalidWorkRequestError(tuple(problems))
    return request.assignment_id, WorkResult(output)


def result_from_fail(
    request: worker_service_pb2.FailTaskRequest, max_name_length: int, path: str = ""
) -> tuple[str, WorkResult]:
    """The assignment id and the failure it reports (`WorkerFailure` when it names no type)."""
    output, problems = struct_to_json(request.output, f"{path}output")
    problems += _id_problems(request.assignment_id, path)
    if len(request.error) > MAX_ERROR_LENGTH:
        problems.append(
            Violation(
                f"{path}error",
                f"at most {MAX_ERROR_LENGTH} characters",
                "ERROR_TOO_LONG",
                ("max_error_length", MAX_ERROR_LENGTH),
            )
        )
    if len(request.error_type) > max_name_length:
        problems.append(
            Violation(
                f"{path}error_type",
                f"at most {max_name_length} characters",
                "NAME_TOO_LONG",
                ("max_name_length", max_name_length),
            )
        )
    if problems:
        raise InvalidWorkRequestError(tuple(problems))
    error_type = request.error_type or WORKER_FAILURE
    return request.assignment_id, WorkResult(
        output, request.error or "the worker failed", error_type
    )


def _id_problems(assignment_id: str, path: str) -> list[Violation]:
    if assignment_id:
        return []
    return [Violation(f"{path}assignment_id", "required", "MISSING_ASSIGNMENT_ID")]


def assignment_to_proto(
    assignment: Assignment, loop_now: float, wall_now: datetime
) -> worker_service_pb2.WorkResponse:
    """The push of `assignment`; the two nows turn its deadline (loop clock) to wall time."""
    ctx = assignment.ctx
    message = worker_service_pb2.TaskAssignment(
        assignment_id=assignment.id,
        execution_id=ctx.execution_id,
        flow_id=ctx.flow_id,
        task_name=ctx.task.name,
        queue=assignment.queue,
        step=ctx.step,
        attempt=ctx.attempt,
        results=[task_result_to_proto(result) for result in ctx.results.values()],
        idempotency_key=assignment.idempotency_key,
    )
    _update(message.params, ctx.params)
    _update(message.input, ctx.input)
    if ctx.deadline is not None:
        deadline = wall_now + timedelta(seconds=max(ctx.deadline - loop_now, 0.0))
        message.deadline.CopyFrom(_timestamp(deadline))
    return worker_service_pb2.WorkResponse(assignment=message)


def _update(struct: struct_pb2.Struct, data: Mapping[str, Any]) -> None:
    if data:
        struct.update(dict(data))


def _timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def cancellation_to_proto(cancellation: Cancellation) -> worker_service_pb2.WorkResponse:
    """The push of a cancellation."""
    return worker_service_pb2.WorkResponse(
        cancellation=worker_service_pb2.TaskCancellation(
            assignment_id=cancellation.assignment_id,
            reason=_CANCELLATION_REASON[cancellation.deadline_passed],
        )
    )


def refusal_to_proto(refusal: Refusal) -> worker_service_pb2.WorkResponse:
    """The push telling a worker that one of its results was not applied."""
    return worker_service_pb2.WorkResponse(
        refused=worker_service_pb2.TaskResultRefused(
            assignment_id=refusal.assignment_id, reason=refusal.reason, message=refusal.message
        )
    )
