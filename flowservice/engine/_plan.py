"""Compiling a valid flow into the plan the engine runs.

Validation says what is wrong with a flow; this turns a flow that passed it
into everything an execution looks up per step, computed once so that each
step is O(1): tasks by name, their implementations, the condition chains
with their compiled expressions, the input mappings and the output
expression. A plan depends only on the flow, the registry and the limits;
what one request adds (its input, stubs, deadline) belongs to the execution.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from flowservice.engine.routing import Link, chains_of
from flowservice.expressions import CompiledExpression
from flowservice.limits import Limits
from flowservice.models import Flow, Task
from flowservice.tasks import RegisteredTask, TaskRegistry

__all__ = ["Plan", "compile_flow"]


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
    chains: Mapping[str, tuple[Link, ...]]
    """The conditions of each source task, in declared (testing) order."""
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
    chains = {
        source: tuple(
            Link(
                index,
                condition,
                expressions[condition.expression] if condition.expression else None,
            )
            for index, condition in chain
        )
        for source, chain in chains_of(flow.conditions).items()
    }
    input_mappings = {
        task.name: tuple((name, expressions[source]) for name, source in task.input_mapping.items())
        for task in flow.tasks
        if task.input_mapping
    }
    output = expressions[flow.output] if flow.output else None
    registered: dict[str, RegisteredTask] = {}
    for task in flow.tasks:
        implementation = registry.get(task.type)
        assert implementation is not None  # validation rejected unknown types
        registered[task.type] = implementation
    names = tuple(task.name for task in flow.tasks)
    return Plan(
        flow=flow,
        tasks={task.name: task for task in flow.tasks},
        positions={name: position for position, name in enumerate(names)},
        names=names,
        registered=registered,
        chains=chains,
        input_mappings=input_mappings,
        output=output,
        max_steps=flow.max_steps or limits.default_max_steps,
        uses_expressions=bool(expressions),
    )
