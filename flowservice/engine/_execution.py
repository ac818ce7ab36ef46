"""One execution of a checked flow: its state, and the loop that yields its events.

The loop is the engine's hot path, so it is one async generator (each layer
of generator would cost a hop per event) and its per-step work is kept to
the few objects a step must produce: two events and a `TaskResult`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any

from flowservice.engine._attempts import DEADLINE_EXCEEDED, Attempt, AttemptRunner
from flowservice.engine._deadline import DeadlinePassed, DeadlineTimer
from flowservice.engine._retry import backoff_delay, should_retry
from flowservice.engine._routing import Scope, decide, route_target
from flowservice.engine._validation import CheckedFlow
from flowservice.errors import TooManyExecutionsError
from flowservice.events import (
    ConditionEvaluated,
    Event,
    ExecutionFinished,
    ExecutionStarted,
    TaskFinished,
    TaskRetrying,
    TaskStarted,
)
from flowservice.expressions import ExpressionError
from flowservice.json_values import NotJsonError, to_json
from flowservice.limits import Limits
from flowservice.models import (
    ExecutionStatus,
    ExecutionSummary,
    Task,
    TaskOutcome,
    TaskResult,
    TaskStub,
    TimeLimit,
)
from flowservice.observer import Observer
from flowservice.tasks import RegisteredTask, TaskContext, TaskRegistry

__all__ = ["Admission", "Execution", "Plan"]

logger = logging.getLogger(__name__)

# grpc cancels a handler at the caller's deadline by its own timer, which may
# fire a moment before ours; a cancellation this close to the deadline is the
# deadline, not the caller going away.
_DEADLINE_TOLERANCE = 0.05

_LIMIT_NAMES = {
    "deadline": "the caller's deadline",
    "flow.timeout": "the flow's timeout",
    "max_run_time": "the server's maximum run time (max_run_time)",
}


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything one execution needs, computed once so that each step is O(1)."""

    checked: CheckedFlow
    """The validated flow, with its compiled expressions and condition chains."""
    tasks: Mapping[str, Task]
    """Tasks by name."""
    registered: Mapping[str, RegisteredTask]
    """The implementation of each task type the flow uses."""
    next_in_list: Mapping[str, str | None]
    """The task after each one in list order (None after the last)."""
    max_steps: int
    """Task runs allowed."""
    time_limit: TimeLimit
    """The earliest of the time limits that apply."""
    flow_input: Mapping[str, Any]
    """The request's input."""
    stubs: Mapping[str, TaskStub]
    """What-if results by task name."""

    @classmethod
    def of(
        cls,
        checked: CheckedFlow,
        registry: TaskRegistry,
        limits: Limits,
        time_allowed: float | None,
        flow_input: Mapping[str, Any],
        stubs: Mapping[str, TaskStub],
    ) -> Plan:
        """The plan of `checked`, under the earliest of its time limits."""
        flow = checked.flow
        names = [task.name for task in flow.tasks]
        time_limits = [TimeLimit("max_run_time", limits.max_run_time)]
        if flow.timeout is not None:
            time_limits.append(TimeLimit("flow.timeout", flow.timeout.total_seconds()))
        if time_allowed is not None:
            time_limits.append(TimeLimit("deadline", max(time_allowed, 0.0)))
        registered = {}
        for task in flow.tasks:
            implementation = registry.get(task.type)
            assert implementation is not None  # validation rejected unknown types
            registered[task.type] = implementation
        return cls(
            checked=checked,
            tasks={task.name: task for task in flow.tasks},
            registered=registered,
            next_in_list=dict(zip(names, [*names[1:], None], strict=True)),
            max_steps=flow.max_steps or limits.default_max_steps,
            time_limit=min(time_limits, key=lambda limit: limit.seconds),
            flow_input=flow_input,
            stubs=stubs,
        )

    def out_of_time(self, when: str) -> str:
        """The error of an execution stopped by its time limit `when`."""
        limit = self.time_limit
        seconds = f"{limit.seconds:.3g}"
        return f"deadline exceeded: {_LIMIT_NAMES[limit.name]} of {seconds} s passed {when}"


class Admission:
    """Counts executions in progress and refuses new ones past the limit."""

    __slots__ = ("limit", "running")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        """The most executions at once."""
        self.running = 0
        """Executions in progress."""

    def enter(self) -> None:
        """Admits one execution; `TooManyExecutionsError` when at the limit."""
        if self.running >= self.limit:
            raise TooManyExecutionsError(self.limit)
        self.running += 1

    def leave(self) -> None:
        """One execution ended."""
        self.running -= 1


class _Stop(Exception):
    """Ends an execution early with a status and an error."""

    def __init__(self, status: ExecutionStatus, error: str) -> None:
        self.status = status
        self.error = error


