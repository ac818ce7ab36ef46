"""The checks a flow passes before any of its tasks runs.

`validate` walks the whole definition once, compiles every expression, and
reports every problem it finds, each as a `Violation` with the request field
path (`flow.conditions[2].expression`) and an UPPER_SNAKE_CASE reason, so a
caller can fix them all in one go. It only reports: turning a valid flow
into what the engine runs is `_plan.compile_flow`'s job, which reuses the
expressions compiled here (compiling an expression is how it is checked).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from flowservice.engine.routing import stops
from flowservice.errors import Violation
from flowservice.expressions import CompiledExpression, compile_expression
from flowservice.limits import Limits
from flowservice.models import END, NO_RETRY, Condition, Flow, RetryPolicy, Task, TaskStub
from flowservice.tasks import TaskRegistry

_ParamCheck = Callable[[Mapping[str, Any]], Iterable[Violation]]
"""A task type's `check_params`."""

__all__ = ["Validation", "validate"]

_OUTCOMES = ("success", "failure")
"""The values a condition's `outcome` may take."""


@dataclass(frozen=True, slots=True)
class Validation:
    """What `validate` found: every violation, and the expressions it compiled to check them."""

    violations: tuple[Violation, ...]
    """Every problem, in field order; empty for a valid flow."""
    expressions: Mapping[str, CompiledExpression]
    """Every expression that compiled, by its text: compiling is the check, so the
    compilation of the plan reuses them instead of compiling twice."""


def validate(
    flow: Flow,
    task_types: Collection[str],
    limits: Limits,
    stubs: Mapping[str, TaskStub] | None = None,
) -> Validation:
    """Checks `flow` (and any what-if `stubs`), reporting every problem found."""
    checker = _Checker(flow, task_types, limits)
    violations = [*checker.violations(), *_stub_violations(flow, stubs or {})]
    return Validation(tuple(violations), checker.expressions)


