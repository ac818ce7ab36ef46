"""Deciding what runs after a task, and the data expressions see.

`decide` walks a task's chain of conditions in declared order; `Scope` keeps
the variables CEL expressions read (`input`, `tasks`, `result`) up to date
as tasks finish, so nothing is rebuilt per evaluation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flowservice.engine._validation import Link
from flowservice.expressions import ExpressionError
from flowservice.models import END, Branch, Decision, TaskResult

__all__ = ["Scope", "decide", "route_target"]


class Scope:
    """The variables of the expressions of one execution."""

    __slots__ = ("_input", "_tasks")

    def __init__(self, flow_input: Mapping[str, Any]) -> None:
        self._input = flow_input
        self._tasks: dict[str, dict[str, Any]] = {}

    def record(self, result: TaskResult) -> None:
        """Makes `result` the latest run of its task."""
        self._tasks[result.task] = {
            "name": result.task,
            "outcome": result.outcome.value,
            "output": result.output,
            "attempts": result.attempts,
            "error": result.error,
        }

    def variables(self, result: TaskResult | None) -> dict[str, Any]:
        """What an expression sees, with `result` as the run just finished (or before)."""
        return {
            "input": self._input,
            "tasks": self._tasks,
            "result": self._tasks[result.task] if result is not None else {},
        }


def route_target(target: str) -> str | None:
    """The task a target names, or None when it stops the flow."""
    return None if target in ("", END) else target


def decide(chain: tuple[Link, ...], result: TaskResult, scope: Scope | None) -> Decision:
    """The decision `chain` takes after `result`; `ExpressionError` when a test fails to evaluate.

    The first link whose test holds routes to its `target_task_success`; when
    none holds, the last link's `target_task_failure` is taken.
    """
    variables: dict[str, Any] | None = None  # built once, for the first expression
    for tested, link in enumerate(chain, start=1):
        condition = link.condition
        if link.expression is not None:
            assert scope is not None  # the plan keeps a scope when expressions exist
            if variables is None:
                variables = scope.variables(result)
            try:
                held = link.expression.evaluate_bool(variables)
            except ExpressionError as exc:
                raise ExpressionError(
                    f"condition flow.conditions[{link.index}] on task {result.task!r} "
                    f"could not be evaluated: {exc}"
                ) from None
        else:
            held = result.outcome.value == condition.outcome
        last = tested == len(chain)
        if held or last:
            target = condition.target_task_success if held else condition.target_task_failure
            return Decision(
                condition=condition.name,
                condition_index=link.index,
                source_task=result.task,
                expected_outcome=condition.outcome,
                expression=condition.expression,
                actual_outcome=result.outcome,
                value=held,
                branch=Branch.SUCCESS if held else Branch.FAILURE,
                next_task=target or END,
                links_tested=tested,
            )
    raise AssertionError("a chain has at least one link")
