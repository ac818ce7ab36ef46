"""The domain model of a flow and of its execution.

A `Flow` is pure data: tasks, and conditions that route between them. Running
it produces `TaskResult`s and, at the end, an `ExecutionSummary`. Nothing here
knows about gRPC or protobuf; the API layer converts to and from messages.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from flowservice._quick_init import quick_init

__all__ = [
    "DEFAULT_TASK_TYPE",
    "END",
    "NO_RETRY",
    "Branch",
    "Condition",
    "Decision",
    "ExecutionStatus",
    "ExecutionSummary",
    "Flow",
    "RetryPolicy",
    "Task",
    "TaskOutcome",
    "TaskResult",
    "TaskStub",
    "TimeLimit",
]

END = "end"
"""The target name that stops a flow; no task may be called this."""

DEFAULT_TASK_TYPE = "mock"
"""The implementation that runs a task whose `type` is empty."""


class TaskOutcome(enum.Enum):
    """Whether one task run succeeded or failed."""

    SUCCESS = "success"
    FAILURE = "failure"


class ExecutionStatus(enum.Enum):
    """How an execution ended."""

    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"


class Branch(enum.Enum):
    """Which target of a condition was taken."""

    SUCCESS = "success"
    """The task's outcome matched the condition: `target_task_success`."""
    FAILURE = "failure"
    """The task's outcome did not match: `target_task_failure`."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a task's failed attempts are retried, with exponential backoff."""

    max_attempts: int = 1
    """The most attempts, the first included; 1 means no retry."""
    initial_interval: timedelta = timedelta(seconds=1)
    """The delay before the first retry."""
    backoff_coefficient: float = 2.0
    """How much the delay grows after each retry (at least 1)."""
    maximum_interval: timedelta | None = None
    """The longest delay; None means 100 times `initial_interval`."""
    jitter: bool = False
    """Draw each delay uniformly between zero and its backoff value."""
    non_retryable_errors: frozenset[str] = frozenset()
    """Error types that fail the task at once."""


NO_RETRY = RetryPolicy()
"""The policy of a task that sets none: one attempt (shared, so checks are identity tests)."""


@quick_init
@dataclass(frozen=True, slots=True)
class Task:
    """One step of a flow, carried out by the implementation named by `type`."""

    name: str
    """Unique within the flow; conditions and results refer to it."""
    type: str = DEFAULT_TASK_TYPE
    """The registered implementation that runs the task."""
    description: str = ""
    """What the task does, for people reading the flow."""
    params: Mapping[str, Any] = field(default_factory=dict)
    """Implementation-specific parameters (JSON-like values)."""
    timeout: timedelta | None = None
    """The longest one attempt may run; None means no per-task limit."""
    retry: RetryPolicy = NO_RETRY
    """How failed attempts are retried; the default makes one attempt only."""
    input_mapping: Mapping[str, str] = field(default_factory=dict)
    """Param name to CEL expression, evaluated just before the task starts."""


@quick_init
@dataclass(frozen=True, slots=True)
class Condition:
    """A routing decision taken after `source_task` runs; it tests `outcome` or `expression`."""

    source_task: str
    """The task after which this condition is evaluated."""
    outcome: str = ""
    """The outcome that counts as a match: `success` or `failure` (or empty)."""
    target_task_success: str = ""
    """Runs next when the test holds; `end` or empty stops the flow."""
    target_task_failure: str = ""
    """Runs next when it does not (for a chain, when no link holds)."""
    name: str = ""
    """Reported when the condition is evaluated."""
    expression: str = ""
    """A CEL expression producing a bool, tested instead of `outcome` (or empty)."""


@dataclass(frozen=True, slots=True)
class Flow:
    """A flow definition: tasks run one after another, routed by conditions."""

    tasks: tuple[Task, ...]
    """The tasks; list order is the default order of execution."""
    start_task: str
    """The name of the task that runs first."""
    conditions: tuple[Condition, ...] = ()
    """At most one per source task."""
    id: str = ""
    """The caller's identifier, echoed in results."""
    name: str = ""
    """A human-readable name."""
    max_steps: int = 0
    """The most task runs allowed in one execution; 0 means the server's default."""
    timeout: timedelta | None = None
    """The longest the whole execution may run; None means no flow-level limit."""
    output: str = ""
    """A CEL expression computing the flow's output; empty means the last task's output."""


