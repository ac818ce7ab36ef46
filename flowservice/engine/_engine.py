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
import functools
import random
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from flowservice.engine._analysis import flow_warnings
from flowservice.engine._attempts import AttemptRunner
from flowservice.engine._deadline import earliest_limit
from flowservice.engine._execution import Admission, Execution, Resumption
from flowservice.engine._plan import Plan, PlanCache, compile_flow
from flowservice.engine._validation import validate
from flowservice.errors import InvalidFlowError, Violation
from flowservice.events import Event, ExecutionFinished
from flowservice.limits import Limits
from flowservice.models import ExecutionSummary, Flow, TaskStub, TimeLimit
from flowservice.observer import NullObserver, Observer
from flowservice.tasks import TaskRegistry

__all__ = ["Engine", "Resumption", "ValidationReport"]


_utc_now = functools.partial(datetime.now, UTC)  # (a partial calls it without a Python frame)


def _new_execution_id() -> str:
    return str(uuid.uuid4())


_NO_STUBS: Mapping[str, TaskStub] = MappingProxyType({})
"""The stubs of a run without any: one empty mapping for all."""


@dataclass(frozen=True, slots=True)
class ValidationReport:
    """What `Engine.validate` found: blocking errors and non-blocking warnings."""

    errors: tuple[Violation, ...]
    """Problems that make a run fail with INVALID_ARGUMENT."""
    warnings: tuple[Violation, ...]
    """Suspicious parts that do not block a run."""


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
        self._admission = Admission(self._limits.max_concurrent_executions)
        self._server_limit = TimeLimit("max_run_time", self._limits.max_run_time)
        self.plans = PlanCache(self._limits.max_cached_plans)
        """The plans of the flows run last (`run`'s `flow_key`); its counts feed the metrics."""

    @property
    def running(self) -> int:
        """How many executions are in progress."""
        return self._admission.running

    @property
    def capacity(self) -> int:
        """How many more executions it admits now (`max_concurrent_executions` less `running`)."""
        return max(self._admission.limit - self._admission.running, 0)

    def cancel(self, execution_id: str) -> bool:
        """Ends the running execution CANCELLED, with its last events; True when it does.

        The task attempt or retry delay it awaits is cancelled at once, as
        its deadline would cancel it: it yields the interrupted run's
        `TaskFinished` (error type `Cancelled`) and `ExecutionFinished`.
        False when no execution by that id runs here, or it awaits nothing
        of its own now (its consumer holds it between two events): the
        caller then cancels the task that iterates it.
        """
        return self._admission.cancel(execution_id)

    def close(self) -> None:
        """Releases the worker threads; sync tasks still running are abandoned."""
        self._attempts.close()

    async def aclose(self) -> None:
        """`close`, after the task implementations release what they hold (connections)."""
        await self._registry.aclose()
        self.close()

    def validate(
        self, flow: Flow, *, stubs: Mapping[str, TaskStub] | None = None
    ) -> ValidationReport:
        """The errors `run` would raise for `flow` and `stubs`, and warnings that would not."""
        validation = validate(flow, self._registry, self._limits, stubs)
        if validation.violations:
            return ValidationReport(validation.violations, ())
        plan = compile_flow(flow, validation.expressions, self._registry, self._limits)
        return ValidationReport((), tuple(flow_warnings(plan)))

    def run(
        self,
        flow: Flow | Callable[[], Flow],
        *,
        flow_input: Mapping[str, Any] | None = None,
        stubs: Mapping[str, TaskStub] | None = None,
        time_allowed: float | None = None,
        resume: Resumption | None = None,
        flow_key: bytes | None = None,
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

        `resume` continues an execution that began elsewhere (its process
        died) with the same flow, input and stubs: the tasks that finished
        are not run again, their results route the flow as they did, and
        the events go on from its last sequence, without `ExecutionStarted`.
        Its id, and so each task run's idempotency key, stays the same; its
        time limit counts from when it first started.

        `flow_key`, when given, identifies `flow` exactly (the API layer
        passes the flow message's serialized bytes): a run without stubs
        reuses the plan a flow of the same key compiled to (`plans`), and
        `flow` may then be a function that builds it, called only on a miss.
        Stubs change what is valid, so runs with stubs always compile.
        """
        stubs = stubs or _NO_STUBS
        plan = self._plan(flow, stubs, None if stubs else flow_key)
        execution = Execution(
            plan=plan,
            execution_id=self._new_execution_id() if resume is None else resume.execution_id,
            time_limit=earliest_limit(plan.flow, self._server_limit, time_allowed),
            flow_input=flow_input or {},
            stubs=stubs,
            limits=self._limits,
            admission=self._admission,
            attempts=self._attempts,
            observer=self._observer,
            clock=self._clock,
            sleep=self._sleep,
            rng=self._rng,
            resumed=resume,
        )
        return execution.events()

    def _plan(
        self, flow: Flow | Callable[[], Flow], stubs: Mapping[str, TaskStub], key: bytes | None
    ) -> Plan:
        """The plan of `flow` (kept by `key` unless None); `InvalidFlowError` when it is invalid."""
        if key is not None:
            cached = self.plans.get(key)
            if cached is not None:
                return cached
        if not isinstance(flow, Flow):
            flow = flow()
        validation = validate(flow, self._registry, self._limits, stubs)
        if validation.violations:
            raise InvalidFlowError(validation.violations)
        plan = compile_flow(flow, validation.expressions, self._registry, self._limits)
        if key is not None:
            self.plans.put(key, plan)
        return plan

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
        assert isinstance(last, ExecutionFinished)  # guaranteed by Execution.events
        return last.summary
