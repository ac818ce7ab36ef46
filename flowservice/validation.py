"""The checks a flow passes before any of its tasks runs.

`validate_flow` walks the whole definition once and reports every problem it
finds, each as a `Violation` with the request field path (`flow.tasks[2].type`)
and an UPPER_SNAKE_CASE reason, so a caller can fix them all in one go.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from datetime import timedelta

from flowservice.errors import InvalidFlowError, Violation
from flowservice.limits import Limits
from flowservice.models import END, Flow, RetryPolicy

__all__ = ["OUTCOMES", "check_flow", "validate_flow"]

OUTCOMES = ("success", "failure")
"""The values a condition's `outcome` may take."""


def check_flow(flow: Flow, task_types: Collection[str], limits: Limits) -> None:
    """Raises `InvalidFlowError` with every violation when `flow` is invalid."""
    violations = tuple(validate_flow(flow, task_types, limits))
    if violations:
        raise InvalidFlowError(violations)


def validate_flow(flow: Flow, task_types: Collection[str], limits: Limits) -> Iterator[Violation]:
    """Yields every problem with `flow`, in field order; nothing when it is valid."""
    yield from _names(limits, ("flow.id", flow.id), ("flow.name", flow.name))
    task_names: dict[str, int] = {}
    if not flow.tasks:
        yield Violation("flow.tasks", "a flow needs at least one task", "NO_TASKS")
    elif len(flow.tasks) > limits.max_tasks:
        yield _too_many("flow.tasks", len(flow.tasks), "tasks", "max_tasks", limits.max_tasks)
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
        yield from _names(limits, (f"{path}.name", task.name), (f"{path}.type", task.type))
        if task.type not in task_types and len(task.type) <= limits.max_name_length:
            yield Violation(
                f"{path}.type",
                f"unknown task type {task.type!r}; "
                f"registered types: {', '.join(sorted(task_types))}",
                "UNKNOWN_TASK_TYPE",
            )
        yield from _positive(f"{path}.timeout", task.timeout)
        yield from _retry(f"{path}.retry", task.retry, limits)

    if not flow.start_task:
        yield Violation("flow.start_task", "start_task is required", "MISSING_START_TASK")
    elif flow.start_task not in task_names:
        yield Violation(
            "flow.start_task",
            f"start_task {flow.start_task!r} is not the name of a task in flow.tasks",
            "UNKNOWN_START_TASK",
        )

    if len(flow.conditions) > limits.max_conditions:
        yield _too_many(
            "flow.conditions",
            len(flow.conditions),
            "conditions",
            "max_conditions",
            limits.max_conditions,
        )
    sources: dict[str, int] = {}
    for index, condition in enumerate(flow.conditions):
        path = f"flow.conditions[{index}]"
        source = condition.source_task
        yield from _names(limits, (f"{path}.name", condition.name))
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
            f"{limits.max_steps_ceiling} (max_steps_ceiling)",
            "MAX_STEPS_TOO_LARGE",
            limit=("max_steps_ceiling", limits.max_steps_ceiling),
        )
    yield from _positive("flow.timeout", flow.timeout)


def _names(limits: Limits, *fields: tuple[str, str]) -> Iterator[Violation]:
    for path, value in fields:
        if len(value) > limits.max_name_length:
            yield Violation(
                path,
                f"{len(value)} characters, above the limit of {limits.max_name_length} "
                "(max_name_length)",
                "NAME_TOO_LONG",
                limit=("max_name_length", limits.max_name_length),
            )


def _too_many(path: str, count: int, what: str, limit: str, value: int) -> Violation:
    return Violation(
        path,
        f"{count} {what}, above the limit of {value} ({limit})",
        f"TOO_MANY_{what.upper()}",
        limit=(limit, value),
    )


def _positive(path: str, duration: timedelta | None) -> Iterator[Violation]:
    if duration is not None and duration <= timedelta(0):
        yield Violation(path, f"must be positive, got {duration}", "INVALID_DURATION")


def _retry(path: str, retry: RetryPolicy, limits: Limits) -> Iterator[Violation]:
    if retry.max_attempts < 1:
        yield Violation(
            f"{path}.max_attempts",
            f"max_attempts must not be negative, got {retry.max_attempts}",
            "INVALID_MAX_ATTEMPTS",
        )
    elif retry.max_attempts > limits.max_attempts:
        yield Violation(
            f"{path}.max_attempts",
            f"max_attempts {retry.max_attempts} is above the limit of {limits.max_attempts} "
            "(max_attempts)",
            "TOO_MANY_ATTEMPTS",
            limit=("max_attempts", limits.max_attempts),
        )
    yield from _positive(f"{path}.initial_interval", retry.initial_interval)
    if retry.backoff_coefficient < 1:
        yield Violation(
            f"{path}.backoff_coefficient",
            f"backoff_coefficient must be at least 1, got {retry.backoff_coefficient}",
            "INVALID_BACKOFF_COEFFICIENT",
        )
    if retry.maximum_interval is not None and retry.maximum_interval < retry.initial_interval:
        yield Violation(
            f"{path}.maximum_interval",
            f"maximum_interval {retry.maximum_interval} is shorter than initial_interval "
            f"{retry.initial_interval}",
            "INVALID_DURATION",
        )