@quick_init
@dataclass(frozen=True, slots=True)
class Decision:
    """Which condition routed after a task run, what it tested and where it went."""

    condition: str
    """The deciding condition's name (of a chain, the first that held, else the last)."""
    condition_index: int
    """Its index in `Flow.conditions`."""
    source_task: str
    """The task whose run was tested."""
    expected_outcome: str
    """The outcome it tested for; empty when it tested an expression."""
    expression: str
    """The expression it tested; empty when it tested an outcome."""
    actual_outcome: TaskOutcome
    """The outcome the run had."""
    value: bool
    """What the deciding test produced."""
    branch: Branch
    """Which target was taken."""
    next_task: str
    """The task that runs next, or `end`."""
    links_tested: int
    """How many links of the chain were tested, the deciding one included."""


@dataclass(frozen=True, slots=True)
class TaskStub:
    """A result to use instead of running a task (what-if runs)."""

    outcome: TaskOutcome | None
    """The outcome to report; None is invalid (rejected by validation)."""
    output: Mapping[str, Any] = field(default_factory=dict)
    """The output to report."""
    error: str = ""
    """The error of a stubbed failure."""


@quick_init
@dataclass(frozen=True, slots=True)
class TaskResult:
    """What one run of one task produced."""

    task: str
    """The task's name."""
    outcome: TaskOutcome
    """Success or failure."""
    step: int
    """The position of this run among the execution's task runs, from 1."""
    started_at: datetime
    """When the run started (UTC)."""
    duration: timedelta
    """How long it ran."""
    output: Mapping[str, Any] = field(default_factory=dict)
    """What the task produced (JSON-like values)."""
    error: str = ""
    """Why the task failed; empty on success."""
    error_type: str = ""
    """The kind of error (`TaskTimeout`, an exception class name, ...); empty on success."""
    attempts: int = 1
    """How many attempts the run took."""
    stubbed: bool = False
    """True when the result came from a stub, not from running the task."""
    inputs: Mapping[str, Any] = field(default_factory=dict)
    """What the task's input mapping produced for this run."""
    decision: Decision | None = None
    """The routing decision taken after this run, when a condition took it."""


@dataclass(frozen=True, slots=True)
class TimeLimit:
    """A bound on how long an execution may run, and where it comes from."""

    name: str
    """`deadline` (the caller's gRPC deadline), `flow.timeout` or `max_run_time`."""
    seconds: float
    """Its length, counted from the start of the execution."""


@dataclass(frozen=True, slots=True)
class ExecutionSummary:
    """How an execution ended: what `Execute` returns."""

    execution_id: str
    """The server-assigned identifier of the execution."""
    flow_id: str
    """The `id` of the flow that ran."""
    status: ExecutionStatus
    """How it ended."""
    executed_tasks: tuple[str, ...]
    """Every task run, in order, repeats included."""
    task_results: tuple[TaskResult, ...]
    """One result per task run, in order."""
    started_at: datetime
    """When the execution started (UTC)."""
    duration: timedelta
    """How long it took."""
    failed_task: str = ""
    """The task whose failure stopped the flow, if any."""
    error: str = ""
    """Why the flow did not complete; empty when it completed."""
    time_limit: TimeLimit | None = None
    """The time limit that ended the execution, when its status is TIMED_OUT."""
    output: Any = None
    """The flow's output (JSON data): `Flow.output`'s value, else the last task's output."""
    error_type: str = ""
    """Why the flow did not complete, for programs: the failed task's error type, or
    `StepLimitReached`, `ResultsTooLarge`, `ExpressionBudgetSpent`, `ExpressionError`,
    `DeadlineExceeded`; empty when it completed."""
