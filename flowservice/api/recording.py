"""Records the executions the servicer runs in the history store.

`recorded` sits between the engine's events and the call: it converts each
event to the message `ExecuteStream` sends, hands its bytes to the store, and
passes the message on. The store is told of the end, and the call waits until
it is durable, before the last message leaves: no caller hears of an end the
history does not hold. An execution whose caller went away (the engine ends
it at once) is recorded as cancelled, without holding up the cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from datetime import UTC, datetime

from flowmanager.v1 import flow_service_pb2
from flowservice.api.convert import event_to_proto
from flowservice.errors import StoreUnavailableError
from flowservice.events import Event, ExecutionFinished, ExecutionStarted
from flowservice.history import ExecutionRecord, ExecutionStore, StoredEvent
from flowservice.models import ExecutionStatus
from flowservice.observability import request_id_var

__all__ = ["check_writable", "recorded"]

# Recordings of cancelled executions still being written; held so that they
# are not garbage-collected before they finish.
_pending: set[asyncio.Task[None]] = set()


def check_writable(store: ExecutionStore) -> None:
    """Raises StoreUnavailableError when `store` cannot record a new execution."""
    if store.failure:
        raise StoreUnavailableError(store.failure)


async def recorded(
    events: AsyncGenerator[Event, None], store: ExecutionStore, request: bytes, request_id: str = ""
) -> AsyncGenerator[tuple[Event, flow_service_pb2.ExecuteStreamResponse], None]:
    """Each of `events` with its message, recorded in `store` before it is yielded.

    `request` is the serialized request that started the execution (kept
    with it); `request_id` its idempotency key. Closes `events` when closed.
    """
    execution_id = ""
    finished = False
    try:
        async with contextlib.aclosing(events):
            async for event in events:
                message = event_to_proto(event)
                if isinstance(event, ExecutionStarted):
                    execution_id = event.execution_id
                    store.begin(_record(event, request, request_id))
                store.append(execution_id, StoredEvent(event.sequence, message.SerializeToString()))
                if isinstance(event, ExecutionFinished):
                    finished = True  # from here on, its end is the store's to write
                    summary = message.execution_finished.result.SerializeToString()
                    status = event.summary.status.value
                    await store.finish(execution_id, status, summary, event.time)
                yield event, message
    finally:
        if execution_id and not finished:
            _record_cancelled(store, execution_id)


def _record(event: ExecutionStarted, request: bytes, request_id: str) -> ExecutionRecord:
    return ExecutionRecord(
        execution_id=event.execution_id,
        flow_id=event.flow_id,
        request=request,
        request_id=request_id,
        caller_request_id=request_id_var.get(),
        started_at=event.time,
    )


def _record_cancelled(store: ExecutionStore, execution_id: str) -> None:
    """Records, in the background, that the execution ended without its last event."""

    async def finish() -> None:
        with contextlib.suppress(StoreUnavailableError):  # the failure is in store.failure
            await store.finish(
                execution_id, ExecutionStatus.CANCELLED.value, b"", datetime.now(UTC)
            )

    task = asyncio.get_running_loop().create_task(finish())
    _pending.add(task)
    task.add_done_callback(_pending.discard)
