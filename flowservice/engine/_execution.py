"""One execution of a plan: its state, and the loop that yields its events.

`Execution.events` is the one generator: it holds only the parts that yield
(each layer of generator would cost a hop per event). The work between the
yields is in plain methods named for what they do: `_admit` a step,
`_attempt` a task, `_record` its result (deciding where the flow goes first,
so a result is built once), `_route` to the next task, `_summary` at the end.
A step produces two events and one `TaskResult`, the same object in its
`TaskFinished` event and in the summary.

A resumed execution (`Resumption`: an execution another process began,
taken over from the history) runs in the same loop: `_restore` puts the
finished runs' results back where `_record` would have put them, and the
loop starts with the route after the last of them, with the sequence and
the step numbers where they stopped. No `ExecutionStarted` again: the
history has it.

An execution cancelled while it awaits a task attempt or a retry delay
(`Admission.cancel`, which `Engine.cancel` asks) ends like one whose
deadline passed: the interrupted run's `TaskFinished` (error type
`Cancelled`), then `ExecutionFinished` with status CANCELLED.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any

from flowservice._quick_init import quick_new
from flowservice.engine._attempts import Attempt, AttemptRunner
from flowservice.engine._deadline import DeadlinePassed, Deadlines, DeadlineTimer
from flowservice.engine._plan import Plan
from flowservice.engine._retry import retry_delay, should_retry
from flowservice.engine._scope import ExpressionBudgetSpent, Scope
from flowservice.engine.routing import decide, stops, unrouted_next
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
from flowservice.expressions import CompiledExpression, ExpressionError
from flowservice.json_values import NotJsonError, to_json
from flowservice.limits import Limits
from flowservice.models import (
    Decision,
    ExecutionStatus,
    ExecutionSummary,
    Task,
    TaskOutcome,
    TaskResult,
    TaskStub,
    TimeLimit,
)
from flowservice.observer import NullObserver, Observer
from flowservice.tasks import TaskContext

__all__ = ["Admission", "Execution", "Resumption"]

# The name log filters and the README know, from before the engine was a package.
logger = logging.getLogger("flowservice.execution")

# grpc cancels a handler at the caller's deadline by its own timer, which may
# fire a moment before ours; a cancellation this close to the deadline is the
# deadline, not the caller going away.
_DEADLINE_TOLERANCE = 0.05

# Tasks that return at once never give the event loop up: past this many
# seconds without a pause, the loop is given a turn (health checks, other calls).
_MAX_HOLD = 0.005

_NO_INPUTS: Mapping[str, Any] = {}
"""The inputs of a task without an input mapping: one empty dict, never written, for all."""

# The records each step builds, built without `type.__call__` (`quick_new`).
_new_task_started = quick_new(TaskStarted)
_new_context = quick_new(TaskContext)
_new_result = quick_new(TaskResult)
_new_task_finished = quick_new(TaskFinished)
_new_condition_evaluated = quick_new(ConditionEvaluated)

RESULTS_TOO_LARGE = "ResultsTooLarge"
"""The error type of the task run whose output took the execution past `max_results_bytes`."""


class Admission:
    """Counts executions in progress and refuses new ones past the limit; cancels one by id."""

    __slots__ = ("_deadlines", "_timers", "limit", "running")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        """The most executions at once."""
        self.running = 0
        """Executions in progress."""
        self._timers: dict[str, DeadlineTimer] = {}  # execution id -> its timer (to `stop` it)
        self._deadlines: Deadlines | None = None

    def deadlines(self) -> Deadlines:
        """The heap of the deadlines of the executions on the running loop (one engine
        runs on one loop; on another, later, it starts a heap there)."""
        loop = asyncio.get_running_loop()
        if self._deadlines is None or self._deadlines.loop is not loop:
            self._deadlines = Deadlines(loop)
        return self._deadlines

    def enter(self) -> None:
        """Admits one execution; `TooManyExecutionsError` when at the limit."""
        if self.running >= self.limit:
            raise TooManyExecutionsError(self.limit)
        self.running += 1

    def stoppable(self, execution_id: str, timer: DeadlineTimer) -> None:
        """The admitted execution `execution_id` is ended early by `timer.stop` (see `cancel`)."""
        self._timers[execution_id] = timer

    def leave(self, execution_id: str) -> None:
        """One execution ended."""
        self.running -= 1
        self._timers.pop(execution_id, None)

    def cancel(self, execution_id: str) -> bool:
        """Ends the execution CANCELLED if it awaits a task attempt or a retry delay now.

        False when no execution by that id runs here or it awaits nothing of
        its own now (`DeadlineTimer.stop`).
        """
        timer = self._timers.get(execution_id)
        return timer is not None and timer.stop()


class _Stop(Exception):
    """Ends an execution early with a status, an error and its type."""

    def __init__(
        self, status: ExecutionStatus, error: str, error_type: str, failed_task: str = ""
    ) -> None:
        self.status = status
        self.error = error
        self.error_type = error_type
        self.failed_task = failed_task


_COMPLETED = _Stop(ExecutionStatus.COMPLETED, "", "")


@dataclass(frozen=True, slots=True)
class Resumption:
    """How far an interrupted execution got, from its history: where `Engine.run` goes on."""

    execution_id: str
    """Its id, kept: the idempotency keys of its task runs derive from it."""
    started_at: datetime
    """When it first started (UTC): its time limit counts from then."""
    last_sequence: int
    """The sequence of its last stored event; the next event gets the one after."""
    results: tuple[TaskResult, ...]
    """The results of the task runs that finished, in order (their `TaskFinished`
    events), each with the routing decision taken after it. The decision's
    `ConditionEvaluated` counts as stored with its `TaskFinished` (a history
    implies it: flowservice.api.journal), so a resumed run never emits one."""


@dataclass(slots=True)
class Execution:
    """One run of a plan with one request's input and stubs; `events()` runs it."""

    plan: Plan
    execution_id: str
    time_limit: TimeLimit
    flow_input: Mapping[str, Any]
    stubs: Mapping[str, TaskStub]
    limits: Limits
    admission: Admission
    attempts: AttemptRunner
    observer: Observer
    clock: Callable[[], datetime]
    sleep: Callable[[float], Awaitable[None]]
    rng: random.Random
    resumed: Resumption | None = None
    """Set when this continues an execution begun elsewhere (see the module docstring)."""
    _sequence: int = 0
    _results: list[TaskResult] = field(default_factory=list)
    # The latest run per task, in the order they last ran; tasks read it
    # through a read-only view, only the engine writes it.
    _latest: dict[str, TaskResult] = field(default_factory=dict)
    _scope: Scope | None = None
    _results_bytes: int = 0
    _held_since: float = 0.0
    _step_started: float = 0.0  # perf_counter() when the current step started
    _pending: _Stop | None = None  # a stop found while recording, raised after TaskFinished
    _latest_view: Mapping[str, TaskResult] = field(init=False)  # what tasks read of `_latest`
    _unwatched: bool = field(init=False)  # the observer is the `NullObserver`

    def __post_init__(self) -> None:
        self._latest_view = MappingProxyType(self._latest)
        self._unwatched = isinstance(self.observer, NullObserver)

    def _emit(self, event: Event) -> Event:
        self.observer.event(event)
        return event

    def _next(self) -> int:
        self._sequence += 1
        return self._sequence

    async def events(self) -> AsyncGenerator[Event, None]:
        """Runs the execution, yielding its events; the last is `ExecutionFinished`."""
        self.admission.enter()
        execution_id = self.execution_id
        started_at, started, deadline = self._begin()
        ended = False
        # Nobody watching costs nothing: no call per event, no context per attempt.
        emit = _unchanged if self._unwatched else self._emit
        try:
            self.admission.stoppable(execution_id, deadline)
            with self.observer.execution(self.plan.flow, execution_id):
                if self.resumed is None or not self.resumed.last_sequence:
                    # (A resumed execution whose first event was never stored gets it now.)
                    yield emit(self._execution_started(started_at))
                end = _COMPLETED
                try:
                    last = self._restore_all()
                    current = self.plan.flow.start_task if last is None else self._route(last)
                    while current is not None:
                        if self._held_too_long():
                            await asyncio.sleep(0)  # a turn for health checks and other calls
                        task_started, task, params, inputs = self._start(current, deadline)
                        yield emit(task_started)
                        step = task_started.step
                        stub = self.stubs.get(task.name) if self.stubs else None
                        number = 1
                        if stub is not None:
                            attempt = self.attempts.stubbed(stub)
                        else:
                            attempt = await self._attempt(task, params, step, number, deadline)
                        while attempt.error and (
                            retrying := self._retrying(task, stub, attempt, number)
                        ):
                            yield emit(retrying)
                            attempt = await self._wait_to_retry(task, attempt, retrying, deadline)
                            if attempt.deadline_error:
                                break
                            number += 1
                            attempt = await self._attempt(task, params, step, number, deadline)
                        result = self._record(
                            task_started, task, attempt, number, stub, inputs, deadline
                        )
                        # Its time is its start plus its duration, exactly: the history
                        # may keep only the result and derive the event from it. (No
                        # local keeps the event: the execution holds less while it waits.)
                        # Deciding takes no time worth a clock read: the decision, if
                        # any, shares that time.
                        finished_at = result.started_at + result.duration
                        yield emit(
                            _new_task_finished(execution_id, self._next(), finished_at, result)
                        )
                        if result.decision is not None:
                            yield emit(
                                _new_condition_evaluated(
                                    execution_id, self._next(), finished_at, result.decision
                                )
                            )
                        current = self._route(result)
                except _Stop as stop:
                    end = stop
                event = emit(self._execution_finished(end, started_at, started))
                ended = True
                yield event
        except (asyncio.CancelledError, GeneratorExit):
            # The caller cancelled, went away, or its deadline passed: record
            # which, and let the cancellation propagate.
            if not ended:
                self._log_cancelled(deadline)
            raise
        finally:
            deadline.cancel()
            self.admission.leave(execution_id)

    def _begin(self) -> tuple[datetime, float, DeadlineTimer]:
        """When the execution started (UTC, and `perf_counter`), and its deadline's timer.

        A resumed execution started when it first did: its time limit counts from then.
        """
        started_at, started = self.clock(), time.perf_counter()
        if self.resumed is not None:
            elapsed = max((started_at - self.resumed.started_at).total_seconds(), 0.0)
            started_at, started = self.resumed.started_at, started - elapsed
        elapsed = time.perf_counter() - started
        return (
            started_at,
            started,
            DeadlineTimer(self.time_limit, self.admission.deadlines(), elapsed),
        )

    def _execution_finished(
        self, end: _Stop, started_at: datetime, started: float
    ) -> ExecutionFinished:
        summary = self._summary(end, started_at, started)
        self._log_end(summary.status)
        return ExecutionFinished(self.execution_id, self._next(), self.clock(), summary)

    def _execution_started(self, started_at: datetime) -> ExecutionStarted:
        flow = self.plan.flow
        return ExecutionStarted(
            self.execution_id, self._next(), started_at, flow.id, flow.name, flow.start_task
        )

    def _restore_all(self) -> TaskResult | None:
        """Sets the execution up; a resumed one's last finished run, the flow routes from.

        None: the flow runs from its start. Routing from the last run may
        end the flow (`_Stop`): its process died before its end was recorded.
        """
        if self.plan.uses_expressions:
            self._scope = Scope(self.flow_input, self.limits.max_expression_seconds)
        self._held_since = time.perf_counter()
        if self.resumed is None:
            return None
        self._sequence = max(self._sequence, self.resumed.last_sequence)
        for result in self.resumed.results:
            self._restore(result)
        return self._results[-1] if self._results else None

    def _restore(self, result: TaskResult) -> None:
        """Keeps a result from the history as `_record` kept it when the task ran.

        The stops `_record` found are found again: an output past the
        results budget, and a condition that could not decide (which the
        history shows as a result without a decision after a task with
        conditions; deciding again fails again).
        """
        if self._scope is not None:
            self._scope.record(
                result.task, result.outcome, result.output, result.attempts, result.error
            )
        self._results_bytes += len(json.dumps(result.output, separators=(",", ":")).encode())
        if result.error_type == RESULTS_TOO_LARGE:
            self._pending = _Stop(
                ExecutionStatus.FAILED,
                f"task {result.task!r} failed: {result.error}",
                RESULTS_TOO_LARGE,
                failed_task=result.task,
            )
        elif result.decision is None and self.plan.chains.get(result.task):
            decision = self._decide(result.task, result.outcome)
            if decision is not None:
                result = replace(result, decision=decision)
        self._results.append(result)
        self._latest.pop(result.task, None)
        self._latest[result.task] = result

    def _held_too_long(self) -> bool:
        """Whether the execution has run `_MAX_HOLD` seconds since it last gave the loop up.

        Not knowing when a task suspended, it counts from its last own pause:
        a pause costs one loop turn, so one each few milliseconds is nothing.
        """
        now = time.perf_counter()
        if now - self._held_since <= _MAX_HOLD:
            return False
        self._held_since = now
        return True

    def _start(
        self, name: str, deadline: DeadlineTimer
    ) -> tuple[TaskStarted, Task, Mapping[str, Any], Mapping[str, Any]]:
        """Starts the run of task `name`: its event, the task, its params and mapped inputs.

        `_Stop` when it may not run (the step limit, the deadline, a mapping that fails).
        """
        results = self._results
        if len(results) >= self.plan.max_steps:
            raise _Stop(
                ExecutionStatus.FAILED,
                f"step limit reached: the flow ran {self.plan.max_steps} tasks "
                f"(max_steps) and was stopped before running {name!r} again",
                "StepLimitReached",
            )
        if deadline.passed:
            raise _Stop(
                deadline.status,
                deadline.out_of_time(f"before task {name!r} could start"),
                deadline.error_type,
            )
        task = self.plan.tasks[name]
        mapping = self.plan.input_mappings.get(name)
        params: Mapping[str, Any] = task.params
        inputs: Mapping[str, Any] = _NO_INPUTS
        if mapping:
            inputs = self._inputs(task, mapping)
            params = {**params, **inputs}
        self._step_started = time.perf_counter()
        started = _new_task_started(
            self.execution_id, self._next(), self.clock(), name, task.type, len(results) + 1
        )
        return started, task, params, inputs

    def _attempt(
        self,
        task: Task,
        params: Mapping[str, Any],
        step: int,
        number: int,
        deadline: DeadlineTimer,
    ) -> Awaitable[Attempt]:
        """Attempt `number` of `task` at `step`, to await.

        The runner's coroutine itself, unless an observer watches: each layer
        of coroutine would cost a frame per step, and memory while the task runs.
        """
        ctx = _new_context(
            self.execution_id,
            self.plan.flow.id,
            task,
            params,
            self.flow_input,
            step,
            number,
            self._latest_view,
            deadline.when if task.timeout is None else _attempt_deadline(task, deadline),
        )
        run = self.attempts.run(self.plan.registered[task.type], ctx, deadline)
        if self._unwatched:
            return run
        return self._observed(run, task, step, number)

    async def _observed(
        self, run: Awaitable[Attempt], task: Task, step: int, number: int
    ) -> Attempt:
        with self.observer.attempt(task, step, number):
            return await run

    def _retrying(
        self, task: Task, stub: TaskStub | None, attempt: Attempt, number: int
    ) -> TaskRetrying | None:
        """The event announcing a retry of `attempt` (it failed), or None when none follows."""
        if (
            stub is not None
            or attempt.deadline_error
            or not attempt.retryable
            or not should_retry(task.retry, number, attempt.error_type)
        ):
            return None
        return TaskRetrying(
            self.execution_id,
            self._next(),
            self.clock(),
            task.name,
            number,
            attempt.error,
            attempt.error_type,
            retry_delay(task.retry, number, self.rng, attempt.retry_after),
        )

    async def _wait_to_retry(
        self, task: Task, attempt: Attempt, retrying: TaskRetrying, deadline: DeadlineTimer
    ) -> Attempt:
        """Sleeps the retry's delay; `attempt` made out of time if the deadline cuts it."""
        try:
            with deadline.interruptible():
                await self.sleep(retrying.delay.total_seconds())
        except DeadlinePassed:
            why = deadline.out_of_time(f"while {task.name!r} was waiting to retry")
            return Attempt(
                attempt.output, why, deadline.error_type, deadline_error=why, size=attempt.size
            )
        return attempt

    def _record(
        self,
        started: TaskStarted,
        task: Task,
        attempt: Attempt,
        attempts: int,
        stub: TaskStub | None,
        inputs: Mapping[str, Any],
        deadline: DeadlineTimer,
    ) -> TaskResult:
        """Keeps the result of a finished run, with the decision routing after it.

        A stop this run causes (its deadline or a cancel, its output past `max_results_bytes`,
        a condition that cannot be evaluated) is kept in `_pending`, raised by
        `_route` once `TaskFinished` is out.
        """
        if attempt.deadline_error:
            self._pending = _Stop(deadline.status, attempt.deadline_error, deadline.error_type)
        if attempt.size:  # (no output, no change)
            attempt = self._within_results_budget(task.name, attempt)
        outcome = TaskOutcome.FAILURE if attempt.error else TaskOutcome.SUCCESS
        if self._scope is not None:
            self._scope.record(task.name, outcome, attempt.output, attempts, attempt.error)
        decision = None if self._pending else self._decide(task.name, outcome)
        result = _new_result(
            task.name,
            outcome,
            started.step,
            started.time,
            timedelta(0, time.perf_counter() - self._step_started),  # (seconds=: 1.5 times slower)
            attempt.output,
            attempt.error,
            attempt.error_type,
            attempts,
            stub is not None,
            inputs,
            decision,
        )
        self._results.append(result)
        self._latest.pop(task.name, None)
        self._latest[task.name] = result
        return result

    def _within_results_budget(self, task_name: str, attempt: Attempt) -> Attempt:
        """`attempt`, or a failure when its output takes the results past `max_results_bytes`."""
        self._results_bytes += attempt.size
        limit = self.limits.max_results_bytes
        if self._results_bytes <= limit:
            return attempt
        error = (
            f"the execution's task outputs reached {self._results_bytes} bytes, above the "
            f"limit of {limit} (max_results_bytes); this output was dropped"
        )
        self._results_bytes -= attempt.size
        self._pending = _Stop(
            ExecutionStatus.FAILED,
            f"task {task_name!r} failed: {error}",
            RESULTS_TOO_LARGE,
            failed_task=task_name,
        )
        return Attempt(error=error, error_type=RESULTS_TOO_LARGE)

    def _decide(self, task_name: str, outcome: TaskOutcome) -> Decision | None:
        """The decision of `task_name`'s conditions, if it has any."""
        plan = self.plan
        chain = plan.chains.get(task_name)
        if not chain:
            return None
        if outcome is TaskOutcome.SUCCESS:
            known = plan.success_decisions.get(task_name)
            if known is not None:
                return known
        try:
            return decide(
                chain, plan.flow.conditions, plan.expressions, task_name, outcome, self._scope
            )
        except ExpressionBudgetSpent as exc:
            self._pending = _Stop(ExecutionStatus.FAILED, str(exc), exc.error_type)
        except ExpressionError as exc:
            self._pending = _Stop(ExecutionStatus.FAILED, str(exc), "ExpressionError")
        return None

    def _route(self, result: TaskResult) -> str | None:
        """The task that runs after `result`, None when the flow completes; `_Stop` otherwise."""
        if self._pending is not None:
            raise self._pending
        if result.decision is not None:
            target = result.decision.next_task
            following = None if stops(target) else target
        else:
            position = self.plan.positions[result.task]
            succeeded = result.outcome is TaskOutcome.SUCCESS
            following = unrouted_next(self.plan.names, position, succeeded)
        if following is None and result.outcome is TaskOutcome.FAILURE:
            raise _Stop(
                ExecutionStatus.FAILED,
                f"task {result.task!r} failed: {result.error}",
                result.error_type,
                failed_task=result.task,
            )
        return following

    def _inputs(
        self, task: Task, mapping: tuple[tuple[str, CompiledExpression], ...]
    ) -> dict[str, Any]:
        """The params `task`'s input mapping produces now; `_Stop` when one fails."""
        assert self._scope is not None
        variables = self._scope.variables(self._results[-1].task if self._results else None)
        inputs: dict[str, Any] = {}
        for name, expression in mapping:
            try:
                inputs[name] = to_json(self._scope.evaluate(expression, variables))
            except ExpressionBudgetSpent as exc:
                raise _Stop(ExecutionStatus.FAILED, str(exc), exc.error_type) from None
            except (ExpressionError, NotJsonError) as exc:
                raise _Stop(
                    ExecutionStatus.FAILED,
                    f"input_mapping {name!r} of task {task.name!r} could not be evaluated: {exc}",
                    "ExpressionError",
                ) from None
        return inputs

    def _summary(self, end: _Stop, started_at: datetime, started: float) -> ExecutionSummary:
        results = self._results
        status, error, error_type = end.status, end.error, end.error_type
        output: Any = results[-1].output if results else None
        if status is ExecutionStatus.CANCELLED:
            output = None  # it never got to its end (nor does a cancel built from the history)
        elif self.plan.output is not None and status is not ExecutionStatus.TIMED_OUT:
            assert self._scope is not None
            try:
                last = results[-1].task if results else None
                output = to_json(
                    self._scope.evaluate(self.plan.output, self._scope.variables(last))
                )
            except (ExpressionError, NotJsonError) as exc:
                output = None
                if status is ExecutionStatus.COMPLETED:
                    status = ExecutionStatus.FAILED
                    error = f"flow.output could not be evaluated: {exc}"
                    error_type = (
                        exc.error_type
                        if isinstance(exc, ExpressionBudgetSpent)
                        else "ExpressionError"
                    )
        return ExecutionSummary(
            execution_id=self.execution_id,
            flow_id=self.plan.flow.id,
            status=status,
            executed_tasks=tuple(result.task for result in results),
            task_results=tuple(results),
            started_at=started_at,
            duration=timedelta(seconds=time.perf_counter() - started),
            failed_task=end.failed_task,
            error=error,
            time_limit=self.time_limit if status is ExecutionStatus.TIMED_OUT else None,
            output=output,
            error_type=error_type,
        )

    def _log_cancelled(self, deadline: DeadlineTimer) -> None:
        late = asyncio.get_running_loop().time() >= deadline.when - _DEADLINE_TOLERANCE
        self._log_end(ExecutionStatus.TIMED_OUT if late else ExecutionStatus.CANCELLED)

    def _log_end(self, status: ExecutionStatus) -> None:
        # A completed execution is the common case and metrics count it; a log
        # line for each would cost more than the rest of a small flow's run.
        level = logging.DEBUG if status is ExecutionStatus.COMPLETED else logging.INFO
        if not logger.isEnabledFor(level):
            return
        flow_id = self.plan.flow.id
        logger.log(
            level,
            "execution %s of flow %r %s after %d task runs",
            self.execution_id,
            flow_id,
            status.value,
            len(self._results),
            extra={"execution_id": self.execution_id, "flow_id": flow_id, "status": status.value},
        )


def _attempt_deadline(task: Task, deadline: DeadlineTimer) -> float:
    """When an attempt of `task`, which has a timeout, must end (loop clock):
    its timeout or the execution's deadline, the earlier."""
    assert task.timeout is not None
    return min(deadline.when, asyncio.get_running_loop().time() + task.timeout.total_seconds())


def _unchanged(event: Event) -> Event:
    """What emitting an event is when no observer watches."""
    return event
