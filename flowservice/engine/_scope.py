"""The data expressions see, and what evaluating them may cost one execution.

`Scope` keeps the variables CEL expressions read (`input`, `tasks`, `result`)
up to date as tasks finish, so nothing is rebuilt per evaluation. Every
evaluation of an execution goes through it, so it also bounds their total
CPU time: the CEL runtime bounds one evaluation (its iteration budget), but a
loop may evaluate a costly expression thousands of times.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from flowservice.expressions import CompiledExpression, ExpressionError
from flowservice.models import TaskOutcome

__all__ = ["ExpressionBudgetSpent", "Scope"]

_T = TypeVar("_T")


class ExpressionBudgetSpent(ExpressionError):
    """The execution's expressions took more time, together, than `max_expression_seconds`."""

    error_type = "ExpressionBudgetSpent"

    def __init__(self, spent: float, budget: float) -> None:
        super().__init__(
            f"expressions took {spent:.3g} s of evaluation in this execution, above the limit "
            f"of {budget:g} s (max_expression_seconds)"
        )


class Scope:
    """The variables of the expressions of one execution, and the time they took."""

    __slots__ = ("_budget", "_input", "_spent", "_tasks")

    def __init__(self, flow_input: Mapping[str, Any], budget: float) -> None:
        self._input = flow_input
        self._tasks: dict[str, dict[str, Any]] = {}
        self._budget = budget
        self._spent = 0.0

    def record(
        self,
        task: str,
        outcome: TaskOutcome,
        output: Mapping[str, Any],
        attempts: int,
        error: str,
    ) -> None:
        """Makes this the latest run of `task` (before its result is built: conditions
        read it to decide what the result records)."""
        self._tasks[task] = {
            "name": task,
            "outcome": outcome.value,
            "output": output,
            "attempts": attempts,
            "error": error,
        }

    def variables(self, last: str | None) -> dict[str, Any]:
        """What an expression sees, with task `last`'s latest run as `result` (None: none yet)."""
        return {
            "input": self._input,
            "tasks": self._tasks,
            "result": self._tasks[last] if last is not None else {},
        }

    def evaluate(self, expression: CompiledExpression, variables: Mapping[str, Any]) -> Any:
        """`expression`'s value; `ExpressionBudgetSpent` once the execution's budget is spent."""
        return self._timed(expression.evaluate, variables)

    def evaluate_bool(self, expression: CompiledExpression, variables: Mapping[str, Any]) -> bool:
        """`expression`'s value, which must be a bool (see `CompiledExpression.evaluate_bool`)."""
        return self._timed(expression.evaluate_bool, variables)

    def _timed(
        self, evaluate: Callable[[Mapping[str, Any]], _T], variables: Mapping[str, Any]
    ) -> _T:
        # CPU time of this thread, not wall time: on a loaded machine a wall
        # clock would charge an execution for other processes' work and fail
        # it at random. It costs about 0.8 us a reading against 0.14 us for
        # perf_counter, paid only by flows that use expressions.
        started = time.thread_time()
        try:
            return evaluate(variables)
        finally:
            # A failed evaluation took time too; past the budget, the budget is the error.
            self._spent += time.thread_time() - started
            if self._spent > self._budget:
                raise ExpressionBudgetSpent(self._spent, self._budget)
