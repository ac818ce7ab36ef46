"""Hands `worker` task runs to connected workers and their results back to the engine.

The `Dispatcher` holds the queues, the connected workers (`WorkerSession`)
with their credits, and the assignments they hold. A `worker` task submits
an `Assignment` and awaits its future. If a worker serving the queue has a
credit free, the assignment goes to its outbox at once (the API layer pushes
the outbox down the worker's stream); otherwise it waits in its queue's
backlog until a worker connects, adds credits or finishes another assignment.

Every result goes through `resolve`, which takes the assignment out of the
table before applying it: a second result, or one for an assignment that was
cancelled or never given out, finds nothing (`AssignmentNotFoundError`) and
is never applied twice. A worker that goes away fails each assignment it
held with error type `WorkerLost`, so the task's retry policy can send it to
another worker.

Everything is bounded: workers connected (`max_workers`), assignments
waiting (`max_backlog`), queues per worker, credits per worker, and a
worker's outbox (a worker that stops reading its stream is dropped).
No gRPC here: the API layer converts.

Replicas on one PostgreSQL share their queues through a `Sharing`
(`flowservice.shared_dispatch`) attached to the dispatcher: an attempt
that finds no worker free here is offered to every replica instead of
waiting in this one's backlog, and this replica's workers also take
`SharedTask`s that any replica offered. Without one (SQLite, memory),
nothing here changes.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from flowservice.errors import AssignmentNotFoundError, TooManyWorkersError
from flowservice.tasks.base import TaskContext, TaskFailure

__all__ = [
    "BACKLOG_FULL",
    "MAX_CREDITS",
    "MAX_QUEUES_PER_WORKER",
    "WORKER_LOST",
    "Assignment",
    "Cancellation",
    "Dispatcher",
    "Push",
    "Refusal",
    "SharedTask",
    "Sharing",
    "WorkResult",
    "WorkerSession",
]

WORKER_LOST = "WorkerLost"
"""The error type of an assignment whose worker went away before answering."""
BACKLOG_FULL = "BacklogFull"
"""The error type of a task run refused because `max_backlog` assignments wait already."""
MAX_QUEUES_PER_WORKER = 64
"""The most queues one worker may serve."""
MAX_CREDITS = 10_000
"""The most assignments one worker may hold at once."""

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WorkResult:
    """A worker's answer to an assignment: success when `error_type` is empty."""

    output: Mapping[str, Any] = field(default_factory=dict)
    """The output (on failure, an output reported with it)."""
    error: str = ""
    """Why it failed; empty on success."""
    error_type: str = ""
    """The kind of failure; empty on success."""


@dataclass(eq=False, slots=True)
class Assignment:
    """One attempt of one `worker` task, waiting for a worker or held by one."""

    id: str
    """Unique and unguessable (a random UUID): whoever knows it may answer."""
    queue: str
    """The queue it was submitted to."""
    ctx: TaskContext
    """The attempt's context: what the worker receives."""
    future: asyncio.Future[WorkResult]
    """Resolved with the result; cancelled with the attempt."""
    session: WorkerSession | None = None
    """The worker holding it; None while it waits in the backlog."""

    @property
    def idempotency_key(self) -> str:
        """The same on every attempt of one task run: execution id, task, step."""
        ctx = self.ctx
        return f"{ctx.execution_id}/{ctx.task.name}/{ctx.step}"


@dataclass(frozen=True, slots=True)
class Cancellation:
    """Tells a worker that the result of an assignment is no longer wanted."""

    assignment_id: str
    """The assignment cancelled."""
    deadline_passed: bool
    """True: its timeout or the execution's deadline passed; False: the execution was cancelled."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """Tells a worker that a result it sent on its stream was not applied."""

    assignment_id: str
    """The assignment the result named."""
    reason: str
    """Why, for programs: `ASSIGNMENT_NOT_FOUND` or `INVALID_RESULT`."""
    message: str
    """Why, for people."""


@dataclass(eq=False, slots=True)
class SharedTask:
    """An attempt offered by any replica, taken from the shared queue for a worker here."""

    id: str
    """The assignment id its owner gave it."""
    queue: str
    """The queue it was offered on."""
    payload: bytes
    """The assignment as the owner's API layer encoded it, pushed as it is."""
    session: WorkerSession | None = None
    """The worker holding it."""


