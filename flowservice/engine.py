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
import json
import logging
import random
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

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
from flowservice.json_values import json_problem
from flowservice.limits import Limits
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
    TimeLimit,
)
from flowservice.retry import backoff_delay, should_retry
from flowservice.tasks import TaskContext, TaskFailure, TaskOutput, TaskRegistry
from flowservice.validation import check_flow

__all__ = ["TASK_TIMEOUT", "Engine"]

TASK_TIMEOUT = "TaskTimeout"
"""The error type of an attempt that ran past its task's `timeout`."""

logger = logging.getLogger(__name__)

# grpc cancels a handler at the caller's deadline by its own timer, which may
# fire a moment before ours; a cancellation this close to the deadline is the
# deadline, not the caller going away.
_DEADLINE_TOLERANCE = 0.05


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
    time_limit: TimeLimit

    @classmethod
    def of(cls, flow: Flow, limits: Limits, time_allowed: float | None) -> _Plan:
        names = [task.name for task in flow.tasks]
        time_limits = [TimeLimit("max_run_time", limits.max_run_time)]
        if flow.timeout is not None:
            time_limits.append(TimeLimit("flow.timeout", flow.timeout.total_seconds()))
        if time_allowed is not None:
            time_limits.append(TimeLimit("deadline", max(time_allowed, 0.0)))
        return cls(
            flow=flow,
            tasks={task.name: task for task in flow.tasks},
            next_in_list=dict(zip(names, [*names[1:], None], strict=True)),
            conditions={condition.source_task: condition for condition in flow.conditions},
            max_steps=flow.max_steps or limits.default_max_steps,
            time_limit=min(time_limits, key=lambda limit: limit.seconds),
        )


