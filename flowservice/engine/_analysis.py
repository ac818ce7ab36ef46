"""Warnings about a valid flow: parts that can never run or never end.

These never block a run (the step limit stops a loop, an unreachable task is
harmless); `Validate` reports them so a flow's author can fix them before it
goes live.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

from flowservice.engine._plan import Plan
from flowservice.engine.routing import Link, taken_target, unrouted_targets
from flowservice.errors import Violation
from flowservice.models import END

__all__ = ["flow_warnings"]


def flow_warnings(plan: Plan) -> list[Violation]:
    """Every warning about `plan`'s flow: tasks first, then conditions, each by index."""
    flow = plan.flow
    # Fates evaluate constant expressions: computed once, used twice.
    fates = {source: _fates(_links(plan, chain)) for source, chain in plan.chains.items()}
    edges = _edges(plan, fates)
    reachable = _reachable(flow.start_task, edges)
    reverse: dict[str, set[str]] = {}
    for source, targets in edges.items():
        for target in targets:
            reverse.setdefault(target, set()).add(source)
    can_end = _reachable(END, reverse)
    # (0, task index) or (1, condition index), then the field: the order a reader fixes them in.
    keyed: list[tuple[tuple[int, int, str], Violation]] = []
    for index, task in enumerate(flow.tasks):
        warning = _task_warning(index, task.name, flow.start_task, reachable, can_end)
        if warning is not None:
            keyed.append(((0, index, warning.field), warning))
    keyed += _task_type_warnings(plan)
    for source, chain_fates in fates.items():
        for index, warning in _chain_warnings(source, chain_fates, source in reachable):
            keyed.append(((1, index, warning.field), warning))
    keyed.sort(key=lambda pair: pair[0])
    return [warning for _, warning in keyed]


def _task_type_warnings(plan: Plan) -> list[tuple[tuple[int, int, str], Violation]]:
    """What each task's implementation warns about it (its `warnings` hook), keyed by task."""
    keyed: list[tuple[tuple[int, int, str], Violation]] = []
    for index, task in enumerate(plan.flow.tasks):
        registered = plan.registered.get(task.type)
        if registered is None or registered.warnings is None:
            continue
        for warning in registered.warnings(task):
            path = f"flow.tasks[{index}].{warning.field}"
            keyed.append(((0, index, path), replace(warning, field=path)))
    return keyed


def _task_warning(
    index: int, name: str, start_task: str, reachable: set[str], can_end: set[str]
) -> Violation | None:
    if name not in reachable:
        return Violation(
            f"flow.tasks[{index}]",
            f"task {name!r} can never run: no path from start_task {start_task!r} reaches it",
            "UNREACHABLE_TASK",
        )
    if name not in can_end:
        return Violation(
            f"flow.tasks[{index}]",
            f"task {name!r} is in a loop with no way out: no path from it reaches the "
            "end, so only the step limit stops the flow (as FAILED)",
            "LOOP_WITHOUT_EXIT",
        )
    return None


@dataclass(frozen=True, slots=True)
class _Fate:
    """What static analysis can tell about one link of a chain."""

    link: Link
    shadowed_by: int | None = None
    """An earlier link (index in flow.conditions) that always decides first."""
    repeats_outcome: bool = False
    """An earlier link tests the same outcome, so this one never holds when tested."""
    never_holds: bool = False
    """Its expression is constant false."""
    always_holds: bool = False
    """Its expression is constant true, or it completes a success/failure pair."""

    @property
    def can_apply(self) -> bool:
        """Whether the chain can ever be decided by this link."""
        return self.shadowed_by is None and not self.repeats_outcome


def _links(plan: Plan, chain: tuple[int, ...]) -> list[Link]:
    """The links of a chain of the plan: its conditions, with their compiled expressions."""
    links = []
    for index in chain:
        condition = plan.flow.conditions[index]
        test = condition.expression
        links.append(Link(index, condition, plan.expressions[test] if test else None))
    return links


def _fates(chain: list[Link]) -> list[_Fate]:
    """Each link's fate, in order; after a link that always holds, the rest are shadowed."""
    fates: list[_Fate] = []
    outcomes_tested: set[str] = set()
    decided_by: int | None = None
    for link in chain:
        if decided_by is not None:
            fates.append(_Fate(link, shadowed_by=decided_by))
            continue
        if link.expression is None:
            outcome = link.condition.outcome
            if outcome in outcomes_tested:
                fates.append(_Fate(link, repeats_outcome=True))
                continue
            outcomes_tested.add(outcome)
            # Once success and failure are both tested, one of them always holds.
            always = len(outcomes_tested) == 2
            fates.append(_Fate(link, always_holds=always))
        else:
            constant = link.expression.constant_value()
            fates.append(_Fate(link, never_holds=constant is False, always_holds=constant is True))
        if fates[-1].always_holds:
            decided_by = link.index
    return fates


def _edges(plan: Plan, fates: dict[str, list[_Fate]]) -> dict[str, set[str]]:
    """Where the flow may go after each task, over every outcome and test value."""
    edges: dict[str, set[str]] = {}
    for position, name in enumerate(plan.names):
        chain_fates = fates.get(name)
        if chain_fates:
            targets = {
                taken_target(fate.link.condition, held=True)
                for fate in chain_fates
                if fate.can_apply and not fate.never_holds
            }
            if not any(fate.always_holds for fate in chain_fates):
                targets.add(taken_target(chain_fates[-1].link.condition, held=False))
        else:
            targets = set(unrouted_targets(plan.names, position))
        edges[name] = targets
    return edges


def _reachable(start: str, edges: dict[str, set[str]]) -> set[str]:
    seen = {start}
    frontier = [start]
    while frontier:
        for target in edges.get(frontier.pop(), ()):
            if target not in seen:
                seen.add(target)
                frontier.append(target)
    return seen


def _chain_warnings(
    source: str, fates: list[_Fate], reachable: bool
) -> Iterator[tuple[int, Violation]]:
    """The warnings about one chain's links, each with its condition's index."""
    for fate in fates:
        warning = _link_warning(source, fate, reachable)
        if warning is not None:
            yield fate.link.index, warning


def _link_warning(source: str, fate: _Fate, reachable: bool) -> Violation | None:
    path = f"flow.conditions[{fate.link.index}]"
    if not reachable:
        return Violation(
            path,
            f"this condition can never apply: its source task {source!r} never runs",
            "CONDITION_NEVER_APPLIES",
        )
    if fate.shadowed_by is not None:
        return Violation(
            path,
            f"this condition can never apply: flow.conditions[{fate.shadowed_by}] before it "
            f"on task {source!r} always decides",
            "CONDITION_NEVER_APPLIES",
        )
    if fate.repeats_outcome:
        return Violation(
            path,
            f"this condition can never apply: an earlier condition on {source!r} "
            f"already tests outcome {fate.link.condition.outcome!r}",
            "CONDITION_NEVER_APPLIES",
        )
    if fate.never_holds:
        return Violation(
            f"{path}.expression",
            "the expression is always false: target_task_success is never taken",
            "CONDITION_NEVER_HOLDS",
        )
    return None
