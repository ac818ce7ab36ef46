"""Compiling a valid flow into the plan the engine runs.

Validation says what is wrong with a flow; this turns a flow that passed it
into everything an execution looks up per step, computed once so that each
step is O(1): tasks by name, their implementations, the condition chains
with their compiled expressions, the input mappings and the output
expression. A plan depends only on the flow, the registry and the limits;
what one request adds (its input, stubs, deadline) belongs to the execution.

Because of that, a plan can serve every run of the same flow: `PlanCache`
keeps the plans of recent flows by a key the caller gives, exact and cheap
to compare (the API layer uses the flow message's serialized bytes), so a
flow sent again skips conversion, validation and compilation.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

from flowservice.engine.routing import one_link_decision
from flowservice.expressions import CompiledExpression
from flowservice.limits import Limits
from flowservice.models import Decision, Flow, Task, TaskOutcome
from flowservice.tasks import RegisteredTask, TaskRegistry

__all__ = ["MAX_KEY_BYTES", "Plan", "PlanCache", "compile_flow"]

MAX_KEY_BYTES = 16 * 1024
"""Longest key `PlanCache` keeps a plan for. A plan takes some ten to twenty
times its flow's serialized size in memory (up to five more for its routing
decisions, made when it is compiled), so this bounds the cache at a few hundred KB per entry;
a larger flow spends most of its time running anyway."""


@dataclass(frozen=True, slots=True)
class Plan:
    """A valid flow, ready to run: all the data derived from its definition."""

    flow: Flow
    """The flow as defined."""
    tasks: Mapping[str, Task]
    """Tasks by name."""
    positions: Mapping[str, int]
    """Each task's position in list order (for routing a task without conditions)."""
    names: tuple[str, ...]
    """Task names in list order."""
    registered: Mapping[str, RegisteredTask]
    """The implementation of each task type the flow uses."""
    chains: Mapping[str, tuple[int, ...]]
    """The indexes in `flow.conditions` of the conditions of each source task, in
    declared (testing) order (`routing.chains_of`). Indexes, not objects: a
    tuple of ints is one object that the garbage collector soon stops walking."""
    expressions: Mapping[str, CompiledExpression]
    """Every expression of the flow, compiled, by its text."""
    success_decisions: Mapping[str, Decision]
    """The decision after a successful run of each source task whose chain is one
    outcome test (the common case), by source task: such a chain decides the same
    way after every run, so its decision is made when the plan is compiled, and
    the runs' results share it. Not after a failed run: a failure is rare, and a
    plan compiled for one run (a flow too large to cache) would make a decision
    per task that no run takes (compiling a 10k-task chain: 3.2 -> 1.75 us per
    task). A failed run decides when it fails."""
    input_mappings: Mapping[str, tuple[tuple[str, CompiledExpression], ...]]
    """Each task's compiled input mapping: (param name, expression) pairs."""
    output: CompiledExpression | None
    """The compiled `Flow.output`, or None for the last task's output."""
    max_steps: int
    """Task runs allowed."""
    uses_expressions: bool
    """Whether any expression is evaluated during a run."""


def compile_flow(
    flow: Flow,
    expressions: Mapping[str, CompiledExpression],
    registry: TaskRegistry,
    limits: Limits,
) -> Plan:
    """The plan of `flow`, which passed validation; `expressions` are those it compiled."""
    grouped: dict[str, list[int]] = {}
    for index, condition in enumerate(flow.conditions):
        grouped.setdefault(condition.source_task, []).append(index)
    chains = {source: tuple(indexes) for source, indexes in grouped.items()}
    tasks: dict[str, Task] = {}
    input_mappings: dict[str, tuple[tuple[str, CompiledExpression], ...]] = {}
    for task in flow.tasks:
        tasks[task.name] = task
        if task.input_mapping:
            mapping = task.input_mapping.items()
            input_mappings[task.name] = tuple((name, expressions[test]) for name, test in mapping)
    registered: dict[str, RegisteredTask] = {}
    for task_type in {task.type for task in flow.tasks}:
        implementation = registry.get(task_type)
        assert implementation is not None  # validation rejected unknown types
        registered[task_type] = implementation
    names = tuple(tasks)
    return Plan(
        flow=flow,
        tasks=tasks,
        positions={name: position for position, name in enumerate(names)},
        names=names,
        registered=registered,
        chains=chains,
        expressions=expressions,
        success_decisions=_success_decisions(flow, chains),
        input_mappings=input_mappings,
        output=expressions[flow.output] if flow.output else None,
        max_steps=flow.max_steps or limits.default_max_steps,
        uses_expressions=bool(expressions),
    )


class PlanCache:
    """The plans of the `size` flows used last, by an exact key of each flow (an LRU).

    The key must identify the flow exactly (its serialized bytes, not a
    hash that two flows could share): equal keys get the same plan. Keys
    longer than `MAX_KEY_BYTES` are never kept. `hits` and `misses` count
    the look-ups, for the metrics.
    """

    __slots__ = ("_plans", "_size", "hits", "misses")

    def __init__(self, size: int) -> None:
        self._plans: OrderedDict[bytes, Plan] = OrderedDict()
        self._size = size
        self.hits = 0
        """Look-ups that found a plan."""
        self.misses = 0
        """Look-ups that did not (the flow was compiled, and kept if it was valid)."""

    def __len__(self) -> int:
        return len(self._plans)

    def get(self, key: bytes) -> Plan | None:
        """The plan kept for `key`, now the most recently used; None (a miss) if none is."""
        plan = self._plans.get(key)
        if plan is None:
            self.misses += 1
            return None
        self.hits += 1
        self._plans.move_to_end(key)
        return plan

    def put(self, key: bytes, plan: Plan) -> None:
        """Keeps `plan` for `key`, dropping the least recently used plan past `size`."""
        if len(key) > MAX_KEY_BYTES:
            return
        self._plans[key] = plan
        self._plans.move_to_end(key)
        if len(self._plans) > self._size:
            self._plans.popitem(last=False)


def _success_decisions(flow: Flow, chains: Mapping[str, tuple[int, ...]]) -> dict[str, Decision]:
    """The decisions after a successful run of the chains of one outcome test, by source task."""
    conditions = flow.conditions
    success = TaskOutcome.SUCCESS
    return {
        source: one_link_decision(conditions[chain[0]], chain[0], source, success)
        for source, chain in chains.items()
        if len(chain) == 1 and not conditions[chain[0]].expression
    }
