"""The flow engine: runs a validated flow and yields its events as they happen.

`Engine.run` is the one code path. `ExecuteStream` forwards its events;
`Engine.execute` (and so `Execute`) drains them and returns the summary the
last event carries.

Time is bounded at three levels: the execution's deadline (the earliest of
the caller's, the flow's `timeout` and the server's `max_run_time`), each
attempt's `timeout`, and the retry delays, which sleep under the execution's
deadline. Cancellation (the caller went away) propagates untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

from flowservice.analysis import flow_warnings
from flowservice.attempts import DEADLINE_EXCEEDED, Attempt, AttemptRunner
from flowservice.deadline import DeadlinePassed, DeadlineTimer
from flowservice.errors import TooManyExecutionsError, Violation
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
    Flow,
    Task,
    TaskOutcome,
    TaskResult,
    TaskStub,
    TimeLimit,
)
from flowservice.observer import NullObserver, Observer
from flowservice.retry import backoff_delay, should_retry
from flowservice.routing import Scope, decide
from flowservice.tasks import TaskContext, TaskRegistry
from flowservice.validation import CheckedFlow, check_flow, validate

__all__ = ["Engine", "ValidationReport"]

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


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _new_execution_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True, slots=True)
class ValidationReport:
    """What `Engine.validate` found: blocking errors and non-blocking warnings."""

    errors: tuple[Violation, ...]
    """Problems that make a run fail with INVALID_ARGUMENT."""
    warnings: tuple[Violation, ...]
    """Suspicious parts that do not block a run."""


@dataclass(frozen=True, slots=True)
class _Plan:
    """Everything one execution needs, computed once so that each step is O(1)."""

    checked: CheckedFlow
    tasks: Mapping[str, Task]
    next_in_list: Mapping[str, str | None]
    max_steps: int
    time_limit: TimeLimit
    flow_input: Mapping[str, Any]
    stubs: Mapping[str, TaskStub]

    @classmethod
    def of(
        cls,
        checked: CheckedFlow,
        limits: Limits,
        time_allowed: float | None,
        flow_input: Mapping[str, Any],
        stubs: Mapping[str, TaskStub],
    ) -> _Plan:
        flow = checked.flow
        names = [task.name for task in flow.tasks]
        time_limits = [TimeLimit("max_run_time", limits.max_run_time)]
        if flow.timeout is not None:
            time_limits.append(TimeLimit("flow.timeout", flow.timeout.total_seconds()))
        if time_allowed is not None:
            time_limits.append(TimeLimit("deadline", max(time_allowed, 0.0)))
        return cls(
            checked=checked,
            tasks={task.name: task for task in flow.tasks},
            next_in_list=dict(zip(names, [*names[1:], None], strict=True)),
            max_steps=flow.max_steps or limits.default_max_steps,
            time_limit=min(time_limits, key=lambda limit: limit.seconds),
            flow_input=flow_input,
            stubs=stubs,
        )

    def out_of_time(self, when: str) -> str:
        """The error of an execution stopped by its time limit."""
        limit = self.time_limit
        return f"deadline exceeded: {_LIMIT_NAMES[limit.name]} of {limit.seconds:g} s passed {when}"


class _Stop(Exception):
    """Ends an execution early with a status and an error."""

    def __init__(self, status: ExecutionStatus, error: str) -> None:
        self.status = status
        self.error = error


class Engine:
    """Runs flows with the task implementations of one registry, within `limits`."""

    def __init__(
        self,
        registry: TaskRegistry,
        *,
        limits: Limits | None = None,
        clock: Callable[[], datetime] = _utc_now,
        new_execution_id: Callable[[], str] = _new_execution_id,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        task_threads: int = 64,
        observer: Observer | None = None,
    ) -> None:
        self._registry = registry
        self._limits = limits or Limits()
        self._clock = clock
        self._new_execution_id = new_execution_id
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._attempts = AttemptRunner(self._limits, task_threads)
        self._observer: Observer = observer or NullObserver()
        self._running = 0

    @property
    def running(self) -> int:
        """How many executions are in progress."""
        return self._running

    def close(self) -> None:
        """Releases the worker threads; sync tasks still running are abandoned."""
        self._attempts.close()

    def validate(self, flow: Flow) -> ValidationReport:
        """The errors `run` would raise for `flow`, and warnings that would not stop it."""
        validation = validate(flow, self._registry, self._limits)
        if validation.checked is None:
            return ValidationReport(validation.violations, ())
        return ValidationReport((), tuple(flow_warnings(validation.checked)))

    def run(
        self,
        flow: Flow,
        *,
        flow_input: Mapping[str, Any] | None = None,
        stubs: Mapping[str, TaskStub] | None = None,
        time_allowed: float | None = None,
    ) -> AsyncGenerator[Event, None]:
        """Validates `flow`, then returns an iterator over its execution's events.

        `flow_input` is what tasks and expressions see as the input; `stubs`
        replace the named tasks' implementations (what-if runs); `time_allowed`
        is what is left of the caller's gRPC deadline, in seconds (None: no
        deadline). Raises `InvalidFlowError` at once, before any task runs,
        when the flow is invalid; the iterator raises `TooManyExecutionsError`
        before its first event when the server is at its limit. Otherwise its
        last event is always `ExecutionFinished`. A caller that may stop early
        closes the iterator (`contextlib.aclosing`) so the execution ends at once.
        """
        stubs = stubs or {}
        checked = check_flow(flow, self._registry, self._limits, stubs)
        plan = _Plan.of(checked, self._limits, time_allowed, flow_input or {}, stubs)
        return self._events(plan)

    async def execute(
        self,
        flow: Flow,
        *,
        flow_input: Mapping[str, Any] | None = None,
        stubs: Mapping[str, TaskStub] | None = None,
        time_allowed: float | None = None,
    ) -> ExecutionSummary:
        """Runs `flow` to its end and returns its summary (see `run`)."""
        last: Event | None = None
        events = self.run(flow, flow_input=flow_input, stubs=stubs, time_allowed=time_allowed)
        async with contextlib.aclosing(events):
            async for event in events:
                last = event
        assert isinstance(last, ExecutionFinished)  # guaranteed by _events
        return last.summary

    async def _events(self, plan: _Plan) -> AsyncGenerator[Event, None]:
        if self._running >= self._limits.max_concurrent_executions:
            raise TooManyExecutionsError(self._limits.max_concurrent_executions)
        self._running += 1
        execution_id = self._new_execution_id()
        observer = self._observer
        try:
            with observer.execution(plan.checked.flow, execution_id):
                async with contextlib.aclosing(self._execution(plan, execution_id)) as events:
                    async for event in events:
                        observer.event(event)
                        yield event
        finally:
            self._running -= 1

    async def _execution(self, plan: _Plan, execution_id: str) -> AsyncGenerator[Event, None]:
        checked = plan.checked
        flow = checked.flow
        sequence = 0

        def header(now: datetime | None = None) -> dict[str, Any]:
            nonlocal sequence
            sequence += 1
            return {
                "execution_id": execution_id,
                "sequence": sequence,
                "time": now or self._clock(),
            }

        loop = asyncio.get_running_loop()
        deadline = DeadlineTimer(loop.time() + plan.time_limit.seconds)
        started_at = self._clock()
        started = time.perf_counter()
        yield ExecutionStarted(
            **header(started_at), flow_id=flow.id, flow_name=flow.name, start_task=flow.start_task
        )

        results: list[TaskResult] = []
        latest: dict[str, TaskResult] = {}  # latest run per task, in the order they last ran
        latest_view = MappingProxyType(latest)  # tasks read it, only the engine writes
        scope = Scope(plan.flow_input) if checked.uses_expressions else None
        status = ExecutionStatus.COMPLETED
        failed_task = ""
        error = ""
        current: str | None = flow.start_task
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
                inputs = self._mapped_inputs(checked, task, scope, results)
                task_started_at = self._clock()
                task_started = time.perf_counter()
                yield TaskStarted(
                    **header(task_started_at), task=task.name, type=task.type, step=step
                )
                registered = self._registry.get(task.type)
                assert registered is not None  # validation rejected unknown types
                params = {**task.params, **inputs} if inputs else task.params
                stub = plan.stubs.get(task.name)
                attempt_number = 1
                while True:
                    if stub is not None:
                        attempt = self._attempts.stubbed(stub)
                        break
                    ctx = TaskContext(
                        execution_id=execution_id,
                        flow_id=flow.id,
                        task=task,
                        params=params,
                        input=plan.flow_input,
                        step=step,
                        attempt=attempt_number,
                        results=latest_view,
                    )
                    with self._observer.attempt(task, step, attempt_number):
                        attempt = await self._attempts.run(registered, ctx, deadline, plan)
                    if (
                        not attempt.failed
                        or attempt.out_of_time
                        or not should_retry(task.retry, attempt_number, attempt.error_type)
                    ):
                        break
                    delay = backoff_delay(task.retry, attempt_number, self._rng)
                    yield TaskRetrying(
                        **header(),
                        task=task.name,
                        attempt=attempt_number,
                        error=attempt.error,
                        error_type=attempt.error_type,
                        delay=delay,
                    )
                    try:
                        with deadline.interruptible():
                            await self._sleep(delay.total_seconds())
                    except DeadlinePassed:
                        attempt = Attempt(
                            output=attempt.output,
                            error=plan.out_of_time("while waiting to retry"),
                            error_type=DEADLINE_EXCEEDED,
                            out_of_time=True,
                        )
                        break
                    attempt_number += 1

                result = TaskResult(
                    task=task.name,
                    outcome=TaskOutcome.FAILURE if attempt.failed else TaskOutcome.SUCCESS,
                    step=step,
                    started_at=task_started_at,
                    duration=timedelta(seconds=time.perf_counter() - task_started),
                    output=attempt.output,
                    error=attempt.error,
                    error_type=attempt.error_type,
                    attempts=attempt_number,
                    stubbed=stub is not None,
                    inputs=inputs,
                )
                results.append(result)
                latest.pop(task.name, None)
                latest[task.name] = result
                if scope is not None:
                    scope.record(result)
                yield TaskFinished(**header(), result=result)
                if attempt.out_of_time:
                    raise _Stop(ExecutionStatus.TIMED_OUT, attempt.error)

                chain = checked.chains.get(task.name)
                if chain:
                    try:
                        decision = decide(chain, result, scope)
                    except ExpressionError as exc:
                        raise _Stop(ExecutionStatus.FAILED, str(exc)) from None
                    results[-1] = dataclasses.replace(result, decision=decision)
                    yield ConditionEvaluated(**header(), decision=decision)
                    current = None if decision.next_task == "end" else decision.next_task
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
        except (asyncio.CancelledError, GeneratorExit):
            # The caller cancelled, went away, or its deadline passed: record
            # which, and let the cancellation propagate.
            ended = (
                ExecutionStatus.TIMED_OUT
                if loop.time() >= deadline.when - _DEADLINE_TOLERANCE
                else ExecutionStatus.CANCELLED
            )
            self._log_end(execution_id, flow, ended, len(results))
            raise
        finally:
            deadline.cancel()

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
            time_limit=plan.time_limit if status is ExecutionStatus.TIMED_OUT else None,
            output=output,
        )
        self._log_end(execution_id, flow, status, len(results))
        yield ExecutionFinished(**header(), summary=summary)

    def _mapped_inputs(
        self, checked: CheckedFlow, task: Task, scope: Scope | None, results: list[TaskResult]
    ) -> dict[str, Any]:
        """The params `task`'s input mapping produces now; `_Stop` when one fails."""
        mapping = checked.input_mappings.get(task.name)
        if not mapping:
            return {}
        assert scope is not None
        variables = scope.variables(results[-1] if results else None)
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

    @staticmethod
    def _log_end(execution_id: str, flow: Flow, status: ExecutionStatus, runs: int) -> None:
        logger.info(
            "execution %s of flow %r %s after %d task runs",
            execution_id,
            flow.id,
            status.value,
            runs,
            extra={"execution_id": execution_id, "flow_id": flow.id, "status": status.value},
        )
