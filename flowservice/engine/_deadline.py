"""One timer per execution that interrupts whatever the engine awaits when time is up.

`asyncio.timeout` around each attempt would arm and disarm a timer per task
step, a third of the engine's cost on a long flow of quick tasks. Instead,
each execution arms one timer at its start. When it fires while the engine
is awaiting inside `interruptible()` (a task attempt, a retry delay), it
cancels that await, exactly as `asyncio.timeout` would, and the region
raises `DeadlinePassed`; when it fires elsewhere it only marks the deadline
as passed, and the engine checks that before starting the next task.

The timer knows which limit it stands for (`TimeLimit`), so it says itself
why an execution ran out of time.

`stop` ends an execution the same way before its time (CancelExecution):
the await it interrupts is cancelled at once, and the execution still
yields its last event, with status CANCELLED instead of TIMED_OUT.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

from flowservice.models import ExecutionStatus, Flow, TimeLimit

__all__ = ["CANCELLED", "DEADLINE_EXCEEDED", "DeadlinePassed", "DeadlineTimer", "earliest_limit"]

DEADLINE_EXCEEDED = "DeadlineExceeded"
"""The error type of an attempt cut short by the execution's deadline."""
CANCELLED = "Cancelled"
"""The error type of an attempt, and of an execution, cut short by `DeadlineTimer.stop`."""

_LIMIT_NAMES = {
    "deadline": "the caller's deadline",
    "flow.timeout": "the flow's timeout",
    "max_run_time": "the server's maximum run time (max_run_time)",
}


def earliest_limit(flow: Flow, server_limit: TimeLimit, time_allowed: float | None) -> TimeLimit:
    """The earliest of the time limits on one run of `flow`.

    They are the server's `max_run_time` (`server_limit`, one object for all
    runs), the flow's `timeout` and what is left of the caller's deadline
    (`time_allowed` seconds, None: none).
    """
    earliest = server_limit
    if flow.timeout is not None and flow.timeout.total_seconds() < earliest.seconds:
        earliest = TimeLimit("flow.timeout", flow.timeout.total_seconds())
    if time_allowed is not None and max(time_allowed, 0.0) < earliest.seconds:
        earliest = TimeLimit("deadline", max(time_allowed, 0.0))
    return earliest


class DeadlinePassed(Exception):
    """Raised out of an `interruptible()` region cut short by the deadline (or a stop)."""


class DeadlineTimer:
    """The deadline of one execution: `limit` from now, armed on the running loop."""

    __slots__ = ("_handle", "_interrupted", "_loop", "_task", "limit", "passed", "stopped", "when")

    def __init__(self, limit: TimeLimit, elapsed: float = 0.0) -> None:
        """`elapsed`: seconds of the limit spent already (a resumed execution's, before)."""
        self._loop = loop = asyncio.get_running_loop()
        self.limit = limit
        """The time limit it stands for."""
        self.when = loop.time() + limit.seconds - max(elapsed, 0.0)
        """The deadline, on the loop's clock (`loop.time()`)."""
        self.passed = self.when <= loop.time()
        """Whether the deadline has passed (or `stop` ended the execution)."""
        self.stopped = False
        """Whether `stop` ended the execution: it ends CANCELLED, not TIMED_OUT."""
        self._task: asyncio.Task[object] | None = None
        self._interrupted = False
        self._handle = loop.call_at(self.when, self._fire)

    @property
    def status(self) -> ExecutionStatus:
        """How an execution this timer cut short ends."""
        return ExecutionStatus.CANCELLED if self.stopped else ExecutionStatus.TIMED_OUT

    @property
    def error_type(self) -> str:
        """The error type of what this timer cut short."""
        return CANCELLED if self.stopped else DEADLINE_EXCEEDED

    def out_of_time(self, when: str) -> str:
        """The error of an execution stopped by this deadline `when` (`while task 'a' ran`)."""
        if self.stopped:
            return f"the execution was cancelled (CancelExecution) {when}"
        limit = self.limit
        return (
            f"deadline exceeded: {_LIMIT_NAMES[limit.name]} of {limit.seconds:.3g} s passed {when}"
        )

    def _fire(self) -> None:
        if self.passed:
            return  # stopped already
        self.passed = True
        if self._task is not None:
            self._interrupted = True
            self._task.cancel()

    def stop(self) -> bool:
        """Ends the execution now, CANCELLED: interrupts the region it awaits in, as the
        deadline would, and every later region raises at once.

        Only while the execution awaits inside a region (a task attempt, a
        retry delay): otherwise (its consumer has it, between two events)
        it does nothing and returns False, and the caller cancels the
        execution's task instead.
        """
        if self._task is None or self.passed:
            return False
        self.passed = self.stopped = self._interrupted = True
        self._task.cancel()
        return True

    def cancel(self) -> None:
        """Disarms the timer (the execution ended)."""
        self._handle.cancel()

    def interruptible(self) -> DeadlineTimer:
        """A region (`with timer.interruptible():`) the deadline may cut short.

        The region raises `DeadlinePassed` when the deadline passes during it
        (or has passed already); any other cancellation propagates unchanged.
        """
        return self

    def __enter__(self) -> None:
        if self.passed:
            raise DeadlinePassed
        self._task = asyncio.current_task(self._loop)  # (a third of its cost without the loop)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        task, interrupted = self._task, self._interrupted
        self._task = None
        self._interrupted = False
        if (
            exc_type is asyncio.CancelledError
            and interrupted
            and task is not None
            and task.uncancel() == 0
        ):
            raise DeadlinePassed from None
