"""How an execution's events reach the history store, and how they are read back.

Converting and storing every event costs more than running a short flow
(docs/performance.md), and most executions that nobody watches end within
milliseconds. So an execution whose caller listens to no event (`Execute`,
`StartExecution`) has its events held back, unconverted, by its `Journal`:
when it ends within `HOLD_SECONDS` of its start, only its last event,
`execution_finished`, is stored (a *folded* history). The events before it
follow from that event's summary and the stored request (`stored_messages`
rebuilds them, exactly: each `task_finished` is timed at its result's start
plus its duration, as the engine times it).

Otherwise (it runs longer, holds `MAX_HELD` events, retries a task, or is
streamed to its caller) its history is stored *sparse*: every event but
those its neighbours imply. A `condition_evaluated` is implied by the
`task_finished` right before it (its result's decision, at the same time),
so it is never written; a `task_started` by the `task_finished` right after
it (the same task, step and start), so it is written only when its task
still runs at the journal's next tick, `HOLD_SECONDS` at most after it
started (a reader then sees what runs), or a retry follows it. A flow of
10,000 quick tasks writes 10,000 events, not 30,000.

Once it is watched in this process (`release`), or ends early without its
last event, every event is written, one by one, as it happens.

A store therefore holds an execution's events one by one, sparse, or folded.
Readers of the history go through `stored_messages`, which gives back every
event: the stored ones, and those they imply.

What may be lost in a crash grows by `HOLD_SECONDS`: events held back were
not yet in the store's queue (see docs/durability.md). The end, as before,
is durable before any caller hears of it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from google.protobuf import duration_pb2, timestamp_pb2

from flowmanager.v1 import flow_pb2, flow_service_pb2
from flowservice.api.convert import event_to_proto
from flowservice.events import (
    ConditionEvaluated,
    Event,
    ExecutionFinished,
    TaskFinished,
    TaskRetrying,
    TaskStarted,
)
from flowservice.history import ExecutionStore, StoredEvent, StoredExecution
from flowservice.models import DEFAULT_TASK_TYPE

__all__ = ["HOLD_SECONDS", "MAX_HELD", "Journal", "stored_messages"]

HOLD_SECONDS = 0.05
"""How long an unwatched execution's events are held back, hoping it ends first.
The same as the SQLite store's longest wait before a commit."""

MAX_HELD = 256
"""The most events an execution holds back (some 85 task runs). A flow of quick
tasks makes thousands of events in `HOLD_SECONDS`: unbounded, a thousand of
them at once would hold millions of objects, and writing one's events when its
hold runs out would convert them all in one turn of the event loop."""

_Message = flow_service_pb2.ExecuteStreamResponse


