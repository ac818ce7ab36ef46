"""The events an execution produces, in the order it produces them.

Every execution yields `ExecutionStarted` first and `ExecutionFinished` last;
between them, for each task run, `TaskStarted`, a `TaskRetrying` per failed
attempt that is retried, `TaskFinished` and, when a condition routes after
that task, `ConditionEvaluated`. `ExecuteStream`
forwards these as they happen; `Execute` returns the summary carried by the
last one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from flowservice._quick_init import quick_init
from flowservice.models import Decision, ExecutionSummary, TaskResult

__all__ = [
    "ConditionEvaluated",
    "Event",
    "ExecutionFinished",
    "ExecutionStarted",
    "TaskFinished",
    "TaskRetrying",
    "TaskStarted",
]


@dataclass(frozen=True, slots=True)
class _EventBase:
    execution_id: str
    """The execution the event belongs to."""
    sequence: int
    """The event's position in its execution, from 1."""
    time: datetime
    """When it happened (UTC)."""


@quick_init
@dataclass(frozen=True, slots=True)
class ExecutionStarted(_EventBase):
    """The execution started; always the first event."""

    flow_id: str
    """The `id` of the flow being run."""
    flow_name: str
    """The `name` of the flow being run."""
    start_task: str
    """The task that runs first."""


@quick_init
@dataclass(frozen=True, slots=True)
class TaskStarted(_EventBase):
    """A task is about to run."""

    task: str
    """The task's name."""
    type: str
    """The implementation that runs it."""
    step: int
    """The position of this run among the execution's task runs, from 1."""


@quick_init
@dataclass(frozen=True, slots=True)
class TaskRetrying(_EventBase):
    """An attempt of a task failed; another follows after `delay`."""

    task: str
    """The task's name."""
    attempt: int
    """The attempt that failed, from 1."""
    error: str
    """Why it failed."""
    error_type: str
    """The kind of error, as matched by `RetryPolicy.non_retryable_errors`."""
    delay: timedelta
    """How long the engine waits before the next attempt."""


@quick_init
@dataclass(frozen=True, slots=True)
class TaskFinished(_EventBase):
    """A task has finished, successfully or not."""

    result: TaskResult
    """What the run produced."""


@quick_init
@dataclass(frozen=True, slots=True)
class ConditionEvaluated(_EventBase):
    """A condition decided what runs after its source task."""

    decision: Decision
    """Which condition, what it tested, the value, the branch and the next task."""


@quick_init
@dataclass(frozen=True, slots=True)
class ExecutionFinished(_EventBase):
    """The execution finished; always the last event."""

    summary: ExecutionSummary
    """How it ended: the same summary `Execute` returns."""


Event = (
    ExecutionStarted
    | TaskStarted
    | TaskRetrying
    | TaskFinished
    | ConditionEvaluated
    | ExecutionFinished
)
"""Any event of an execution."""