@dataclass(slots=True)
class Execution:
    """One run of a plan; `events()` runs it."""

    plan: Plan
    execution_id: str
    admission: Admission
    attempts: AttemptRunner
    observer: Observer
    clock: Callable[[], datetime]
    sleep: Callable[[float], Awaitable[None]]
    rng: random.Random
    _sequence: int = 0
    _results: list[TaskResult] = field(default_factory=list)

    def _next(self) -> int:
        self._sequence += 1
        return self._sequence

    async def events(self) -> AsyncGenerator[Event, None]:
        """Runs the execution, yielding its events; the last is `ExecutionFinished`."""
        self.admission.enter()
        plan, execution_id, clock, emit = (
            self.plan,
            self.execution_id,
            self.clock,
            self.observer.event,
        )
        checked = plan.checked
        flow = checked.flow
        loop = asyncio.get_running_loop()
        deadline = DeadlineTimer(loop.time() + plan.time_limit.seconds)
        results = self._results
        latest: dict[str, TaskResult] = {}  # latest run per task, in the order they last ran
        latest_view = MappingProxyType(latest)  # tasks read it, only the engine writes
        scope = Scope(plan.flow_input) if checked.uses_expressions else None
        started_at = clock()
        started = time.perf_counter()
        status, failed_task, error = ExecutionStatus.COMPLETED, "", ""
        current: str | None = flow.start_task
        finished = False
        try:
            with self.observer.execution(flow, execution_id):
                event: Event = ExecutionStarted(
                    execution_id, self._next(), started_at, flow.id, flow.name, flow.start_task
                )
                emit(event)
                yield event
                try:
                    while current is not None:
                        if len(results) >= plan.max_steps:
                            raise _Stop(
                                ExecutionStatus.FAILED,
                                f"step limit reached: the flow ran {plan.max_steps} tasks "
                                f"(max_steps) and was stopped before running {current!r} again",
                            )
                        if deadline.passed:
                            raise _Stop(
                                ExecutionStatus.TIMED_OUT,
                                plan.out_of_time(f"before task {current!r} could start"),
                            )
                        task = plan.tasks[current]
                        step = len(results) + 1
                        inputs = self._inputs(task, scope) if checked.input_mappings else {}
                        task_started_at = clock()
                        task_started = time.perf_counter()
                        event = TaskStarted(
                            execution_id, self._next(), task_started_at, task.name, task.type, step
                        )
                        emit(event)
                        yield event

                        stub = plan.stubs.get(task.name) if plan.stubs else None
                        attempt_number = 1
                        if stub is not None:
                            attempt = self.attempts.stubbed(stub)
                        else:
                            params = {**task.params, **inputs} if inputs else task.params
                            registered = plan.registered[task.type]
                            while True:
                                ctx = TaskContext(
                                    execution_id,
                                    flow.id,
                                    task,
                                    params,
                                    plan.flow_input,
                                    step,
                                    attempt_number,
                                    latest_view,
                                )
                                with self.observer.attempt(task, step, attempt_number):
                                    attempt = await self.attempts.run(
                                        registered, ctx, deadline, plan
                                    )
                                if (
                                    not attempt.error
                                    or attempt.out_of_time
                                    or not should_retry(
                                        task.retry, attempt_number, attempt.error_type
                                    )
                                ):
                                    break
                                delay = backoff_delay(task.retry, attempt_number, self.rng)
                                event = TaskRetrying(
                                    execution_id,
                                    self._next(),
                                    clock(),
                                    task.name,
                                    attempt_number,
                                    attempt.error,
                                    attempt.error_type,
                                    delay,
                                )
                                emit(event)
                                yield event
                                attempt = await self._wait_to_retry(
                                    task.name, attempt, delay, deadline
                                )
                                if attempt.out_of_time:
                                    break
                                attempt_number += 1

                        result = TaskResult(
                            task.name,
                            TaskOutcome.FAILURE if attempt.error else TaskOutcome.SUCCESS,
                            step,
                            task_started_at,
                            timedelta(seconds=time.perf_counter() - task_started),
                            attempt.output,
                            attempt.error,
                            attempt.error_type,
                            attempt_number,
                            stub is not None,
                            inputs,
                        )
                        results.append(result)
                        latest.pop(task.name, None)
                        latest[task.name] = result
                        if scope is not None:
                            scope.record(result)
                        finished_at = clock()
                        event = TaskFinished(execution_id, self._next(), finished_at, result)
                        emit(event)
                        yield event
                        if attempt.out_of_time:
                            # The task's error says it was cancelled; the flow's, why.
                            error = attempt.error.removeprefix("cancelled: ")
                            raise _Stop(ExecutionStatus.TIMED_OUT, error)

                        chain = checked.chains.get(task.name)
                        if chain:
                            try:
                                decision = decide(chain, result, scope)
                            except ExpressionError as exc:
                                raise _Stop(ExecutionStatus.FAILED, str(exc)) from None
                            results[-1] = result.with_decision(decision)
                            # Deciding takes no time worth a clock read: the
                            # decision shares its task's finish time.
                            event = ConditionEvaluated(
                                execution_id, self._next(), finished_at, decision
                            )
                            emit(event)
                            yield event
                            current = route_target(decision.next_task)
                        elif result.outcome is TaskOutcome.SUCCESS:
                            current = plan.next_in_list[task.name]
                        else:
                            current = None  # fail-fast: an unrouted failure stops the flow

                        if current is None and result.outcome is TaskOutcome.FAILURE:
                            status = ExecutionStatus.FAILED
                            failed_task = task.name
                            error = f"task {task.name!r} failed: {result.error}"
                except _Stop as stop:
                    status, error = stop.status, stop.error

                summary = self._summary(status, failed_task, error, started_at, started, scope)
                self._log_end(status)
                event = ExecutionFinished(execution_id, self._next(), clock(), summary)
                emit(event)
                finished = True
                yield event
        except (asyncio.CancelledError, GeneratorExit):
            # The caller cancelled, went away, or its deadline passed: record
            # which, and let the cancellation propagate.
            if not finished:
                late = loop.time() >= deadline.when - _DEADLINE_TOLERANCE
                self._log_end(ExecutionStatus.TIMED_OUT if late else ExecutionStatus.CANCELLED)
            raise
        finally:
            deadline.cancel()
            self.admission.leave()

    async def _wait_to_retry(
        self, task_name: str, attempt: Attempt, delay: timedelta, deadline: DeadlineTimer
    ) -> Attempt:
        """Sleeps `delay` before the next try; an out-of-time attempt if the deadline cuts it."""
        try:
            with deadline.interruptible():
                await self.sleep(delay.total_seconds())
        except DeadlinePassed:
            return Attempt(
                output=attempt.output,
                error=self.plan.out_of_time(f"while {task_name!r} was waiting to retry"),
                error_type=DEADLINE_EXCEEDED,
                out_of_time=True,
            )
        return attempt

    def _inputs(self, task: Task, scope: Scope | None) -> dict[str, Any]:
        """The params `task`'s input mapping produces now; `_Stop` when one fails."""
        mapping = self.plan.checked.input_mappings.get(task.name)
        if not mapping:
            return {}
        assert scope is not None
        variables = scope.variables(self._results[-1] if self._results else None)
        inputs: dict[str, Any] = {}
        for name, expression in mapping:
            try:
                inputs[name] = to_json(expression.evaluate(variables))
            except (ExpressionError, NotJsonError) as exc:
                raise _Stop(
                    ExecutionStatus.FAILED,
                    f"input_mapping {name!r} of task {task.name!r} could not be evaluated: {exc}",
                ) from None
        return inputs

    def _summary(
        self,
        status: ExecutionStatus,
        failed_task: str,
        error: str,
        started_at: datetime,
        started: float,
        scope: Scope | None,
    ) -> ExecutionSummary:
        results = self._results
        checked = self.plan.checked
        output: Any = results[-1].output if results else None
        if checked.output is not None and status is not ExecutionStatus.TIMED_OUT:
            assert scope is not None
            try:
                last = results[-1] if results else None
                output = to_json(checked.output.evaluate(scope.variables(last)))
            except (ExpressionError, NotJsonError) as exc:
                output = None
                if status is ExecutionStatus.COMPLETED:
                    status = ExecutionStatus.FAILED
                    error = f"flow.output could not be evaluated: {exc}"
        return ExecutionSummary(
            execution_id=self.execution_id,
            flow_id=checked.flow.id,
            status=status,
            executed_tasks=tuple(result.task for result in results),
            task_results=tuple(results),
            started_at=started_at,
            duration=timedelta(seconds=time.perf_counter() - started),
            failed_task=failed_task,
            error=error,
            time_limit=self.plan.time_limit if status is ExecutionStatus.TIMED_OUT else None,
            output=output,
        )

    def _log_end(self, status: ExecutionStatus) -> None:
        # A completed execution is the common case and metrics count it; a log
        # line for each would cost more than the rest of a small flow's run.
        level = logging.DEBUG if status is ExecutionStatus.COMPLETED else logging.INFO
        if not logger.isEnabledFor(level):
            return
        flow_id = self.plan.checked.flow.id
        logger.log(
            level,
            "execution %s of flow %r %s after %d task runs",
            self.execution_id,
            flow_id,
            status.value,
            len(self._results),
            extra={"execution_id": self.execution_id, "flow_id": flow_id, "status": status.value},
        )