class Sharing(Protocol):
    """What a dispatcher tells the queue it shares with other replicas (all without waiting)."""

    def offer(self, assignment: Assignment) -> None:
        """No worker here is free: offer `assignment` to every replica; resolve its future."""

    def withdraw(self, assignment: Assignment, deadline_passed: bool) -> None:
        """An offered assignment's attempt ended without a result."""

    def answer(self, task: SharedTask, result: WorkResult) -> None:
        """A worker here answered `task`: write the result for its owner."""

    def wanted(self, queues: tuple[str, ...]) -> None:
        """A worker here serving `queues` has credits free."""

    async def answer_anywhere(self, assignment_id: str, result: WorkResult) -> bool:
        """A result for an assignment unknown here (`CompleteTask`); False if none awaits it."""
        ...


Push = Assignment | Cancellation | Refusal | SharedTask
"""What a session's outbox holds for its stream."""


class WorkerSession:
    """One connected worker: its queues, credits, held assignments and outbox."""

    def __init__(self, name: str, queues: tuple[str, ...], credits: int) -> None:
        self.id = str(uuid.uuid4())
        """The identifier the server gave this connection."""
        self.name = name or self.id
        """The worker's own name for logs (its id when it gave none)."""
        self.queues = queues
        """The queues it serves."""
        self.credits = credits
        """How many assignments it holds at once."""
        self.held: dict[str, Assignment | SharedTask] = {}
        """The assignments pushed to it and not yet answered, by id."""
        self.closed = False
        """True once it disconnected (or was dropped)."""
        # Assignments and cancellations to push; None ends the stream.
        self._outbox: asyncio.Queue[Push | None] = asyncio.Queue()

    @property
    def free(self) -> int:
        """Credits not in use."""
        return self.credits - len(self.held)

    async def next(self) -> Push | None:
        """The next message to push; None when the session has ended."""
        if self.closed and self._outbox.empty():
            return None
        return await self._outbox.get()

    def _push(self, item: Push | None) -> None:
        self._outbox.put_nowait(item)

    def _outbox_full(self) -> bool:
        # Assignments are bounded by credits; cancellations by the assignments
        # cancelled since the worker last read. A worker that reads nothing
        # while this many messages wait is not reading at all.
        return self._outbox.qsize() > 2 * self.credits + 16