class Journal:
    """Writes one execution's events to the store: one by one, sparse or folded (see the module)."""

    __slots__ = ("_execution_id", "_held", "_pending", "_sparse", "_store", "_timer")

    def __init__(self, store: ExecutionStore, execution_id: str, *, hold: bool) -> None:
        """`hold`: nobody listens to the events: hold them back (every history starts sparse)."""
        self._store = store
        self._execution_id = execution_id
        self._held: list[Event] | None = [] if hold else None
        self._sparse = True  # until someone watches it here: `release`
        self._pending: TaskStarted | None = None
        """The `task_started` not written yet: its `task_finished` will imply it."""
        self._timer = (
            asyncio.get_running_loop().call_later(HOLD_SECONDS, self._tick) if hold else None
        )

    def add(self, event: Event, message: _Message | None) -> None:
        """Hands over the execution's next event; `message`: its message, if already built."""
        held = self._held
        if held is not None:
            if isinstance(event, ExecutionFinished):
                self._held = None  # and the events held are implied by this one
                self._stop_timer()
            elif isinstance(event, TaskRetrying) or len(held) >= MAX_HELD:
                self._write_held()  # (a retry's error and delay are in no summary)
            else:
                held.append(event)
                return
        self._write(event, message)

    def release(self) -> None:
        """Writes what is held back; every later event is then written at once, one by one.

        Called when someone watches the execution, and when it ends without
        its last event.
        """
        self._sparse = False
        self._write_held()
        self._stop_timer()
        if self._pending is not None:
            self._write_pending()

    def _tick(self) -> None:
        """`HOLD_SECONDS` passed: since the start, or since a task started that still runs."""
        self._timer = None
        self._write_held()
        if self._pending is not None:
            self._write_pending()
        self._stop_timer()  # `_write_held` may have armed one for what it left pending

    def _write_held(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            for event in held:
                self._write(event, None)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _write(self, event: Event, message: _Message | None) -> None:
        if self._sparse:
            if isinstance(event, TaskStarted):
                self._pending = event  # written if its task still runs at the next tick
                if self._timer is None:
                    self._timer = asyncio.get_running_loop().call_later(HOLD_SECONDS, self._tick)
                return
            if isinstance(event, ConditionEvaluated):
                return  # implied by the task_finished before it
            if isinstance(event, TaskFinished):
                self._pending = None  # implied by this one
            elif self._pending is not None:
                self._write_pending()  # a retry's, before it
            if isinstance(event, ExecutionFinished):
                self._stop_timer()
        self._append(event, message)

    def _write_pending(self) -> None:
        pending, self._pending = self._pending, None
        assert pending is not None
        self._append(pending, None)

    def _append(self, event: Event, message: _Message | None) -> None:
        built = message if message is not None else event_to_proto(event)
        payload = built.SerializeToString()
        self._store.append(self._execution_id, StoredEvent(event.sequence, payload))


def stored_messages(
    stored: StoredExecution, events: Sequence[StoredEvent], after: int = 0
) -> list[_Message]:
    """The messages of the events of `stored` after sequence `after`, from its stored `events`.

    `events` are those stored from sequence `after` on (`store.events(id,
    after=max(after - 1, 0))`): the one at `after` may imply the next. The
    events a sparse or folded history implies (see the module) come back
    among them, as the engine emitted them.
    """
    messages: list[_Message] = []
    types = _Types(stored)
    for row in events:
        message = _Message.FromString(row.payload)
        _add_implied(messages, message, after, types)
        messages.append(message)
    if messages:
        _add_decision(messages)
    return [message for message in messages if message.sequence > after]


def _add_implied(messages: list[_Message], message: _Message, after: int, types: _Types) -> None:
    """Appends to `messages` the events stored before `message` implies and did not store."""
    if messages:
        _add_decision(messages, before=message.sequence)
    known = messages[-1].sequence if messages else after
    if message.sequence <= known + 1:
        return
    kind = message.WhichOneof("event")
    if kind == "task_finished" and message.sequence == known + 2:
        messages.append(
            _started(message.execution_id, known + 1, message.task_finished.result, types)
        )
    elif kind == "execution_finished":  # folded
        messages.extend(m for m in _unfolded(types, message)[:-1] if m.sequence > known)


def _add_decision(messages: list[_Message], before: int | None = None) -> None:
    """Appends the `condition_evaluated` a last `task_finished` implies, unless stored `before`."""
    last = messages[-1]
    if not last.HasField("task_finished") or before == last.sequence + 1:
        return
    result = last.task_finished.result
    if result.HasField("decision"):
        messages.append(_decided(last.execution_id, last.sequence + 1, result))


class _Types:
    """The type of each task of a stored execution's flow, read from its request when asked."""

    __slots__ = ("_flow", "_stored", "_types")

    def __init__(self, stored: StoredExecution) -> None:
        self._stored = stored
        self._flow: flow_pb2.Flow | None = None
        self._types: dict[str, str] | None = None

    @property
    def flow(self) -> flow_pb2.Flow:
        if self._flow is None:
            request = flow_service_pb2.ExecuteRequest.FromString(self._stored.record.request)
            self._flow = request.flow
        return self._flow

    def of(self, task: str) -> str:
        if self._types is None:
            self._types = {t.name: t.type or DEFAULT_TASK_TYPE for t in self.flow.tasks}
        return self._types.get(task, "")


def _unfolded(types: _Types, last: _Message) -> list[_Message]:
    """Every event of an execution whose history holds only `last`, its `execution_finished`.

    They are what the engine emitted: `execution_started` at the summary's
    start time, then, for each task run, `task_started` (at its start),
    `task_finished` (at its start plus its duration) and, when a condition
    routed after it, `condition_evaluated` (at the same time). `[last]` when
    they do not come to its sequence (not a history `Journal` folds).
    """
    flow = types.flow
    summary = last.execution_finished.result
    execution_id = last.execution_id
    begun = flow_service_pb2.ExecutionStartedEvent(
        flow_id=flow.id, flow_name=flow.name, start_task=flow.start_task
    )
    messages = [_event(execution_id, 1, summary.start_time, execution_started=begun)]
    for result in summary.task_results:
        messages.append(_started(execution_id, len(messages) + 1, result, types))
        finished = flow_service_pb2.TaskFinishedEvent(result=result)
        ended = _plus(result.start_time, result.duration)
        messages.append(_event(execution_id, len(messages) + 1, ended, task_finished=finished))
        if result.HasField("decision"):
            messages.append(_decided(execution_id, len(messages) + 1, result))
    if last.sequence != len(messages) + 1:  # not what `Journal` folds: leave it as it is
        return [last]
    messages.append(last)
    return messages


def _started(
    execution_id: str, sequence: int, result: flow_service_pb2.TaskResult, types: _Types
) -> _Message:
    """The `task_started` a run's `task_finished` implies: the same task and step, at its start."""
    started = flow_service_pb2.TaskStartedEvent(
        task=result.task, type=types.of(result.task), step=result.step
    )
    return _event(execution_id, sequence, result.start_time, task_started=started)


def _decided(execution_id: str, sequence: int, result: flow_service_pb2.TaskResult) -> _Message:
    """The `condition_evaluated` of a run's decision: at its end, as its `task_finished`."""
    ended = _plus(result.start_time, result.duration)
    return _event(execution_id, sequence, ended, condition_evaluated=result.decision)


def _event(
    execution_id: str, sequence: int, time: timestamp_pb2.Timestamp, **event: Any
) -> _Message:
    """A message of one event, given as its one field (`task_started=...`)."""
    return _Message(execution_id=execution_id, sequence=sequence, time=time, **event)


def _plus(start: timestamp_pb2.Timestamp, length: duration_pb2.Duration) -> timestamp_pb2.Timestamp:
    nanos = start.nanos + length.nanos
    return timestamp_pb2.Timestamp(
        seconds=start.seconds + length.seconds + nanos // 1_000_000_000,
        nanos=nanos % 1_000_000_000,
    )