@dataclass
class _Checker:
    flow: Flow
    task_types: Collection[str]
    limits: Limits
    task_names: dict[str, int] = field(default_factory=dict)
    expressions: dict[str, CompiledExpression] = field(default_factory=dict)

    def violations(self) -> Iterator[Violation]:
        flow, limits = self.flow, self.limits
        if max(len(flow.id), len(flow.name)) > limits.max_name_length:
            yield from self._names(("flow.id", flow.id), ("flow.name", flow.name))
        yield from self._tasks()
        if not flow.start_task:
            yield Violation("flow.start_task", "start_task is required", "MISSING_START_TASK")
        elif flow.start_task not in self.task_names:
            yield Violation(
                "flow.start_task",
                f"start_task {flow.start_task!r} is not the name of a task in flow.tasks",
                "UNKNOWN_START_TASK",
            )
        yield from self._conditions()
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
        if flow.output:
            yield from self._compile("flow.output", flow.output, needs_bool=False)

    def _tasks(self) -> Iterator[Violation]:
        flow, limits = self.flow, self.limits
        if not flow.tasks:
            yield Violation("flow.tasks", "a flow needs at least one task", "NO_TASKS")
        elif len(flow.tasks) > limits.max_tasks:
            yield _too_many("flow.tasks", len(flow.tasks), "tasks", "max_tasks", limits.max_tasks)
        task_names, limit = self.task_names, limits.max_name_length
        param_checks = self._param_checks()
        for index, task in enumerate(flow.tasks):
            # The common case (a new short name, a known type, no timeout, retry or
            # mapping) costs a few tests and no path string: this loop runs once
            # per task of every request.
            name = task.name
            if (
                name not in task_names
                and name
                and name != END
                and max(len(name), len(task.type)) <= limit
                and task.type in self.task_types
                and task.timeout is None
                and task.retry is NO_RETRY
                and not task.input_mapping
            ):
                task_names[name] = index
            else:
                yield from self._task(f"flow.tasks[{index}]", index, task)
            check = param_checks.get(task.type)
            if check is not None:
                yield from _param_violations(f"flow.tasks[{index}]", task, check)

    def _param_checks(self) -> dict[str, _ParamCheck]:
        """The `check_params` of each task type the flow uses that has one (from a registry)."""
        registry = self.task_types
        if not isinstance(registry, TaskRegistry):
            return {}
        checks: dict[str, _ParamCheck] = {}
        for task_type in {task.type for task in self.flow.tasks}:
            registered = registry.get(task_type)
            if registered is not None and registered.check_params is not None:
                checks[task_type] = registered.check_params
        return checks

    def _task(self, path: str, index: int, task: Task) -> Iterator[Violation]:
        """Every check of one task but its params'."""
        limits = self.limits
        if not task.name:
            yield Violation(f"{path}.name", "a task needs a name", "MISSING_TASK_NAME")
        elif task.name == END:
            yield Violation(
                f"{path}.name",
                f"{END!r} is reserved: it is the target that stops a flow",
                "RESERVED_TASK_NAME",
            )
        elif task.name in self.task_names:
            yield Violation(
                f"{path}.name",
                f"task name {task.name!r} is already used by "
                f"flow.tasks[{self.task_names[task.name]}]",
                "DUPLICATE_TASK_NAME",
            )
        else:
            self.task_names[task.name] = index
        if max(len(task.name), len(task.type)) > limits.max_name_length:
            yield from self._names((f"{path}.name", task.name), (f"{path}.type", task.type))
        if task.type not in self.task_types and len(task.type) <= limits.max_name_length:
            yield Violation(
                f"{path}.type",
                f"unknown task type {task.type!r}; "
                f"registered types: {', '.join(sorted(self.task_types))}",
                "UNKNOWN_TASK_TYPE",
            )
        if task.timeout is not None:
            yield from _positive(f"{path}.timeout", task.timeout)
        if task.retry is not NO_RETRY:
            yield from _retry(f"{path}.retry", task.retry, limits)
        for name, source in task.input_mapping.items():
            mapping_path = f'{path}.input_mapping["{name}"]'
            if not name:
                yield Violation(mapping_path, "a mapped param needs a name", "MISSING_NAME")
            yield from self._compile(mapping_path, source, needs_bool=False)

    def _conditions(self) -> Iterator[Violation]:
        limits = self.limits
        conditions = self.flow.conditions
        if len(conditions) > limits.max_conditions:
            yield _too_many(
                "flow.conditions",
                len(conditions),
                "conditions",
                "max_conditions",
                limits.max_conditions,
            )
        known, limit = self.task_names, limits.max_name_length
        last_of: dict[str, int] = {}  # source task -> index of its last condition
        for index, condition in enumerate(conditions):
            last_of[condition.source_task] = index
            # The common case first (an outcome test between known tasks), for
            # the same reason as the tasks'.
            success, failure = condition.target_task_success, condition.target_task_failure
            if (
                condition.source_task in known
                and condition.outcome in _OUTCOMES
                and not condition.expression
                and len(condition.name) <= limit
                and (success in known or stops(success))
                and (failure in known or stops(failure))
            ):
                continue
            yield from self._condition(f"flow.conditions[{index}]", condition)
        # Of the conditions of one source task (a chain, `routing.chains_of`),
        # only the last may set a failure target.
        for index, condition in enumerate(conditions):
            last = last_of[condition.source_task]
            if condition.target_task_failure and index != last:
                yield Violation(
                    f"flow.conditions[{index}].target_task_failure",
                    f"only the last condition on task {condition.source_task!r} "
                    f"(flow.conditions[{last}]) may set target_task_failure: an earlier "
                    "link that does not hold passes to the next",
                    "FAILURE_TARGET_NOT_LAST",
                )

    def _condition(self, path: str, condition: Condition) -> Iterator[Violation]:
        source = condition.source_task
        if len(condition.name) > self.limits.max_name_length:
            yield from self._names((f"{path}.name", condition.name))
        if not source:
            yield Violation(f"{path}.source_task", "source_task is required", "MISSING_SOURCE_TASK")
        elif source not in self.task_names:
            yield Violation(
                f"{path}.source_task",
                f"source_task {source!r} is not the name of a task in flow.tasks",
                "UNKNOWN_SOURCE_TASK",
            )
        if condition.expression and condition.outcome:
            yield Violation(
                path,
                "a condition tests either an outcome or an expression, not both",
                "AMBIGUOUS_TEST",
            )
        elif condition.expression:
            yield from self._compile(f"{path}.expression", condition.expression)
        elif condition.outcome not in _OUTCOMES:
            yield Violation(
                f"{path}.outcome",
                f"outcome must be 'success' or 'failure', got {condition.outcome!r}",
                "INVALID_OUTCOME",
            )
        # A quick test first: this runs once per condition of every request,
        # and the detailed check builds paths and tuples.
        known = self.task_names
        success, failure = condition.target_task_success, condition.target_task_failure
        if (not stops(success) and success not in known) or (
            not stops(failure) and failure not in known
        ):
            yield from _unknown_targets(path, success, failure, known)

    def _compile(
        self, path: str, source: str, *, needs_bool: bool = True
    ) -> Generator[Violation, None, CompiledExpression | None]:
        if len(source) > self.limits.max_expression_length:
            yield Violation(
                path,
                f"the expression is {len(source)} characters, above the limit of "
                f"{self.limits.max_expression_length} (max_expression_length)",
                "EXPRESSION_TOO_LONG",
                limit=("max_expression_length", self.limits.max_expression_length),
            )
            return None
        compiled = compile_expression(source)
        if isinstance(compiled, list):
            for problem in compiled:
                yield Violation(path, f"invalid expression: {problem}", "INVALID_EXPRESSION")
            return None
        if needs_bool and not compiled.returns_bool:
            yield Violation(
                path,
                f"the expression must produce a bool, but it produces {compiled.return_type}",
                "EXPRESSION_NOT_BOOL",
            )
            return None
        self.expressions[source] = compiled
        return compiled

    def _names(self, *fields: tuple[str, str]) -> Iterator[Violation]:
        limit = self.limits.max_name_length
        for path, value in fields:
            if len(value) > limit:
                yield Violation(
                    path,
                    f"{len(value)} characters, above the limit of {limit} (max_name_length)",
                    "NAME_TOO_LONG",
                    limit=("max_name_length", limit),
                )


