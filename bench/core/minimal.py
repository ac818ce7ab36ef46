"""The compiled core's loop in Python: the issue's "minimal engine", for comparison.

The same tables (`runner.rows`), the same work per step as `src/lib.rs`: a
`TaskContext`, the real task function awaited, a route looked up, a result
kept; then one constructor call builds the `ExecuteResponse` (sub-messages
as dicts, built in place) and serializes it. None of what the service adds
(events, history, admission, deadlines, metrics): what is left is the floor
of a Python engine of this shape.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bench.core.runner import NO_RESULTS, rows
from flowmanager.v1 import flow_service_pb2
from flowservice.api.convert import decision_to_proto
from flowservice.engine._plan import Plan
from flowservice.history import time_ordered_id
from flowservice.models import Decision
from flowservice.tasks import TaskContext, TaskFailure

__all__ = ["MinimalPlan", "execute_minimal", "minimal_plan"]

# (name, function, task, params, routes, decision fields by outcome)
_Row = tuple[
    str, Callable[[TaskContext], Any], Any, Mapping[str, Any], tuple[int, int], tuple[Any, Any]
]


@dataclass(frozen=True, slots=True)
class MinimalPlan:
    """A plan's tables for the Python loop."""

    flow_id: str
    start: int
    max_steps: int
    rows: tuple[_Row, ...]
    new_id: Callable[[], str]


def minimal_plan(plan: Plan, new_id: Callable[[], str] = time_ordered_id) -> MinimalPlan:
    """The Python loop's tables for `plan` (`runner.Unsupported` as for the core)."""
    return MinimalPlan(
        plan.flow.id,
        plan.positions[plan.flow.start_task],
        plan.max_steps,
        tuple(
            (
                row.name,
                row.function,
                row.task,
                row.params,
                row.routes,
                (_fields(row.decisions[0]), _fields(row.decisions[1])),
            )
            for row in rows(plan)
        ),
        new_id,
    )


def _fields(decision: Decision | None) -> dict[str, Any] | None:
    """A decision as constructor fields (built in place, not copied from a message)."""
    if decision is None:
        return None
    return {field.name: value for field, value in decision_to_proto(decision).ListFields()}


async def execute_minimal(
    plan: MinimalPlan, flow_input: Mapping[str, Any], encode: bool
) -> bytes | None:
    """A run of `plan`: the serialized `ExecuteResponse`, or None when `encode` is false."""
    execution_id = plan.new_id()
    started_ns, started = time.time_ns(), time.perf_counter_ns()
    results: list[tuple[_Row, int, Any, str, str, int, int, int]] = []
    status, error, error_type, failed_task = 1, "", "", ""
    index = plan.start
    while index >= 0:
        if len(results) >= plan.max_steps:
            status, error_type = 2, "StepLimitReached"
            error = f"step limit reached: the flow ran {plan.max_steps} tasks (max_steps)"
            break
        row = plan.rows[index]
        step = len(results) + 1
        at_ns, at = time.time_ns(), time.perf_counter_ns()
        context = TaskContext(
            execution_id, plan.flow_id, row[2], row[3], flow_input, step, 1, NO_RESULTS
        )
        output, outcome, task_error, task_error_type = None, 0, "", ""
        try:
            output = await row[1](context)
        except TaskFailure as failure:
            outcome, task_error, task_error_type = (
                1,
                str(failure) or "task failed",
                failure.error_type,
            )
        except Exception as exc:
            outcome, task_error_type = 1, type(exc).__name__
            task_error = f"{task_error_type}: {exc}"
        results.append(
            (
                row,
                outcome,
                output,
                task_error,
                task_error_type,
                at_ns,
                time.perf_counter_ns() - at,
                step,
            )
        )
        index = row[4][outcome]
        if index < 0 and outcome:
            status, error, error_type, failed_task = (
                2,
                f"task '{row[0]}' failed: {task_error}",
                task_error_type,
                row[0],
            )
    if not encode:
        return None
    reply = flow_service_pb2.ExecuteResponse(
        flow_id=plan.flow_id,
        status=status,  # type: ignore[arg-type]  # (the enum's number)
        executed_tasks=[result[0][0] for result in results],
        failed_task=failed_task,
        execution_id=execution_id,
        task_results=[_result_fields(*result) for result in results],
        error=error,
        start_time=_time(started_ns),
        duration=_time(time.perf_counter_ns() - started),
        error_type=error_type,
    )
    if results:
        reply.output.struct_value.SetInParent()
        if results[-1][2]:
            reply.output.struct_value.update(results[-1][2])
    return reply.SerializeToString()


def _result_fields(
    row: _Row,
    outcome: int,
    output: Any,
    error: str,
    error_type: str,
    at_ns: int,
    took: int,
    step: int,
) -> dict[str, Any]:
    return {
        "task": row[0],
        "outcome": outcome + 1,
        "output": output or None,
        "error": error,
        "start_time": _time(at_ns),
        "duration": _time(took),
        "step": step,
        "attempts": 1,
        "error_type": error_type,
        "decision": row[5][outcome],
    }


def _time(nanoseconds: int) -> dict[str, int]:
    """A `Timestamp` or `Duration`'s fields, from nanoseconds."""
    seconds, nanos = divmod(nanoseconds, 1_000_000_000)
    return {"seconds": seconds, "nanos": nanos}
