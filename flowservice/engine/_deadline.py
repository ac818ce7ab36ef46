"""One timer per execution that interrupts whatever the engine awaits when time is up.

`asyncio.timeout` around each attempt would arm and disarm a timer per task
step, a third of the engine's cost on a long flow of quick tasks. Instead,
each execution has one timer from its start. When it fires while the engine
is awaiting inside `interruptible()` (a task attempt, a retry delay), it
cancels that await, exactly as `asyncio.timeout` would, and the region
raises `DeadlinePassed`; when it fires elsewhere it only marks the deadline
as passed, and the engine checks that before starting the next task.

The timers of one engine's executions wait in one heap (`Deadlines`), with
a single loop timer armed for the earliest: an asyncio `TimerHandle` per
execution, with its bound callback and its copy of the context, held some
250 bytes for as long as the execution waited (5590 -> 5342 bytes of Python
per sleeping Execute in-process, by tracemalloc), and arming and cancelling
one took 2.8 us against 0.8 for a push on the heap and its discard.

The timer knows which limit it stands for (`TimeLimit`), so it says itself
why an execution ran out of time.

`stop` ends an execution the same way before its time (CancelExecution):
the await it interrupts is cancelled at once, and the execution still
yields its last event, with status CANCELLED instead of TIMED_OUT.
"""

from __future__ import annotations

import asyncio
import heapq
from types import TracebackType

from flowservice.models import ExecutionStatus, Flow, TimeLimit

__all__ = [
    "CANCELLED",
    "DEADLINE_EXCEEDED",
    "DeadlinePassed",
    "DeadlineTimer",
    "Deadlines",
    "earliest_limit",
]

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
    """The deadline of one execution: `limit` from now, on its engine's `Deadlines`."""

    __slots__ = ("_interrupted", "_loop", "_queue", "_task", "limit", "passed", "stopped", "when")

    def __init__(self, limit: TimeLimit, deadlines: Deadlines, elapsed: float = 0.0) -> None:
        """Queued in `deadlines` (its engine's); `elapsed`: seconds of the limit spent
        already (a resumed execution's, before)."""
        self._loop = loop = deadlines.loop
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
        # The heap it waits in; None once it fired or was cancelled (or had passed).
        self._queue: Deadlines | None = None
        if not self.passed:
            self._queue = deadlines
            deadlines.add(self)

    def __lt__(self, other: DeadlineTimer) -> bool:
        return self.when < other.when  # (the heap's order)

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
        queue = self._queue
        if queue is not None:
            self._queue = None
            queue.discard()

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


class Deadlines:
    """The timers of one engine's executions on its event loop, earliest first, and
    the one loop timer armed for the earliest.

    A cancelled timer stays in the heap until it comes up or the heap is
    rebuilt, as asyncio does with its own: the heap is rebuilt when more than
    half of it (and more than `_DEAD_KEPT`) is cancelled. The loop timer
    stays armed when no timer is live (it fires, finds nothing, and is not
    armed again): arming it for each execution of a server that runs one at
    a time would cost what this saves.
    """

    __slots__ = ("_armed", "_handle", "_heap", "_live", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        """The event loop whose clock the deadlines are on, and that fires them."""
        self._heap: list[DeadlineTimer] = []
        self._live = 0  # timers in the heap that are neither fired nor cancelled
        self._handle: asyncio.TimerHandle | None = None
        self._armed = 0.0  # when the loop timer fires

    def add(self, timer: DeadlineTimer) -> None:
        """Queues `timer` (it has not passed)."""
        heapq.heappush(self._heap, timer)
        self._live += 1
        if self._handle is None or timer.when < self._armed:
            self._arm(timer.when)

    def discard(self) -> None:
        """One queued timer was cancelled (it stays in the heap, dead, for now)."""
        self._live -= 1
        if len(self._heap) > 2 * self._live + _DEAD_KEPT:
            self._heap = [timer for timer in self._heap if timer._queue is not None]
            heapq.heapify(self._heap)

    def _arm(self, when: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._armed = when
        self._handle = self.loop.call_at(when, self._fire_due)

    def _fire_due(self) -> None:
        """Fires every timer due by now: those up to when the loop timer was
        armed for (the loop judged it due), and any later that are due too."""
        self._handle = None
        heap = self._heap
        due = max(self.loop.time(), self._armed)
        while heap and heap[0].when <= due:
            timer = heapq.heappop(heap)
            if timer._queue is not None:
                timer._queue = None
                self._live -= 1
                timer._fire()
        while heap and heap[0]._queue is None:
            heapq.heappop(heap)
        if heap:
            self._arm(heap[0].when)


_DEAD_KEPT = 64
"""Cancelled timers a heap may hold beyond its live ones before it is rebuilt."""
