"""Feeding the compiled core: a plan's tables, and the async wrapper that runs it.

`core_plan` turns the engine's compiled `Plan` into the core's tables, the
way a plan cache would keep them: per task its function, what its context
carries, where each outcome routes and the `decision` field it reports,
encoded once. It refuses what the prototype does not carry (expression
conditions, input mappings, retries, timeouts, sync tasks): see
docs/performance.md, "A compiled core, measured".

`execute` is the whole of a run from Python: one call into the core, which
returns the reply's bytes when every task completed without suspending (the
built-in tasks do); a task that suspends is awaited here, on the caller's
event loop, and the core picks up from its result.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from bench.core import _flowcore
from flowmanager.v1 import flow_service_pb2
from flowservice.api.convert import decision_to_proto, flow_from_request
from flowservice.engine._plan import Plan, compile_flow
from flowservice.engine._validation import validate
from flowservice.engine.routing import stops, unrouted_next
from flowservice.history import time_ordered_id
from flowservice.limits import Limits
from flowservice.models import Decision, Task, TaskOutcome
from flowservice.tasks import TaskContext, TaskFailure, TaskRegistry

__all__ = ["NO_RESULTS", "Row", "Unsupported", "compiled", "core_plan", "execute", "rows"]

NO_RESULTS: Mapping[str, Any] = MappingProxyType({})
"""What the core's tasks see as earlier results: nothing (the seed's tasks read none)."""


class Unsupported(Exception):
    """The plan uses what the prototype core does not carry."""


def compiled(request: flow_service_pb2.ExecuteRequest, registry: TaskRegistry) -> Plan:
    """The engine's plan of `request`'s flow, as `Engine.run` compiles it."""
    flow = flow_from_request(request)
    limits = Limits()
    validation = validate(flow, registry, limits, {})
    if validation.violations:
        raise ValueError(f"invalid flow: {validation.violations}")
    return compile_flow(flow, validation.expressions, registry, limits)


def core_plan(plan: Plan, new_id: Callable[[], str] = time_ordered_id) -> _flowcore.Plan:
    """The core's tables for `plan`; `Unsupported` when it needs what the core lacks."""
    tasks: list[_flowcore.TaskRow] = [
        (
            row.name,
            row.function,
            row.task,
            row.params,
            row.routes[0],
            row.routes[1],
            _decision_field(row.decisions[0]),
            _decision_field(row.decisions[1]),
        )
        for row in rows(plan)
    ]
    return _flowcore.Plan(
        plan.flow.id,
        plan.positions[plan.flow.start_task],
        plan.max_steps,
        tasks,
        TaskContext,
        TaskFailure,
        new_id,
        NO_RESULTS,
    )


@dataclass(frozen=True, slots=True)
class Row:
    """One task of a plan as the core's loop (and the minimal one) reads it."""

    name: str
    function: Callable[[TaskContext], Any]
    task: Task
    params: Mapping[str, Any]
    routes: tuple[int, int]
    """The position of the task after a success, after a failure; -1: the flow stops."""
    decisions: tuple[Decision | None, Decision | None]
    """The decision reported after a success, after a failure (None: no condition)."""


def rows(plan: Plan) -> list[Row]:
    """`plan`'s tasks in list order; `Unsupported` when one needs what the cores lack."""
    found: list[Row] = []
    for position, name in enumerate(plan.names):
        task = plan.tasks[name]
        registered = plan.registered[task.type]
        if not registered.is_async or task.retry.max_attempts > 1 or task.timeout:
            raise Unsupported(f"task {name!r}: sync, retried or timed")
        if task.input_mapping:
            raise Unsupported(f"task {name!r}: an input mapping")
        success = _route(plan, name, position, TaskOutcome.SUCCESS)
        failure = _route(plan, name, position, TaskOutcome.FAILURE)
        found.append(
            Row(
                name,
                registered.function,
                task,
                task.params,
                (_position(plan, success[0]), _position(plan, failure[0])),
                (success[1], failure[1]),
            )
        )
    return found


def _position(plan: Plan, target: str | None) -> int:
    return -1 if target is None else plan.positions[target]


def _route(
    plan: Plan, name: str, position: int, outcome: TaskOutcome
) -> tuple[str | None, Decision | None]:
    """Where a run of `name` ending in `outcome` goes (None: the flow stops), and the decision."""
    if not plan.chains.get(name):
        return unrouted_next(plan.names, position, outcome is TaskOutcome.SUCCESS), None
    decision = plan.known_decisions[outcome].get(name)
    if decision is None:
        raise Unsupported(f"task {name!r}: a chain that tests an expression")
    return (None if stops(decision.next_task) else decision.next_task), decision


def _decision_field(decision: Decision | None) -> bytes:
    """`TaskResult.decision` (field 12) on the wire, tag included; empty when there is none."""
    if decision is None:
        return b""
    return flow_service_pb2.TaskResult(decision=decision_to_proto(decision)).SerializeToString()


async def execute(plan: _flowcore.Plan, flow_input: Mapping[str, Any]) -> bytes:
    """The serialized `ExecuteResponse` of a run of `plan`."""
    done = _flowcore.execute(plan, flow_input, True)
    if isinstance(done, bytes):
        return done
    assert done is not None  # encoding asked for: bytes or a suspended run
    while (pending := done.pending()) is not None:
        try:
            value = await _finish(*pending)
        except Exception as exc:  # the task's failure: the core records it
            done.fail(exc)
        else:
            done.resume(value)
    return done.reply()


@types.coroutine
def _finish(coroutine: Any, awaited: Any) -> Generator[Any, Any, Any]:
    """Goes on awaiting `coroutine`, which the core started and which yielded `awaited`.

    What `await coroutine` would do from there: hand each yielded future to
    the event loop's task, send back what it resumes with, pass a
    cancellation in; its return value (or exception) is the result.
    """
    while True:
        try:
            sent = yield awaited
        except BaseException as exc:  # a cancellation: the task's to handle
            try:
                awaited = coroutine.throw(exc)
            except StopIteration as stop:
                return stop.value
            continue
        try:
            awaited = coroutine.send(sent)
        except StopIteration as stop:
            return stop.value
