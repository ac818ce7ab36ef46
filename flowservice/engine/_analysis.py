"""Warnings about a valid flow: parts that can never run or never end.

These never block a run (the step limit stops a loop, an unreachable task is
harmless); `Validate` reports them so a flow's author can fix them before it
goes live.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from flowservice.engine._validation import CheckedFlow, Link
from flowservice.errors import Violation
from flowservice.models import END

__all__ = ["flow_warnings"]


def flow_warnings(checked: CheckedFlow) -> list[Violation]:
    """Every warning about `checked`, in field order."""
    flow = checked.flow
    # Fates evaluate constant expressions: computed once, used twice.
    fates = {source: _fates(chain) for source, chain in checked.chains.items()}
    edges = _edges(checked, fates)
    reachable = _reachable(flow.start_task, edges)
    warnings: list[Violation] = []
    for index, task in enumerate(flow.tasks):
        if task.name not in reachable:
            warnings.append(
                Violation(
                    f"flow.tasks[{index}]",
                    f"task {task.name!r} can never run: no path from start_task "
                    f"{flow.start_task!r} reaches it",
                    "UNREACHABLE_TASK",
                )
            )
    reverse: dict[str, set[str]] = {}
    for source, targets in edges.items():
        for target in targets:
            reverse.setdefault(target, set()).add(source)
    can_end = _reachable(END, reverse)
    trapped = sorted(
        (index, task.name)
        for index, task in enumerate(flow.tasks)
        if task.name in reachable and task.name not in can_end
    )
    for index, name in trapped:
        warnings.append(
            Violation(
                f"flow.tasks[{index}]",
                f"task {name!r} is in a loop with no way out: no path from it reaches the "
                "end, so only the step limit stops the flow (as FAILED)",
                "LOOP_WITHOUT_EXIT",
            )
        )
    for source, chain_fates in fates.items():
        warnings.extend(_chain_warnings(source, chain_fates, source in reachable))
    return sorted(warnings, key=lambda warning: _field_order(warning.field))


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


def _fates(chain: tuple[Link, ...]) -> list[_Fate]:
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


def _edges(checked: CheckedFlow, fates: dict[str, list[_Fate]]) -> dict[str, set[str]]:
    """Where the flow may go after each task, over every outcome and test value."""
    tasks = checked.flow.tasks
    edges: dict[str, set[str]] = {}
    for position, task in enumerate(tasks):
        chain_fates = fates.get(task.name)
        if chain_fates:
            targets = {
                fate.link.condition.target_task_success or END
                for fate in chain_fates
                if fate.can_apply and not fate.never_holds
            }
            if not any(fate.always_holds for fate in chain_fates):
                targets.add(chain_fates[-1].link.condition.target_task_failure or END)
        else:
            # Success goes on in list order (or ends after the last); failure stops.
            following = tasks[position + 1].name if position + 1 < len(tasks) else END
            targets = {following, END}
        edges[task.name] = targets
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


def _chain_warnings(source: str, fates: list[_Fate], reachable: bool) -> Iterator[Violation]:
    for fate in fates:
        path = f"flow.conditions[{fate.link.index}]"
        if not reachable:
            yield Violation(
                path,
                f"this condition can never apply: its source task {source!r} never runs",
                "CONDITION_NEVER_APPLIES",
            )
        elif fate.shadowed_by is not None:
            yield Violation(
                path,
                f"this condition can never apply: flow.conditions[{fate.shadowed_by}] before it "
                f"on task {source!r} always decides",
                "CONDITION_NEVER_APPLIES",
            )
        elif fate.repeats_outcome:
            yield Violation(
                path,
                f"this condition can never apply: an earlier condition on {source!r} "
                f"already tests outcome {fate.link.condition.outcome!r}",
                "CONDITION_NEVER_APPLIES",
            )
        elif fate.never_holds:
            yield Violation(
                f"{path}.expression",
                "the expression is always false: target_task_success is never taken",
                "CONDITION_NEVER_HOLDS",
            )


def _field_order(field: str) -> tuple[int, int, str]:
    """Sorts tasks before conditions, each by index."""
    kind = 0 if field.startswith("flow.tasks") else 1
    index = int(field.split("[", 1)[1].split("]", 1)[0]) if "[" in field else -1
    return (kind, index, field)
