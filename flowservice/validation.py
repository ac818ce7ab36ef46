"""The checks a flow passes before any of its tasks runs.

`validate_flow` walks the whole definition once and reports every problem it
finds, each as a `Violation` with the request field path (`flow.tasks[2].type`)
and an UPPER_SNAKE_CASE reason, so a caller can fix them all in one go.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass

from flowservice.errors import InvalidFlowError, Violation
from flowservice.models import END, Flow

__all__ = ["OUTCOMES", "FlowLimits", "check_flow", "validate_flow"]

OUTCOMES = ("success", "failure")
"""The values a condition's `outcome` may take."""


@dataclass(frozen=True, slots=True)
class FlowLimits:
    """Bounds a flow definition must respect."""

    max_steps_ceiling: int = 10_000
    """The largest `max_steps` a flow may ask for."""


def check_flow(flow: Flow, task_types: Collection[str], limits: FlowLimits) -> None:
    """Raises `InvalidFlowError` with every violation when `flow` is invalid."""
    violations = tuple(validate_flow(flow, task_types, limits))
    if violations:
        raise InvalidFlowError(violations)


def validate_flow(
    flow: Flow, task_types: Collection[str], limits: FlowLimits
) -> Iterator[Violation]:
    """Yields every problem with `flow`, in field order; nothing when it is valid."""
    task_names: dict[str, int] = {}
    if not flow.tasks:
        yield Violation("flow.tasks", "a flow needs at least one task", "NO_TASKS")
    for index, task in enumerate(flow.tasks):
        path = f"flow.tasks[{index}]"
        if not task.name:
            yield Violation(f"{path}.name", "a task needs a name", "MISSING_TASK_NAME")
        elif task.name == END:
            yield Violation(
                f"{path}.name",
                f"{END!r} is reserved: it is the target that stops a flow",
                "RESERVED_TASK_NAME",
            )
        elif task.name in task_names:
            yield Violation(
                f"{path}.name",
                f"task name {task.name!r} is already used by flow.tasks[{task_names[task.name]}]",
                "DUPLICATE_TASK_NAME",
            )
        else:
            task_names[task.name] = index
        if task.type not in task_types:
            yield Violation(
                f"{path}.type",
                f"unknown task type {task.type!r}; "
                f"registered types: {', '.join(sorted(task_types))}",
                "UNKNOWN_TASK_TYPE",
            )

    if not flow.start_task:
        yield Violation("flow.start_task", "start_task is required", "MISSING_START_TASK")
    elif flow.start_task not in task_names:
        yield Violation(
            "flow.start_task",
            f"start_task {flow.start_task!r} is not the name of a task in flow.tasks",
            "UNKNOWN_START_TASK",
        )

    sources: dict[str, int] = {}
    for index, condition in enumerate(flow.conditions):
        path = f"flow.conditions[{index}]"
        source = condition.source_task
        if not source:
            yield Violation(f"{path}.source_task", "source_task is required", "MISSING_SOURCE_TASK")
        elif source not in task_names:
            yield Violation(
                f"{path}.source_task",
                f"source_task {source!r} is not the name of a task in flow.tasks",
                "UNKNOWN_SOURCE_TASK",
            )
        elif source in sources:
            yield Violation(
                f"{path}.source_task",
                f"task {source!r} already has a condition, flow.conditions[{sources[source]}]; "
                "a task may have at most one",
                "DUPLICATE_CONDITION",
            )
        else:
            sources[source] = index
        if condition.outcome not in OUTCOMES:
            yield Violation(
                f"{path}.outcome",
                f"outcome must be 'success' or 'failure', got {condition.outcome!r}",
                "INVALID_OUTCOME",
            )
        for field_name, target in (
            ("target_task_success", condition.target_task_success),
            ("target_task_failure", condition.target_task_failure),
        ):
            if target and target != END and target not in task_names:
                yield Violation(
                    f"{path}.{field_name}",
                    f"{field_name} {target!r} is not the name of a task in flow.tasks "
                    f"(use {END!r} to stop the flow)",
                    "UNKNOWN_TARGET_TASK",
                )

    if flow.max_steps < 0:
        yield Violation(
            "flow.max_steps",
            f"max_steps must not be negative, got {flow.max_steps}",
            "INVALID_MAX_STEPS",
        )
    elif flow.max_steps > limits.max_steps_ceiling:
        yield Violation(
            "flow.max_steps",
            f"max_steps {flow.max_steps} is above this server's ceiling of "
            f"{limits.max_steps_ceiling}",
            "MAX_STEPS_TOO_LARGE",
        )