class Dispatcher:
    """Queues, workers and assignments of one server (see the module docstring)."""

    def __init__(self, *, max_workers: int = 1_000, max_backlog: int = 10_000) -> None:
        self.max_workers = max_workers
        """The most workers connected at once."""
        self.max_backlog = max_backlog
        """The most assignments waiting for a worker, all queues together."""
        self._sessions: set[WorkerSession] = set()
        self._serving: dict[str, list[WorkerSession]] = {}
        self._waiting: dict[str, deque[Assignment]] = {}
        self._waiting_count = 0
        self._given: dict[str, Assignment] = {}  # pushed and not yet answered, by id
        self._given_shared: dict[str, SharedTask] = {}  # the same, of tasks taken from `sharing`
        self.sharing: Sharing | None = None
        """The queue shared with other replicas, when there are any (see the module docstring)."""

    # -- workers -------------------------------------------------------------

    def connect(self, name: str, queues: tuple[str, ...], credits: int) -> WorkerSession:
        """Registers a worker and gives it what waits on its queues.

        Raises `TooManyWorkersError` at `max_workers`; the caller has checked
        the queues and credits (see `MAX_QUEUES_PER_WORKER`, `MAX_CREDITS`).
        """
        if len(self._sessions) >= self.max_workers:
            raise TooManyWorkersError(self.max_workers)
        session = WorkerSession(name, queues, credits)
        self._sessions.add(session)
        for queue in queues:
            self._serving.setdefault(queue, []).append(session)
        logger.info("worker %s connected for queues %s", session.name, ", ".join(queues))
        self._feed(session)
        return session

    def add_credits(self, session: WorkerSession, credits: int) -> None:
        """The worker takes `credits` more at once (up to `MAX_CREDITS` in all)."""
        session.credits = min(session.credits + credits, MAX_CREDITS)
        self._feed(session)

    def disconnect(self, session: WorkerSession) -> None:
        """The worker went away: each assignment it held fails with `WorkerLost`."""
        if session.closed:
            return
        session.closed = True
        self._sessions.discard(session)
        for queue in session.queues:
            serving = self._serving.get(queue, [])
            if session in serving:
                serving.remove(session)
            if not serving:
                self._serving.pop(queue, None)
        lost = list(session.held.values())
        session.held.clear()
        error = f"worker {session.name} went away before answering"
        for assignment in lost:
            if isinstance(assignment, SharedTask):
                self._given_shared.pop(assignment.id, None)
                if self.sharing is not None:
                    self.sharing.answer(assignment, WorkResult(error=error, error_type=WORKER_LOST))
                continue
            self._given.pop(assignment.id, None)
            if not assignment.future.done():
                assignment.future.set_result(WorkResult(error=error, error_type=WORKER_LOST))
        session._push(None)
        logger.info("worker %s disconnected; %d assignments lost", session.name, len(lost))

    def close(self) -> None:
        """Disconnects every worker (the server is stopping): their streams end."""
        for session in list(self._sessions):
            self.disconnect(session)

    def refuse(self, session: WorkerSession, refusal: Refusal) -> None:
        """Tells `session` that a result it sent was not applied."""
        if not session.closed:
            self._send(session, refusal)

    def workers_for(self, queue: str) -> int:
        """How many connected workers serve `queue`."""
        return len(self._serving.get(queue, ()))

    def backlog(self) -> dict[str, int]:
        """Assignments waiting for a worker, by queue (queues with none waiting left out)."""
        return {queue: len(waiting) for queue, waiting in self._waiting.items() if waiting}

    # -- assignments ---------------------------------------------------------

    def submit(self, ctx: TaskContext, queue: str) -> Assignment:
        """An assignment of `ctx` on `queue`, given to a worker or queued.

        Raises `TaskFailure` (`BacklogFull`) when `max_backlog` assignments
        wait already and no worker is free.
        """
        loop = asyncio.get_running_loop()
        assignment = Assignment(str(uuid.uuid4()), queue, ctx, loop.create_future())
        session = self._free_worker(queue)
        if session is not None:
            self._give(session, assignment)
            return assignment
        if self.sharing is not None:
            self.sharing.offer(assignment)
            return assignment
        if self._waiting_count >= self.max_backlog:
            raise TaskFailure(
                f"{self._waiting_count} assignments wait for workers already "
                f"(max_worker_backlog); queue {queue!r} has no worker free",
                error_type=BACKLOG_FULL,
            )
        self._waiting.setdefault(queue, deque()).append(assignment)
        self._waiting_count += 1
        return assignment

    def cancel(self, assignment: Assignment, *, deadline_passed: bool) -> None:
        """The attempt ended without a result: forget it, and tell its worker."""
        session = assignment.session
        if session is None and self.sharing is not None:
            self.sharing.withdraw(assignment, deadline_passed)
            return
        if session is None:
            waiting = self._waiting.get(assignment.queue)
            if waiting is not None and assignment in waiting:
                waiting.remove(assignment)
                self._waiting_count -= 1
                if not waiting:
                    del self._waiting[assignment.queue]
            return
        if self._given.pop(assignment.id, None) is None:
            return  # answered or lost already
        session.held.pop(assignment.id, None)
        if not session.closed:
            self._send(session, Cancellation(assignment.id, deadline_passed))
            self._feed(session)

    def resolve(self, assignment_id: str, result: WorkResult) -> None:
        """Applies a worker's result, once; `AssignmentNotFoundError` when nothing awaits it."""
        if assignment_id in self._given_shared:
            self._answer_shared(self._given_shared.pop(assignment_id), result)
            return
        assignment = self._given.pop(assignment_id, None)
        if assignment is None or assignment.future.done():
            raise AssignmentNotFoundError(assignment_id)
        session = assignment.session
        assert session is not None  # only given assignments are in `_given`
        session.held.pop(assignment_id, None)
        assignment.future.set_result(result)
        if not session.closed:
            self._feed(session)

    async def resolve_anywhere(self, assignment_id: str, result: WorkResult) -> None:
        """`resolve`, or else the shared queue's task of that id wherever its worker is."""
        try:
            self.resolve(assignment_id, result)
        except AssignmentNotFoundError:
            if self.sharing is None or not await self.sharing.answer_anywhere(
                assignment_id, result
            ):
                raise

    # -- tasks shared by replicas -------------------------------------------

    def place(self, task: SharedTask) -> bool:
        """Gives `task` (taken from the shared queue) to a free worker; False when none is."""
        session = self._free_worker(task.queue)
        if session is None:
            return False
        task.session = session
        session.held[task.id] = task
        self._given_shared[task.id] = task
        self._send(session, task)
        return True

    def end_shared(self, task_id: str, cancellation: Cancellation | None) -> None:
        """A shared task was answered elsewhere, or withdrawn (then its worker is told)."""
        task = self._given_shared.pop(task_id, None)
        if task is None or task.session is None:
            return
        session = task.session
        session.held.pop(task_id, None)
        if not session.closed:
            if cancellation is not None:
                self._send(session, cancellation)
            self._feed(session)

    def given_shared(self) -> list[str]:
        """The ids of the shared tasks this dispatcher's workers hold."""
        return list(self._given_shared)

    def free_credits(self) -> dict[str, int]:
        """Credits free for each queue a connected worker serves (queues with none left out)."""
        free: dict[str, int] = {}
        for queue, sessions in self._serving.items():
            credits = sum(max(session.free, 0) for session in sessions)
            if credits:
                free[queue] = credits
        return free

    def _answer_shared(self, task: SharedTask, result: WorkResult) -> None:
        session = task.session
        assert session is not None and self.sharing is not None  # given tasks have both
        session.held.pop(task.id, None)
        self.sharing.answer(task, result)
        if not session.closed:
            self._feed(session)

    # -- matching ------------------------------------------------------------

    def _free_worker(self, queue: str) -> WorkerSession | None:
        """The worker serving `queue` with the most free credits, or None."""
        best: WorkerSession | None = None
        for session in self._serving.get(queue, ()):
            if session.free > 0 and (best is None or session.free > best.free):
                best = session
        return best

    def _give(self, session: WorkerSession, assignment: Assignment) -> None:
        assignment.session = session
        session.held[assignment.id] = assignment
        self._given[assignment.id] = assignment
        self._send(session, assignment)

    def _send(self, session: WorkerSession, item: Push) -> None:
        session._push(item)
        if session._outbox_full():
            logger.warning("worker %s does not read its stream; dropping it", session.name)
            self.disconnect(session)

    def _feed(self, session: WorkerSession) -> None:
        """Gives `session` waiting assignments of its queues while it has credits free."""
        while session.free > 0 and not session.closed:
            assignment = self._next_waiting(session.queues)
            if assignment is None:
                if self.sharing is not None:
                    self.sharing.wanted(session.queues)
                return
            self._give(session, assignment)

    def _next_waiting(self, queues: tuple[str, ...]) -> Assignment | None:
        for queue in queues:
            waiting = self._waiting.get(queue)
            if waiting:
                assignment = waiting.popleft()
                self._waiting_count -= 1
                if not waiting:
                    del self._waiting[queue]
                return assignment
        return None
