"""One timer per execution that interrupts whatever the engine awaits when time is up.

`asyncio.timeout` around each attempt would arm and disarm a timer per task
step, a third of the engine's cost on a long flow of quick tasks. Instead,
each execution arms one timer at its start. When it fires while the engine
is awaiting inside `interruptible()` (a task attempt, a retry delay), it
cancels that await, exactly as `asyncio.timeout` would, and the region
raises `DeadlinePassed`; when it fires elsewhere it only marks the deadline
as passed, and the engine checks that before starting the next task.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

__all__ = ["DeadlinePassed", "DeadlineTimer"]


class DeadlinePassed(Exception):
    """Raised out of an `interruptible()` region cut short by the deadline."""


class DeadlineTimer:
    """The deadline of one execution, at `when` on the event loop's clock."""

    __slots__ = ("_handle", "_interrupted", "_task", "passed", "when")

    def __init__(self, when: float) -> None:
        self.when = when
        """The deadline, on the loop's clock (`loop.time()`)."""
        self.passed = False
        """Whether the deadline has passed."""
        self._task: asyncio.Task[object] | None = None
        self._interrupted = False
        self._handle = asyncio.get_running_loop().call_at(when, self._fire)

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
