"""Worker queues shared by replicas: a task waits for a worker of any replica.

With several server processes on one database (docs/replicas.md), a worker
is connected to one of them, while an execution runs on whichever owns it.
`SharedDispatch` is the `Sharing` a replica's `Dispatcher` uses then: an
attempt that finds no worker free here is *offered* (put in the
`SharedQueue`, whose every change is announced to every replica); any
replica whose workers serve its queue and have credits free *takes* it and
hands it to a worker; the worker's result is written back and the owner,
told of it, *collects* it and ends the attempt. When the attempt ends
without a result (its timeout, the execution's deadline, a cancel), the
owner *withdraws* it and the replica holding it tells its worker.

The queue says what changed (`Change`), never a result itself: each
replica then reads what it needs. A replica that missed changes (its
listening connection broke) is told `RESYNC` and looks at everything it
waits for again: the offers it may take, the answers to its own offers,
and the tasks its workers hold, withdrawn or answered meanwhile (`missed`).

The offered assignment is opaque bytes that the API layer encoded
(`encode`) and that a taking replica pushes to its worker as it is.
Offers, withdrawals and answers run as tasks of their own: the dispatcher
never waits, and an attempt cancelled mid-offer is still withdrawn.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Collection, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from flowservice.dispatch import Assignment, Cancellation, Dispatcher, SharedTask, WorkResult

__all__ = [
    "ANSWERED",
    "LOST_CHECK_SECONDS",
    "OFFERED",
    "RESYNC",
    "SHARED_QUEUE_UNAVAILABLE",
    "WITHDRAWN",
    "Change",
    "SharedDispatch",
    "SharedQueue",
]

OFFERED = "offered"
"""A change: a task was offered on the queue `Change.key` names."""
ANSWERED = "answered"
"""A change: the task `Change.key` names has a result."""
WITHDRAWN = "withdrawn"
"""A change: its owner withdrew the task `Change.key` names (`deadline_passed` says why)."""
RESYNC = "resync"
"""A change: changes may have been missed; look at everything again."""
SHARED_QUEUE_UNAVAILABLE = "SharedQueueUnavailable"
"""The error type of an attempt that could not be offered (the database failed)."""

LOST_CHECK_SECONDS = 2.0
"""How often a replica whose tasks are offered looks for takers that went away."""

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Change:
    """What a `SharedQueue` announces to every replica."""

    kind: str
    """`OFFERED`, `ANSWERED`, `WITHDRAWN` or `RESYNC`."""
    key: str = ""
    """The queue (`OFFERED`) or the task id (`ANSWERED`, `WITHDRAWN`)."""
    deadline_passed: bool = False
    """`WITHDRAWN`: the attempt's time ran out, rather than its execution being cancelled."""


class SharedQueue(Protocol):
    """The storage of shared tasks: each a row with a state (PostgreSQL: `PostgresWorkQueue`)."""

    async def open(self) -> None:
        """Connects (on the running loop)."""

    async def put(self, task: SharedTask, deadline: datetime | None) -> None:
        """Offers `task` until `deadline` (wall time); announces `OFFERED`."""

    async def take(self, queues: dict[str, int]) -> list[SharedTask]:
        """Takes offered tasks, at most `queues[q]` of each queue q, oldest first.

        Replicas taking at once never take one task twice.
        """
        ...

    async def release(self, task_ids: Collection[str]) -> None:
        """Offers taken tasks again (no worker here could hold them after all)."""

    async def answer(self, task_id: str, result: WorkResult) -> bool:
        """Writes a result of a task offered or taken; False when none is (announces `ANSWERED`)."""
        ...

    async def collect(self, task_ids: Collection[str]) -> dict[str, WorkResult]:
        """The results of those of `task_ids` that have one, each removed once read."""
        ...

    async def withdraw(self, task_id: str, deadline_passed: bool) -> None:
        """Its owner wants no result any more (announces `WITHDRAWN` if a replica took it)."""

    async def fail_lost(self) -> None:
        """Fails with `WorkerLost` the tasks of replicas that went away (announces `ANSWERED`)."""

    def changes(self) -> AsyncIterator[Change]:
        """Every change any replica makes, from now on, while the queue is open."""
        ...

    async def missed(self, task_ids: Collection[str]) -> list[Change]:
        """The changes of `task_ids`, taken by this replica, that are no longer taken by it:
        `ANSWERED` (answered elsewhere) or `WITHDRAWN` (withdrawn, or gone)."""
        ...

    async def close(self) -> None:
        """Ends `changes` and closes the connections."""


