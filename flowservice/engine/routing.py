"""What runs after a task: the routing rules of `flow.proto`, written once.

* A task with conditions: its conditions form a chain, tested in declared
  order; the first whose test holds routes to its `target_task_success`;
  when none holds, the last one's `target_task_failure` is taken.
* A task without conditions: success goes on to the next task in list
  order (after the last, the flow ends); failure stops the flow (fail-fast).
* A target that is empty or `end` stops the flow.

The engine (`decide`, `unrouted_next`), Validate's warnings (`_analysis`)
and `flowctl graph` (on request messages, possibly invalid) all ask this
module, so the rules cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from flowservice._quick_init import quick_init, quick_new
from flowservice.engine._scope import ExpressionBudgetSpent, Scope
from flowservice.expressions import CompiledExpression, ExpressionError
from flowservice.models import END, Branch, Condition, Decision, TaskOutcome

__all__ = [
    "Link",
    "RoutedCondition",
    "chains_of",
    "decide",
    "one_link_decision",
    "stops",
    "taken_target",
    "unrouted_next",
    "unrouted_targets",
]


class RoutedCondition(Protocol):
    """What routing reads of a condition: a domain `Condition` or a request message's."""

    @property
    def source_task(self) -> str: ...
    @property
    def target_task_success(self) -> str: ...
    @property
    def target_task_failure(self) -> str: ...


_C = TypeVar("_C", bound=RoutedCondition)


def stops(target: str) -> bool:
    """Whether `target` ends the flow: it is empty or `end`."""
    return target == "" or target == END


def taken_target(condition: RoutedCondition, held: bool) -> str:
    """The target a link of a chain routes to when its test `held` (or, last, did not).

    An empty target is spelled `END`, as it is reported in a `Decision`.
    """
    target = condition.target_task_success if held else condition.target_task_failure
    return target or END


def chains_of(conditions: Iterable[_C]) -> dict[str, list[tuple[int, _C]]]:
    """The conditions of each source task with their indexes, in declared (testing) order."""
    chains: dict[str, list[tuple[int, _C]]] = {}
    for index, condition in enumerate(conditions):
        chain = chains.get(condition.source_task)
        if chain is None:
            chains[condition.source_task] = [(index, condition)]
        else:
            chain.append((index, condition))
    return chains


def unrouted_next(names: Sequence[str], position: int, succeeded: bool) -> str | None:
    """The task after a run of the task at `position` that no condition routes, or None (stop)."""
    if not succeeded or position + 1 >= len(names):
        return None
    return names[position + 1]


def unrouted_targets(names: Sequence[str], position: int) -> tuple[str, str]:
    """Where a task without conditions goes on success and on failure, `END` for stops."""
    return unrouted_next(names, position, succeeded=True) or END, END


@quick_init
@dataclass(frozen=True, slots=True)
class Link:
    """One condition of a chain, with its compiled expression when it tests one.

    (What the static analysis reads; a plan keeps only its chains' indexes.)
    """

    index: int
    """The condition's index in `Flow.conditions`."""
    condition: Condition
    """The condition."""
    expression: CompiledExpression | None
    """The compiled `condition.expression`, or None when it tests `outcome`."""


def decide(
    chain: Sequence[int],
    conditions: Sequence[Condition],
    expressions: Mapping[str, CompiledExpression],
    task: str,
    outcome: TaskOutcome,
    scope: Scope | None,
) -> Decision:
    """The decision a chain takes after a run of `task` ended in `outcome`.

    `chain` holds the indexes of its conditions in `conditions` (the flow's),
    whose `expressions` are compiled; `scope` already holds that run. Raises
    `ExpressionError` when a test fails to evaluate.
    """
    variables: dict[str, Any] | None = None  # built once, for the first expression
    actual = _OUTCOME_VALUES[outcome]  # (`outcome.value` is a property, slow on Python 3.11)
    links = len(chain)
    for tested, index in enumerate(chain, start=1):
        condition = conditions[index]
        if condition.expression:
            assert scope is not None  # the plan keeps a scope when expressions exist
            if variables is None:
                variables = scope.variables(task)
            compiled = expressions[condition.expression]
            held = _holds(index, compiled, task, scope, variables)
        else:
            held = actual == condition.outcome
        if held or tested == links:
            return _decision(condition, index, task, outcome, held, tested)
    raise AssertionError("a chain has at least one link")


def one_link_decision(
    condition: Condition, index: int, task: str, outcome: TaskOutcome
) -> Decision:
    """The decision of a chain whose one link, `condition` (at `index`), tests an
    outcome, after a run of `task` that ended in `outcome`.

    What `decide` takes for such a chain, minus its loop: a plan makes one for
    each task of a long chain when it is compiled (0.8 us a task instead of
    1.25, measured on a 10k-task chain).
    """
    return _decision(
        condition, index, task, outcome, _OUTCOME_VALUES[outcome] == condition.outcome, 1
    )


_OUTCOME_VALUES = {outcome: outcome.value for outcome in TaskOutcome}

_new_decision = quick_new(Decision)


def _decision(
    condition: Condition, index: int, task: str, outcome: TaskOutcome, held: bool, tested: int
) -> Decision:
    """The decision the link `condition` (at `index`, the `tested`th of its chain) takes."""
    # By position: keywords double the cost of building it (0.37 -> 0.75 us).
    return _new_decision(
        condition.name,  # condition
        index,  # condition_index
        task,  # source_task
        condition.outcome,  # expected_outcome
        condition.expression,  # expression
        outcome,  # actual_outcome
        held,  # value
        Branch.SUCCESS if held else Branch.FAILURE,  # branch
        taken_target(condition, held),  # next_task
        tested,  # links_tested
    )


def _holds(
    index: int,
    expression: CompiledExpression,
    task: str,
    scope: Scope,
    variables: dict[str, Any],
) -> bool:
    try:
        return scope.evaluate_bool(expression, variables)
    except ExpressionBudgetSpent:
        raise  # the execution's budget, not this condition's fault
    except ExpressionError as exc:
        raise ExpressionError(
            f"condition flow.conditions[{index}] on task {task!r} could not be evaluated: {exc}"
        ) from None