@dataclass(frozen=True, slots=True)
class _Attempt:
    """How one attempt of a task ended."""

    output: Mapping[str, Any]
    error: str = ""
    error_type: str = ""
    out_of_time: bool = False
    """The execution's deadline passed during the attempt."""


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
    ) -> None:
        self._registry = registry
        self._limits = limits or Limits()
        self._clock = clock
        self._new_execution_id = new_execution_id
        self._sleep = sleep
        self._rng = rng or random.Random()
        # Sync tasks run here, not in asyncio's small default pool: a task that
        # blocks, or is abandoned at a deadline, must not starve the others.
        self._executor: Executor = ThreadPoolExecutor(
            max_workers=task_threads, thread_name_prefix="flow-task"
        )
        self._running = 0

    @property
    def running(self) -> int:
        """How many executions are in progress."""
        return self._running

    def close(self) -> None:
        """Releases the worker threads; sync tasks still running are abandoned."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    def run(self, flow: Flow, *, time_allowed: float | None = None) -> AsyncGenerator[Event, None]:
        """Validates `flow`, then returns an iterator over its execution's events.

        `time_allowed` is the time the caller allows, in seconds (what is left of
        its gRPC deadline); None when it set no deadline.
        Raises `InvalidFlowError` at once, before any task runs, when the flow
        is invalid; the iterator raises `TooManyExecutionsError` before its
        first event when the server is at its limit. Otherwise its last event
        is always `ExecutionFinished`. A caller that may stop early closes the
        iterator (`contextlib.aclosing`) so the execution ends at once.
        """
        check_flow(flow, self._registry, self._limits)
        return self._events(_Plan.of(flow, self._limits, time_allowed))

    async def execute(self, flow: Flow, *, time_allowed: float | None = None) -> ExecutionSummary:
        """Runs `flow` to its end and returns its summary."""
        last: Event | None = None
        async with contextlib.aclosing(self.run(flow, time_allowed=time_allowed)) as events:
            async for event in events:
                last = event
        assert isinstance(last, ExecutionFinished)  # guaranteed by _events
        return last.summary

    async def _events(self, plan: _Plan) -> AsyncGenerator[Event, None]:
        if self._running >= self._limits.max_concurrent_executions:
            raise TooManyExecutionsError(self._limits.max_concurrent_executions)
        self._running += 1
        try:
            async with contextlib.aclosing(self._execution(plan)) as events:
                async for event in events:
                    yield event
        finally:
            self._running -= 1

    async def _execution(self, plan: _Plan) -> AsyncGenerator[Event, None]:
        flow = plan.flow
        execution_id = self._new_execution_id()
        sequence = 0

        def header() -> dict[str, Any]:
            nonlocal sequence
            sequence += 1
            return {"execution_id": execution_id, "sequence": sequence, "time": self._clock()}

        loop = asyncio.get_running_loop()
        deadline = loop.time() + plan.time_limit.seconds
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
                if loop.time() >= deadline:
                    status = ExecutionStatus.TIMED_OUT
                    error = _out_of_time(plan.time_limit, f"before task {current!r} could start")
                    break
                task = plan.tasks[current]
                step = len(results) + 1
                yield TaskStarted(**header(), task=task.name, type=task.type, step=step)
                task_started_at = self._clock()
                task_started = time.perf_counter()
                attempt_number = 1
                while True:
                    ctx = TaskContext(
                        execution_id=execution_id,
                        flow_id=flow.id,
                        task=task,
                        step=step,
                        attempt=attempt_number,
                        outputs=outputs_view,
                        previous=results[-1] if results else None,
                    )
                    attempt = await self._attempt(task, ctx, deadline, plan.time_limit)
                    if (
                        not attempt.error
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
                        async with asyncio.timeout_at(deadline):
                            await self._sleep(delay.total_seconds())
                    except TimeoutError:
                        attempt = _Attempt(
                            output=attempt.output,
                            error=_out_of_time(plan.time_limit, "while waiting to retry"),
                            error_type="DeadlineExceeded",
                            out_of_time=True,
                        )
                        break
                    attempt_number += 1

                result = TaskResult(
                    task=task.name,
                    outcome=TaskOutcome.FAILURE if attempt.error else TaskOutcome.SUCCESS,
                    step=step,
                    started_at=task_started_at,
                    duration=timedelta(seconds=time.perf_counter() - task_started),
                    output=attempt.output,
                    error=attempt.error,
                    error_type=attempt.error_type,
                    attempts=attempt_number,
                )
                results.append(result)
                outputs.pop(task.name, None)
                outputs[task.name] = result.output
                yield TaskFinished(**header(), result=result)
                if attempt.out_of_time:
                    status = ExecutionStatus.TIMED_OUT
                    error = attempt.error
                    break

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
            # The caller cancelled, went away, or its deadline passed: record
            # which, and let the cancellation propagate.
            ended = (
                ExecutionStatus.TIMED_OUT
                if loop.time() >= deadline - _DEADLINE_TOLERANCE
                else ExecutionStatus.CANCELLED
            )
            logger.info(
                "execution %s of flow %r %s after %d task runs",
                execution_id,
                flow.id,
                ended.value,
                len(results),
                extra={"execution_id": execution_id, "flow_id": flow.id, "status": ended.value},
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
            time_limit=plan.time_limit if status is ExecutionStatus.TIMED_OUT else None,
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

    async def _attempt(
        self, task: Task, ctx: TaskContext, deadline: float, time_limit: TimeLimit
    ) -> _Attempt:
        """Runs one attempt of `task`, bounded by its timeout and the execution's deadline."""
        registered = self._registry.get(task.type)
        assert registered is not None  # check_flow rejected unknown types
        loop = asyncio.get_running_loop()
        attempt_deadline = deadline
        if task.timeout is not None:
            attempt_deadline = min(deadline, loop.time() + task.timeout.total_seconds())
        try:
            async with asyncio.timeout_at(attempt_deadline):
                returned: TaskOutput
                if registered.is_async:
                    returned = await registered.function(ctx)  # type: ignore[misc]
                else:
                    # A sync task may block; in a worker thread it blocks only
                    # itself. At a deadline its result is abandoned.
                    returned = await loop.run_in_executor(self._executor, registered.function, ctx)  # type: ignore[arg-type]
            return self._checked_output(returned)
        except TaskFailure as failure:
            output = failure.output if json_problem(failure.output) is None else {}
            return _Attempt(output, str(failure) or "task failed", failure.error_type)
        except TimeoutError:
            if attempt_deadline < deadline:
                assert task.timeout is not None
                return _Attempt(
                    {}, f"attempt timed out after {_seconds(task.timeout)}", TASK_TIMEOUT
                )
            return _Attempt(
                {},
                f"cancelled: {_out_of_time(time_limit, 'while it ran')}",
                "DeadlineExceeded",
                out_of_time=True,
            )
        except Exception as exc:
            # A task's own bug is that task's failure, never the server's.
            logger.warning(
                "task %r raised in execution %s",
                task.name,
                ctx.execution_id,
                exc_info=True,
                extra={"execution_id": ctx.execution_id, "task": task.name},
            )
            return _Attempt({}, f"{type(exc).__name__}: {exc}", type(exc).__name__)

    def _checked_output(self, returned: TaskOutput) -> _Attempt:
        if returned is None:
            return _Attempt({})
        if not isinstance(returned, Mapping):
            return _Attempt(
                {},
                f"task returned a {type(returned).__name__}; it must return an object or None",
                "InvalidOutput",
            )
        problem = json_problem(returned)
        if problem:
            return _Attempt({}, f"task output is not JSON-like: {problem}", "InvalidOutput")
        size = len(json.dumps(returned, separators=(",", ":")).encode())
        if size > self._limits.max_output_bytes:
            return _Attempt(
                {},
                f"task output is {size} bytes, above the limit of "
                f"{self._limits.max_output_bytes} (max_output_bytes)",
                "OutputTooLarge",
            )
        return _Attempt(returned)


_LIMIT_NAMES = {
    "deadline": "the caller's deadline",
    "flow.timeout": "the flow's timeout",
    "max_run_time": "the server's maximum run time (max_run_time)",
}


def _out_of_time(limit: TimeLimit, when: str) -> str:
    return f"deadline exceeded: {_LIMIT_NAMES[limit.name]} of {limit.seconds:g} s passed {when}"


def _seconds(duration: timedelta) -> str:
    return f"{duration.total_seconds():g} s"