def _param_violations(path: str, task: Task, check: _ParamCheck) -> Iterator[Violation]:
    """What the task type's own `check_params` finds in the literal params.

    Params an input mapping replaces are left out: their value is only known
    at run time, when the task checks it itself.
    """
    literal = {k: v for k, v in task.params.items() if k not in task.input_mapping}
    for violation in check(literal):
        yield Violation(
            f"{path}.params.{violation.field}",
            violation.description,
            violation.reason,
            violation.limit,
        )


def _unknown_targets(
    path: str, success: str, failure: str, known: Collection[str]
) -> Iterator[Violation]:
    for field_name, target in (("target_task_success", success), ("target_task_failure", failure)):
        if not stops(target) and target not in known:
            yield Violation(
                f"{path}.{field_name}",
                f"{field_name} {target!r} is not the name of a task in flow.tasks "
                f"(use {END!r} to stop the flow)",
                "UNKNOWN_TARGET_TASK",
            )


def _stub_violations(flow: Flow, stubs: Mapping[str, TaskStub]) -> Iterator[Violation]:
    names = {task.name for task in flow.tasks}
    for name, stub in stubs.items():
        path = f'stubs["{name}"]'
        if name not in names:
            yield Violation(
                path, f"{name!r} is not the name of a task in flow.tasks", "UNKNOWN_TASK"
            )
        if stub.outcome is None:
            yield Violation(
                f"{path}.outcome",
                "outcome is required: TASK_OUTCOME_SUCCESS or TASK_OUTCOME_FAILURE",
                "MISSING_OUTCOME",
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
        yield Violation(
            path, f"must be positive, got {duration.total_seconds():g}s", "INVALID_DURATION"
        )


def _retry(path: str, retry: RetryPolicy, limits: Limits) -> Iterator[Violation]:
    if retry.max_attempts < 1:
        yield Violation(
            f"{path}.max_attempts",
            f"max_attempts must be at least 1, got {retry.max_attempts}",
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
            f"maximum_interval {retry.maximum_interval.total_seconds():g}s is shorter than "
            f"initial_interval {retry.initial_interval.total_seconds():g}s",
            "INVALID_DURATION",
        )
