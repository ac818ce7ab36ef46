"""The flow engine: runs a validated flow and yields its events as they happen.

`Engine.run` is the one code path. `ExecuteStream` forwards its events;
`Engine.execute` (and so `Execute`) drains them and returns the summary the
last event carries.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

from flowservice.events import (
    ConditionEvaluated,
    Event,
    ExecutionFinished,
    ExecutionStarted,
    TaskFinished,
    TaskStarted,
)
from flowservice.json_values import json_problem
from flowservice.models import (
    END,
    Branch,
    Condition,
    ExecutionStatus,
    ExecutionSummary,
    Flow,
    Task,
    TaskOutcome,
    TaskResult,
)
from flowservice.tasks import TaskContext, TaskFailure, TaskRegistry
from flowservice.validation import FlowLimits, check_flow

__all__ = ["DEFAULT_MAX_STEPS", "Engine"]

DEFAULT_MAX_STEPS = 1_000
"""Task runs allowed per execution when neither the flow nor the server says otherwise."""

logger = logging.getLogger(__name__)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _new_execution_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True, slots=True)
class _Plan:
    """Lookup tables built once per execution so that each step is O(1)."""

    flow: Flow
    tasks: Mapping[str, Task]
    next_in_list: Mapping[str, str | None]
    conditions: Mapping[str, Condition]
    max_steps: int

    @classmethod
    def of(cls, flow: Flow, default_max_steps: int) -> _Plan:
        names = [task.name for task in flow.tasks]
        return cls(
            flow=flow,
            tasks={task.name: task for task in flow.tasks},
            next_in_list=dict(zip(names, [*names[1:], None], strict=True)),
            conditions={condition.source_task: condition for condition in flow.conditions},
            max_steps=flow.max_steps or default_max_steps,
        )


class Engine:
    """Runs flows with the task implementations of one registry."""

    def __init__(
        self,
        registry: TaskRegistry,
        *,
        default_max_steps: int = DEFAULT_MAX_STEPS,
        limits: FlowLimits | None = None,
        clock: Callable[[], datetime] = _utc_now,
        new_execution_id: Callable[[], str] = _new_execution_id,
    ) -> None:
        self._registry = registry
        self._default_max_steps = default_max_steps
        self._limits = limits or FlowLimits()
        self._clock = clock
        self._new_execution_id = new_execution_id

    def run(self, flow: Flow) -> AsyncIterator[Event]:
        """Validates `flow`, then returns an iterator over its execution's events.

        Raises `InvalidFlowError` at once, before any task runs, when the flow
        is invalid. The iterator's last event is always `ExecutionFinished`.
        """
        check_flow(flow, self._registry, self._limits)
        return self._events(_Plan.of(flow, self._default_max_steps))

    async def execute(self, flow: Flow) -> ExecutionSummary:
        """Runs `flow` to its end and returns its summary."""
        last: Event | None = None
        async for event in self.run(flow):
            last = event
        assert isinstance(last, ExecutionFinished)  # guaranteed by _events
        return last.summary

    async def _events(self, plan: _Plan) -> AsyncIterator[Event]:
        flow = plan.flow
        execution_id = self._new_execution_id()
        sequence = 0

        def header() -> dict[str, Any]:
            nonlocal sequence
            sequence += 1
            return {"execution_id": execution_id, "sequence": sequence, "time": self._clock()}

        started_at = self._clock()
        started = time.perf_counter()
        yield ExecutionStarted(
            **header(), flow_id=flow.id, flow_name=flow.name, start_task=flow.start_task
        )

        results: list[TaskResult] = []
        # Latest output per task, in the order tasks last ran (re-inserted on repeat).
        outputs: dict[str, Mapping[str, Any]] = {}
        outputs_view = MappingProxyType(outputs)  # tasks read it, only the engine writes
        status = ExecutionStatus.COMPLETED
        failed_task = ""
        error = ""
        current: str | None = flow.start_task
        try:
            while current is not None:
                if len(results) >= plan.max_steps:
                    status = ExecutionStatus.FAILED
                    error = (
                        f"step limit reached: the flow ran {plan.max_steps} tasks "
                        f"(max_steps) and was stopped before running {current!r} again"
                    )
                    break
                task = plan.tasks[current]
                step = len(results) + 1
                yield TaskStarted(**header(), task=task.name, type=task.type, step=step)
                ctx = TaskContext(
                    execution_id=execution_id,
                    flow_id=flow.id,
                    task=task,
                    step=step,
                    outputs=outputs_view,
                    previous=results[-1] if results else None,
                )
                result = await self._run_task(task, ctx)
                results.append(result)
                outputs.pop(task.name, None)
                outputs[task.name] = result.output
                yield TaskFinished(**header(), result=result)

                condition = plan.conditions.get(task.name)
                if condition is not None:
                    matched = result.outcome.value == condition.outcome
                    target = (
                        condition.target_task_success if matched else condition.target_task_failure
                    )
                    current = None if target in ("", END) else target
                    yield ConditionEvaluated(
                        **header(),
                        condition=condition.name,
                        source_task=task.name,
                        expected_outcome=condition.outcome,
                        actual_outcome=result.outcome,
                        branch=Branch.SUCCESS if matched else Branch.FAILURE,
                        next_task=current or END,
                    )
                elif result.outcome is TaskOutcome.SUCCESS:
                    current = plan.next_in_list[task.name]
                else:
                    current = None  # fail-fast: an unrouted failure stops the flow

                if current is None and result.outcome is TaskOutcome.FAILURE:
                    status = ExecutionStatus.FAILED
                    failed_task = task.name
                    error = f"task {task.name!r} failed: {result.error}"
        except (asyncio.CancelledError, GeneratorExit):
            # The caller went away or gave up; record it and let cancellation propagate.
            logger.info(
                "execution %s of flow %r cancelled after %d task runs",
                execution_id,
                flow.id,
                len(results),
                extra={"execution_id": execution_id, "flow_id": flow.id, "status": "cancelled"},
            )
            raise

        summary = ExecutionSummary(
            execution_id=execution_id,
            flow_id=flow.id,
            status=status,
            executed_tasks=tuple(result.task for result in results),
            task_results=tuple(results),
            started_at=started_at,
            duration=timedelta(seconds=time.perf_counter() - started),
            failed_task=failed_task,
            error=error,
        )
        logger.info(
            "execution %s of flow %r %s after %d task runs",
            execution_id,
            flow.id,
            status.value,
            len(results),
            extra={"execution_id": execution_id, "flow_id": flow.id, "status": status.value},
        )
        yield ExecutionFinished(**header(), summary=summary)

    async def _run_task(self, task: Task, ctx: TaskContext) -> TaskResult:
        implementation = self._registry.get(task.type)
        assert implementation is not None  # check_flow rejected unknown types
        started_at = self._clock()
        started = time.perf_counter()
        output: Mapping[str, Any] = {}
        error = ""
        try:
            returned = await implementation(ctx)
            if returned is not None:
                problem = json_problem(returned)
                if problem:
                    raise TaskFailure(f"task output is not JSON-like: {problem}")
                output = returned
        except TaskFailure as failure:
            error = str(failure) or "task failed"
            output = failure.output if json_problem(failure.output) is None else {}
        except Exception as exc:
            # A task's own bug is that task's failure, never the server's.
            error = f"{type(exc).__name__}: {exc}"
            logger.warning(
                "task %r raised in execution %s",
                task.name,
                ctx.execution_id,
                exc_info=True,
                extra={"execution_id": ctx.execution_id, "task": task.name},
            )
        return TaskResult(
            task=task.name,
            outcome=TaskOutcome.FAILURE if error else TaskOutcome.SUCCESS,
            step=ctx.step,
            started_at=started_at,
            duration=timedelta(seconds=time.perf_counter() - started),
            output=output,
            error=error,
        )
