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
"""

from __future__ import annotations

import asyncio
from types import TracebackType

from flowservice.limits import Limits
from flowservice.models import Flow, TimeLimit

__all__ = ["DeadlinePassed", "DeadlineTimer", "earliest_limit"]

_LIMIT_NAMES = {
    "deadline": "the caller's deadline",
    "flow.timeout": "the flow's timeout",
    "max_run_time": "the server's maximum run time (max_run_time)",
}


def earliest_limit(flow: Flow, limits: Limits, time_allowed: float | None) -> TimeLimit:
    """The earliest of the time limits on one run of `flow`.

    They are the server's `max_run_time`, the flow's `timeout` and what is
    left of the caller's deadline (`time_allowed` seconds, None: none).
    """
    time_limits = [TimeLimit("max_run_time", limits.max_run_time)]
    if flow.timeout is not None:
        time_limits.append(TimeLimit("flow.timeout", flow.timeout.total_seconds()))
    if time_allowed is not None:
        time_limits.append(TimeLimit("deadline", max(time_allowed, 0.0)))
    return min(time_limits, key=lambda limit: limit.seconds)


class DeadlinePassed(Exception):
    """Raised out of an `interruptible()` region cut short by the deadline."""


class DeadlineTimer:
    """The deadline of one execution: `limit` from now, armed on the running loop."""

    __slots__ = ("_handle", "_interrupted", "_task", "limit", "passed", "when")

    def __init__(self, limit: TimeLimit, elapsed: float = 0.0) -> None:
        """`elapsed`: seconds of the limit spent already (a resumed execution's, before)."""
        loop = asyncio.get_running_loop()
        self.limit = limit
        """The time limit it stands for."""
        self.when = loop.time() + limit.seconds - max(elapsed, 0.0)
        """The deadline, on the loop's clock (`loop.time()`)."""
        self.passed = self.when <= loop.time()
        """Whether the deadline has passed."""
        self._task: asyncio.Task[object] | None = None
        self._interrupted = False
        self._handle = loop.call_at(self.when, self._fire)

    def out_of_time(self, when: str) -> str:
        """The error of an execution stopped by this deadline `when` (`while task 'a' ran`)."""
        limit = self.limit
        return (
            f"deadline exceeded: {_LIMIT_NAMES[limit.name]} of {limit.seconds:.3g} s passed {when}"
        )

    def _fire(self) -> None:
        self.passed = True
        if self._task is not None:
            self._interrupted = True
            self._task.cancel()

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
        self._task = asyncio.current_task()

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
