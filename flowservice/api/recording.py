"""Records the executions the servicer runs in the history store.

`recorded` sits between the engine's events and the call: it converts each
event to the message `ExecuteStream` sends, hands its bytes to the store, and
passes the message on. The store is told of the end, and the call waits until
it is durable, before the last message leaves: no caller hears of an end the
history does not hold.

Every finished execution's events end with `execution_finished`. One that
`CancelExecution` ends (`RunningExecutions.cancel`) gets it from the engine
(`Engine.cancel`), with the interrupted run's `task_finished` before it; its
call then ends with CANCELLED (`ExecutionCancelledError`) after the last
message, as a timed-out one ends with DEADLINE_EXCEEDED. An execution whose
caller went away (the engine ends it at once), or whose task was cancelled
while its consumer held it, is recorded cancelled by `record_cancelled`
without holding up the cancellation: its last event is built from the
stored ones (`cancelled_end`), as it is for one that no engine runs (a dead
owner's, claimed to be cancelled).

A resumed execution (`flowservice.api.resumption`) goes through the same
path, named by `resumed`: it is in the store already, so it is not begun
again. An execution this process lost to another owner (`RunningExecutions.lose`)
ends with `LeaseLostError` and records nothing: the store would refuse it,
and its new owner writes its end. Nor does one cut short by the server
shutting down (`RunningExecutions.leave_for_takeover`): it stays running in
the store, and the next server process on it resumes it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable, Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from flowmanager.v1 import flow_service_pb2
from flowservice.api.convert import event_to_proto
from flowservice.api.journal import Journal, stored_messages
from flowservice.engine import CANCELLED
from flowservice.errors import ExecutionCancelledError, LeaseLostError, StoreUnavailableError
from flowservice.events import Event, ExecutionFinished, ExecutionStarted
from flowservice.history import (
    RUNNING,
    ExecutionRecord,
    ExecutionStore,
    StoredEvent,
    StoredExecution,
)
from flowservice.models import ExecutionStatus
from flowservice.observability import request_id_var

__all__ = [
    "RunningExecutions",
    "cancelled_end",
    "check_writable",
    "record_cancelled",
    "recorded",
]


class RunningExecutions:
    """The executions running in this process, by id: what `CancelExecution` can cancel.

    Also holds the background tasks that record cancelled executions, so
    that they are not garbage-collected, and `stop` can wait for them.
    """

    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._journals: dict[str, Journal] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._cancelled: set[str] = set()
        self._lost: set[str] = set()
        self._leaving = False
        self.claims: dict[str, asyncio.Future[str]] = {}
        """Request ids of executions being started here -> their execution ids, once known."""
        self.engine_cancel: Callable[[str], bool] = _no_stop
        """Asks the engine to end an execution CANCELLED with its last events
        (`Engine.cancel`); set by the server. When it cannot, `cancel` cancels
        the execution's task."""

    def release(self, request_id: str) -> None:
        """Drops the claim on `request_id`; those waiting on it look in the store again."""
        claim = self.claims.pop(request_id, None)
        if claim is not None and not claim.done():
            claim.cancel()

    def cancel(self, execution_id: str) -> bool:
        """Ends the execution (see the module docstring); False when it does not run here."""
        task = self._tasks.get(execution_id)
        if task is None:
            return False
        self._cancelled.add(execution_id)
        if not self.engine_cancel(execution_id):
            task.cancel()
        return True

    def was_cancelled(self, execution_id: str) -> bool:
        """Whether `cancel` ended the execution (rather than its caller going away)."""
        return execution_id in self._cancelled

    def lose(self, execution_id: str) -> None:
        """Stops the execution's run here: another owner took it over (the store said so)."""
        task = self._tasks.get(execution_id)
        if task is not None:
            self._lost.add(execution_id)
            task.cancel()

    def was_lost(self, execution_id: str) -> bool:
        """Whether `lose` ended the execution."""
        return execution_id in self._lost

    def leave_for_takeover(self) -> None:
        """From now on (the server is shutting down), an execution cut short is not recorded
        cancelled: its lease runs out and another server process resumes it."""
        self._leaving = True

    def was_left(self, execution_id: str) -> bool:
        """Whether the execution, cut short now, is left for another process to take over."""
        return self._leaving and execution_id not in self._cancelled

    def release_events(self, execution_id: str) -> None:
        """Has the events of the execution, if it runs here, written from now on (a watcher)."""
        journal = self._journals.get(execution_id)
        if journal is not None:
            journal.release()

    def has(self, execution_id: str) -> bool:
        """Whether the execution runs in this process."""
        return execution_id in self._tasks

    def ids(self) -> list[str]:
        """The executions running in this process: those whose leases it renews."""
        return list(self._tasks)

    def add(self, execution_id: str, task: asyncio.Task[Any], journal: Journal) -> None:
        self._tasks[execution_id] = task
        self._journals[execution_id] = journal

    def remove(self, execution_id: str) -> None:
        self._tasks.pop(execution_id, None)
        journal = self._journals.pop(execution_id, None)
        if journal is not None:
            journal.release()  # it ended without its last event: what it held goes first
        self._cancelled.discard(execution_id)
        self._lost.discard(execution_id)

    def in_background(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Runs `work` detached from the caller; `stop` cancels it."""
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def stop(self) -> None:
        """Cancels what still runs and waits until that has been recorded (or left)."""
        for task in [*self._background, *self._tasks.values()]:
            task.cancel()
        while self._background:  # a cancelled execution adds the task that records it
            await asyncio.gather(*self._background, return_exceptions=True)


def check_writable(store: ExecutionStore) -> None:
    """Raises StoreUnavailableError when `store` cannot record a new execution."""
    if store.failure:
        raise StoreUnavailableError(store.failure)


async def recorded(
    events: AsyncGenerator[Event, None],
    store: ExecutionStore,
    running: RunningExecutions,
    request: bytes,
    request_id: str = "",
    *,
    resumed: str = "",
    streamed: bool = True,
    time_allowed: float | None = None,
) -> AsyncGenerator[tuple[Event, flow_service_pb2.ExecuteStreamResponse | None], None]:
    """Each of `events` with its message, recorded in `store` before it is yielded.

    `request` is the serialized request that started the execution (kept
    with it); `request_id` its idempotency key. The task iterating is in
    `running` while the execution runs. Closes `events` when closed.
    `resumed`: the id of the stored execution that `events` continue.
    `streamed` False: the caller wants only the first and the last event,
    and only the last one's message (the first's is None); the events may
    then be folded (`flowservice.api.journal`). `time_allowed`: the seconds
    the caller's deadline allowed the run, kept for its resumption.
    """
    execution_id = resumed
    finished = False
    status = ""
    ran = False  # a resumed run refused before its first event leaves it to its lease
    try:
        if resumed:
            journal = Journal(store, resumed, hold=False)
            running.add(resumed, _current_task(), journal)
        async with contextlib.aclosing(events):
            async for event in events:
                ran = True
                last = isinstance(event, ExecutionFinished)
                if isinstance(event, ExecutionStarted) and not resumed:
                    execution_id = event.execution_id
                    record = _record(event, request, request_id, time_allowed)
                    journal = _begin(record, store, running, hold=not streamed)
                elif not (streamed or last):
                    journal.add(event, None)
                    continue  # a hop less per event, where nobody listens
                message = event_to_proto(event) if streamed or last else None
                journal.add(event, message)
                if last:
                    assert message is not None and isinstance(event, ExecutionFinished)
                    finished = True  # from here on, its end is the store's to write
                    summary = message.execution_finished.result.SerializeToString()
                    status = event.summary.status.value
                    await store.finish(execution_id, status, summary, event.time)
                yield event, message
                if finished and status == ExecutionStatus.CANCELLED.value:
                    raise ExecutionCancelledError(execution_id)  # after its last message
    except asyncio.CancelledError:
        if running.was_lost(execution_id):
            _current_task().uncancel()
            raise LeaseLostError(execution_id) from None
        if not running.was_cancelled(execution_id):
            raise
        # CancelExecution, not the caller, ended it: the call ends with a
        # status that says so, instead of a cancellation that grpc never answers.
        _current_task().uncancel()
        raise ExecutionCancelledError(execution_id) from None
    finally:
        running.release(request_id)  # the store answers for it from now on
        kept = running.was_lost(execution_id) or running.was_left(execution_id)
        cancelled = running.was_cancelled(execution_id)
        running.remove(execution_id)
        if execution_id and not finished and not kept and (ran or cancelled):
            running.in_background(record_cancelled(store, execution_id))


def _begin(
    record: ExecutionRecord, store: ExecutionStore, running: RunningExecutions, *, hold: bool
) -> Journal:
    """Records the start of a new execution; its journal (`hold`: see `Journal`)."""
    execution_id = record.execution_id
    store.begin(record)
    journal = Journal(store, execution_id, hold=hold)
    running.add(execution_id, _current_task(), journal)
    claim = running.claims.get(record.request_id)
    if claim is not None and not claim.done():
        claim.set_result(execution_id)
    return journal


def _record(
    event: ExecutionStarted, request: bytes, request_id: str, time_allowed: float | None
) -> ExecutionRecord:
    return ExecutionRecord(
        execution_id=event.execution_id,
        flow_id=event.flow_id,
        request=request,
        request_id=request_id,
        caller_request_id=request_id_var.get(),
        started_at=event.time,
        time_allowed=time_allowed,
    )


async def record_cancelled(store: ExecutionStore, execution_id: str) -> None:
    """Records the end of an execution this store's owner holds, cancelled without the engine.

    Its last event, `cancelled_end`, is built from the stored events.
    Quietly does nothing when the store cannot write (its `failure` says
    why) or the execution has another owner now (who records its end).
    """
    now = datetime.now(UTC)
    status, summary = ExecutionStatus.CANCELLED.value, b""
    with contextlib.suppress(StoreUnavailableError, LeaseLostError):
        try:
            stored = await store.get(execution_id)
            history = await store.events(execution_id) if stored is not None else []
        except StoreUnavailableError:
            stored = None  # `finish` still lets go of it
        if stored is not None and stored.status == RUNNING:
            last, summary = cancelled_end(stored, history, now)
            if last is not None:
                store.append(execution_id, last)
            else:  # the history ends with its end already: only the record missed it
                status = _status_of(flow_service_pb2.ExecuteResponse.FromString(summary))
        await store.finish(execution_id, status, summary, now)


def cancelled_end(
    stored: StoredExecution, history: Sequence[StoredEvent], now: datetime
) -> tuple[StoredEvent | None, bytes]:
    """The last event of a running execution cancelled at `now`, after its stored `history`.

    Its summary is what the history shows: status CANCELLED, error type
    `Cancelled`, the task runs that finished (and which one was running),
    no output. Returns the event and the serialized summary; (None, the
    summary) when the history already ends with `execution_finished`.
    """
    record = stored.record
    results: list[flow_service_pb2.TaskResult] = []
    running = ""
    messages = stored_messages(stored, history)
    for message in messages:
        match message.WhichOneof("event"):
            case "task_started":
                running = message.task_started.task
            case "task_finished":
                results.append(message.task_finished.result)
                running = ""
            case "execution_finished":
                return None, message.execution_finished.result.SerializeToString()
    summary = flow_service_pb2.ExecuteResponse(
        flow_id=record.flow_id,
        status=flow_service_pb2.EXECUTION_STATUS_CANCELLED,
        executed_tasks=[result.task for result in results],
        execution_id=record.execution_id,
        task_results=results,
        error="the execution was cancelled" + (f" while task {running!r} ran" if running else ""),
        error_type=CANCELLED,
    )
    summary.start_time.FromDatetime(record.started_at)
    summary.duration.FromTimedelta(max(now - record.started_at, timedelta(0)))
    last = flow_service_pb2.ExecuteStreamResponse(
        execution_id=record.execution_id, sequence=messages[-1].sequence + 1 if messages else 1
    )
    last.time.FromDatetime(now)
    last.execution_finished.result.CopyFrom(summary)
    return StoredEvent(last.sequence, last.SerializeToString()), summary.SerializeToString()


def _status_of(summary: flow_service_pb2.ExecuteResponse) -> str:
    """The stored status (an `ExecutionStatus` value) of a summary message."""
    name = flow_service_pb2.ExecutionStatus.Name(summary.status)
    return ExecutionStatus[name.removeprefix("EXECUTION_STATUS_")].value


def _no_stop(execution_id: str) -> bool:
    return False


def _current_task() -> asyncio.Task[Any]:
    task = asyncio.current_task()
    assert task is not None  # always inside a task: a call's handler or a detached run
    return task
