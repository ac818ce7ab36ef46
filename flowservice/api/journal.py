"""How an execution's events reach the history store, and how they are read back.

Converting and storing every event costs more than running a short flow
(docs/performance.md), and most executions that nobody watches end within
milliseconds. So an execution whose caller listens to no event (`Execute`,
`StartExecution`) has its events held back, unconverted, by its `Journal`:

- when it ends within `HOLD_SECONDS` of its start, only its last event,
  `execution_finished`, is stored. The events before it follow from that
  event's summary and the stored request (`stored_messages` rebuilds them,
  exactly: each `task_finished` is timed at its result's start plus its
  duration, as the engine times it);
- otherwise (it runs longer, holds `MAX_HELD` events, retries a task, is
  watched in this process, or ends early without its last event), the events
  held are written one by one, and every later one at once, as those of a
  streamed execution are.

A store therefore holds either an execution's events one by one, or its
last event alone at a sequence after 1: a *folded* history. Readers of the
history go through `stored_messages`, which unfolds one.

What may be lost in a crash grows by `HOLD_SECONDS`: events held back were
not yet in the store's queue (see docs/durability.md). The end, as before,
is durable before any caller hears of it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from google.protobuf import duration_pb2, timestamp_pb2

from flowmanager.v1 import flow_service_pb2
from flowservice.api.convert import event_to_proto
from flowservice.events import Event, ExecutionFinished, TaskRetrying
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
    """Writes one execution's events to the store: one by one, or folded (see the module)."""

    __slots__ = ("_execution_id", "_held", "_store", "_timer")

    def __init__(self, store: ExecutionStore, execution_id: str, *, hold: bool) -> None:
        """`hold`: hold events back (nobody listens to them) until the end or `HOLD_SECONDS`."""
        self._store = store
        self._execution_id = execution_id
        self._held: list[Event] | None = [] if hold else None
        self._timer = (
            asyncio.get_running_loop().call_later(HOLD_SECONDS, self.release) if hold else None
        )

    def add(self, event: Event, message: _Message | None) -> None:
        """Hands over the execution's next event; `message`: its message, if already built."""
        held = self._held
        if held is not None:
            if isinstance(event, ExecutionFinished):
                self._stop_holding()  # and the events held are implied by this one
            elif isinstance(event, TaskRetrying) or len(held) >= MAX_HELD:
                self.release()  # (a retry's error and delay are in no summary)
            else:
                held.append(event)
                return
        self._write(event, message)

    def release(self) -> None:
        """Writes the events held back, one by one; each later event is then written at once.

        Called when the hold runs out, when someone watches the execution,
        and when it ends without its last event.
        """
        held = self._held
        if held is None:
            return
        self._stop_holding()
        for event in held:
            self._write(event, None)

    def _stop_holding(self) -> None:
        self._held = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _write(self, event: Event, message: _Message | None) -> None:
        built = message if message is not None else event_to_proto(event)
        payload = built.SerializeToString()
        self._store.append(self._execution_id, StoredEvent(event.sequence, payload))


def stored_messages(
    stored: StoredExecution, events: Sequence[StoredEvent], after: int = 0
) -> list[_Message]:
    """The messages of `events`, the stored events of `stored` after sequence `after`.

    A folded history (its last event alone, `Journal`) comes back unfolded:
    every event it implies, from the first after `after`.
    """
    messages = [_Message.FromString(event.payload) for event in events]
    if len(messages) == 1 and messages[0].sequence > after + 1:
        last = messages[0]
        if last.HasField("execution_finished"):
            return [m for m in _unfolded(stored, last) if m.sequence > after]
    return messages


def _unfolded(stored: StoredExecution, last: _Message) -> list[_Message]:
    """Every event of an execution whose history holds only `last`, its `execution_finished`.

    They are what the engine emitted: `execution_started` at the summary's
    start time, then, for each task run, `task_started` (at its start),
    `task_finished` (at its start plus its duration) and, when a condition
    routed after it, `condition_evaluated` (at the same time).
    """
    flow = flow_service_pb2.ExecuteRequest.FromString(stored.record.request).flow
    types = {task.name: task.type or DEFAULT_TASK_TYPE for task in flow.tasks}
    summary = last.execution_finished.result
    execution_id = last.execution_id
    begun = flow_service_pb2.ExecutionStartedEvent(
        flow_id=flow.id, flow_name=flow.name, start_task=flow.start_task
    )
    messages = [_event(execution_id, 1, summary.start_time, execution_started=begun)]
    for result in summary.task_results:
        ended = _plus(result.start_time, result.duration)
        started = flow_service_pb2.TaskStartedEvent(
            task=result.task, type=types.get(result.task, ""), step=result.step
        )
        messages.append(
            _event(execution_id, len(messages) + 1, result.start_time, task_started=started)
        )
        finished = flow_service_pb2.TaskFinishedEvent(result=result)
        messages.append(_event(execution_id, len(messages) + 1, ended, task_finished=finished))
        if result.HasField("decision"):
            messages.append(
                _event(execution_id, len(messages) + 1, ended, condition_evaluated=result.decision)
            )
    if last.sequence != len(messages) + 1:  # not what `Journal` folds: leave it as it is
        return [last]
    messages.append(last)
    return messages


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
