"""What a task implementation receives and how it reports failure."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from flowservice._quick_init import quick_init
from flowservice.models import Task, TaskResult

__all__ = [
    "Implementation",
    "TaskContext",
    "TaskFailure",
    "TaskFunction",
    "TaskImplementation",
    "TaskOutput",
]

TaskOutput = Mapping[str, Any] | None
"""What a task returns on success: a JSON-like mapping, or None for no output."""


@quick_init
@dataclass(frozen=True, slots=True)
class TaskContext:
    """Everything a task run may read."""

    execution_id: str
    """The execution this run belongs to."""
    flow_id: str
    """The `id` of the flow being run."""
    task: Task
    """The task definition being run."""
    params: Mapping[str, Any]
    """The task's params, with the values of its input mapping over them."""
    input: Mapping[str, Any]
    """The flow's input, from the request."""
    step: int
    """The position of this run among the execution's task runs, from 1."""
    attempt: int
    """Which attempt of this run this is, from 1 (above 1 only when retried)."""
    results: Mapping[str, TaskResult]
    """The latest result (outcome, output, ...) of every task that ran before this
    one, in the order they last ran. A read-only live view (copying it per step
    would make long flows quadratic): read it while the task runs, copy it to
    keep it."""
    deadline: float | None = None
    """When this attempt must end, on the event loop's clock (`loop.time()`): the
    earliest of the task's `timeout` and the execution's deadline. The engine
    always sets it; None (a context built by hand) means no limit."""

    @property
    def idempotency_key(self) -> str:
        """The same on every attempt of one task run: `execution id/task/step`."""
        return f"{self.execution_id}/{self.task.name}/{self.step}"


class TaskFailure(Exception):
    """Raised by a task to fail with a message and, optionally, an output and an error type.

    `error_type` (default `TaskFailure`) is what `RetryPolicy.non_retryable_errors`
    matches; a task that knows a failure is permanent gives it a type of its own.
    `retryable=False` says that no retry can help (a refused target, a 404):
    the attempt is never retried, whatever the policy. `retry_after` (seconds)
    is the wait the failed service asked for (HTTP `Retry-After`): the retry
    waits at least that, within the policy's `maximum_interval`.
    """

    def __init__(
        self,
        message: str,
        output: Mapping[str, Any] | None = None,
        error_type: str = "TaskFailure",
        *,
        retryable: bool = True,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.output: Mapping[str, Any] = output or {}
        self.error_type = error_type
        self.retryable = retryable
        self.retry_after = retry_after


@runtime_checkable
class TaskImplementation(Protocol):
    """A task written as a class: `run` may be sync (it then runs in a thread) or async.

    Success is returning (a mapping or None); failure is raising, preferably
    `TaskFailure`.
    """

    def run(self, ctx: TaskContext) -> TaskOutput | Awaitable[TaskOutput]:
        """Carries out the task."""
        ...


TaskFunction = Callable[[TaskContext], TaskOutput | Awaitable[TaskOutput]]
"""A task written as a function, sync (run in a thread) or async."""

Implementation = TaskFunction | TaskImplementation | type[TaskImplementation]
"""What `TaskRegistry.register` accepts: a function, an object with `run`, or a class
whose instances have one (constructed once, with no arguments)."""