class SharedDispatch:
    """The `Sharing` of one replica's dispatcher (see the module docstring).

    `encode` turns an assignment into what a worker of any replica receives.
    `start` runs it on the server's loop; `stop` waits for its writes.
    """

    def __init__(
        self,
        dispatcher: Dispatcher,
        queue: SharedQueue,
        encode: Callable[[Assignment], bytes],
    ) -> None:
        self._dispatcher = dispatcher
        self._queue = queue
        self._encode = encode
        self._offered: dict[str, Assignment] = {}  # this replica's, awaiting results
        self._offers: dict[str, asyncio.Task[None]] = {}  # puts not yet done, by task id
        self._work: set[asyncio.Task[Any]] = set()  # offers, withdrawals, answers in flight
        self._maybe_offered: set[str] = set()  # queues that may hold tasks nobody took yet
        self._taking: asyncio.Task[None] | None = None
        self._take_again = False
        self._listener: asyncio.Task[None] | None = None
        self._lost_checker: asyncio.Task[None] | None = None
        dispatcher.sharing = self

    async def start(self) -> None:
        """Opens the queue and listens to its changes (on the running loop)."""
        await self._queue.open()
        self._listener = asyncio.create_task(self._listen())
        self._lost_checker = asyncio.create_task(self._check_lost())
        self._maybe_offered.update(self._dispatcher.free_credits())
        self._take_soon()

    async def stop(self) -> None:
        """Stops listening, lets what is being written finish, closes the queue."""
        for task in (self._listener, self._lost_checker):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        # A take cut short would leave rows taken that no worker holds: it ends
        # (its tasks go back to the queue once no worker here can hold them).
        await asyncio.gather(*self._work, self._taking or asyncio.sleep(0), return_exceptions=True)
        await self._queue.close()

    # -- Sharing: what the dispatcher tells ----------------------------------

    def offer(self, assignment: Assignment) -> None:
        self._offered[assignment.id] = assignment
        self._offers[assignment.id] = self._spawn(self._put(assignment))

    def withdraw(self, assignment: Assignment, deadline_passed: bool) -> None:
        self._offered.pop(assignment.id, None)
        self._spawn(self._withdraw(assignment.id, deadline_passed))

    def answer(self, task: SharedTask, result: WorkResult) -> None:
        self._spawn(self._queue.answer(task.id, result))

    def wanted(self, queues: tuple[str, ...]) -> None:
        if not self._maybe_offered.isdisjoint(queues):
            self._take_soon()

    async def answer_anywhere(self, assignment_id: str, result: WorkResult) -> bool:
        return await self._queue.answer(assignment_id, result)

    # -- the owner's side ----------------------------------------------------

    async def _put(self, assignment: Assignment) -> None:
        ctx = assignment.ctx
        deadline = None
        if ctx.deadline is not None:
            left = max(ctx.deadline - asyncio.get_running_loop().time(), 0.0)
            deadline = datetime.now(UTC) + timedelta(seconds=left)
        task = SharedTask(assignment.id, assignment.queue, self._encode(assignment))
        try:
            await self._queue.put(task, deadline)
        except Exception as exc:  # the database failed: the attempt fails, a retry may do better
            logger.warning("cannot offer a worker task on queue %s: %s", assignment.queue, exc)
            self._offered.pop(assignment.id, None)
            if not assignment.future.done():
                error = f"the shared worker queue is unavailable: {type(exc).__name__}"
                assignment.future.set_result(
                    WorkResult(error=error, error_type=SHARED_QUEUE_UNAVAILABLE)
                )
        finally:
            self._offers.pop(assignment.id, None)

    async def _withdraw(self, task_id: str, deadline_passed: bool) -> None:
        offering = self._offers.get(task_id)
        if offering is not None:  # withdrawn before it was offered: offered first, in order
            await asyncio.wait([offering])
        await self._queue.withdraw(task_id, deadline_passed)

    async def _collect(self, task_ids: Collection[str]) -> None:
        for task_id, result in (await self._queue.collect(task_ids)).items():
            assignment = self._offered.pop(task_id, None)
            if assignment is not None and not assignment.future.done():
                assignment.future.set_result(result)

    async def _check_lost(self) -> None:
        """While tasks of this replica are offered: fails those whose taker went away.

        Their owners learn it as a result (`WorkerLost`), so the retry policy
        offers them again, as when a worker's stream breaks.
        """
        while True:
            await asyncio.sleep(LOST_CHECK_SECONDS)
            if self._offered:
                try:
                    await self._queue.fail_lost()
                except Exception as exc:
                    logger.warning("cannot look for lost worker tasks: %s", exc)

    # -- the takers' side ----------------------------------------------------

    def _take_soon(self) -> None:
        """Takes what this replica's free workers can hold, one take at a time."""
        if self._taking is not None and not self._taking.done():
            self._take_again = True
            return
        self._taking = asyncio.create_task(self._take())

    async def _take(self) -> None:
        while True:
            self._take_again = False
            free = self._dispatcher.free_credits()
            wanted = {q: n for q, n in free.items() if q in self._maybe_offered}
            if not wanted:
                return
            try:
                taken = await self._queue.take(wanted)
            except Exception as exc:
                logger.warning("cannot take worker tasks from the shared queue: %s", exc)
                return
            for queue, credits in wanted.items():  # a queue that gave less is empty now
                if sum(task.queue == queue for task in taken) < credits:
                    self._maybe_offered.discard(queue)
            unplaced = [task.id for task in taken if not self._dispatcher.place(task)]
            if unplaced:  # a worker left meanwhile
                self._maybe_offered.update(task.queue for task in taken)
                await self._queue.release(unplaced)
            if not self._take_again:
                return

    # -- changes -------------------------------------------------------------

    async def _listen(self) -> None:
        async for change in self._queue.changes():
            try:
                self._apply(change)
            except Exception:  # one bad change must not stop the replica's sharing
                logger.exception("cannot apply a change of the shared worker queue")

    def _apply(self, change: Change) -> None:
        if change.kind == OFFERED:
            self._maybe_offered.add(change.key)
            if change.key in self._dispatcher.free_credits():
                self._take_soon()
        elif change.kind == ANSWERED:
            if change.key in self._offered:
                self._spawn(self._collect([change.key]))
            # Answered by a unary call: a worker here that holds it is done with it.
            self._dispatcher.end_shared(change.key, None)
        elif change.kind == WITHDRAWN:
            cancellation = Cancellation(change.key, change.deadline_passed)
            self._dispatcher.end_shared(change.key, cancellation)
        elif change.kind == RESYNC:
            self._maybe_offered.update(self._dispatcher.free_credits())
            self._take_soon()
            if self._offered:
                self._spawn(self._collect(list(self._offered)))
            if given := self._dispatcher.given_shared():
                self._spawn(self._catch_up(given))

    async def _catch_up(self, task_ids: list[str]) -> None:
        """Applies what was missed of the tasks this replica's workers hold."""
        for change in await self._queue.missed(task_ids):
            self._apply(change)

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(work)
        self._work.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._work.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("shared worker queue: %s", task.exception())
