"""Idempotent requests (AIP-155): a repeated `request_id` attaches to the first execution.

A request with a `request_id` first looks for the execution that id started:
among the ones starting in this process (`RunningExecutions.claims`, which
closes the gap before the store has the execution), then in the store. None:
the caller claims the id and runs the flow. One: the request's other fields
must be those the execution was started with (ALREADY_EXISTS otherwise), and
the caller replays it, from the store, waiting for it while it runs.

Waiting does not poll: `replayed` and `finished` read the store, and when it
holds nothing new, wait in `ExecutionStore.wait_for_change`, which returns as
soon as a change made in this process is readable. The wait is entered
before the read (`_listening`), so a change between the two still wakes it.
A change made by another process sharing the store is seen after at most
`POLL` seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from flowmanager.v1 import flow_service_pb2
from flowservice.api.journal import stored_messages
from flowservice.api.recording import RunningExecutions
from flowservice.errors import ExecutionNotFoundError, RequestIdReusedError
from flowservice.history import RUNNING, ExecutionStore, StoredExecution

__all__ = ["POLL", "earlier_execution", "finished", "replayed", "stored_execution"]

POLL = 0.05
"""Seconds a watcher waits for a change before it reads the store anyway (another process's)."""


async def earlier_execution(
    request_id: str, request: bytes, store: ExecutionStore, running: RunningExecutions
) -> str | None:
    """The id of the execution `request_id` started; None when none did, and the caller now
    holds the claim on it (which `recorded` releases).

    `request` is the serialized request; RequestIdReusedError when the
    execution was started by a request with other fields.
    """
    if not request_id:
        return None
    while True:
        claim = running.claims.get(request_id)
        if claim is not None:
            await asyncio.wait([claim])
            if claim.cancelled():
                continue  # it never started (or has ended): the store knows
            execution_id = claim.result()
            break
        stored = await store.find_request(request_id)
        if stored is not None:
            execution_id = stored.record.execution_id
            break
        if request_id not in running.claims:  # the look in the store awaited
            running.claims[request_id] = asyncio.get_running_loop().create_future()
            return None
    earlier = await stored_execution(store, execution_id)
    sent = flow_service_pb2.ExecuteRequest.FromString(request)
    if _fields(earlier.record.request, sent) != _fields(request, sent):
        raise RequestIdReusedError(request_id, execution_id)
    return execution_id


async def finished(store: ExecutionStore, execution_id: str) -> StoredExecution:
    """The execution, once it has finished."""
    while True:
        change = await _listening(store, execution_id)
        try:
            stored = await stored_execution(store, execution_id)
            if stored.status != RUNNING:
                return stored
            await change
        finally:
            change.cancel()


async def replayed(
    store: ExecutionStore, execution_id: str, after: int = 0
) -> AsyncIterator[flow_service_pb2.ExecuteStreamResponse]:
    """The execution's events after sequence `after`, stored then live, until it finishes.

    Its end is written after its every event, so the events read once it is
    known to have finished are the last ones.
    """
    while True:
        change = await _listening(store, execution_id)
        try:
            stored = await stored_execution(store, execution_id)
            # From `after` itself: a stored event implies the one after it.
            events = await store.events(execution_id, after=max(after - 1, 0))
            messages = stored_messages(stored, events, after)
            if not messages and stored.status == RUNNING:
                await change  # nothing new yet: wait for it, then read again
                continue
        finally:
            change.cancel()
        for message in messages:
            yield message
            after = message.sequence
        if stored.status != RUNNING:
            return


async def _listening(store: ExecutionStore, execution_id: str) -> asyncio.Task[None]:
    """A task waiting for the execution's next change (or `POLL`), already listening.

    Entered before the caller reads, so that a change made between the read
    and the wait wakes it: the task starts at once (its first step runs
    before the caller's next one), and a store's waiting starts there.
    """
    change = asyncio.ensure_future(store.wait_for_change(execution_id, POLL))
    await asyncio.sleep(0)
    return change


async def stored_execution(store: ExecutionStore, execution_id: str) -> StoredExecution:
    """The execution; ExecutionNotFoundError when the store has none by that id."""
    stored = await store.get(execution_id) if execution_id else None
    if stored is None:
        raise ExecutionNotFoundError(execution_id)
    return stored


def _fields(request: bytes, sent: flow_service_pb2.ExecuteRequest) -> bytes:
    """The request's fields but its request id, comparable: serialized deterministically.

    A request by reference is kept resolved (`flowservice.api.flow_refs`):
    compared as `sent`, without the body the server added and, when `sent`
    asks for the latest version, whichever version that was.
    """
    message = flow_service_pb2.ExecuteRequest.FromString(request)
    message.ClearField("request_id")
    if message.HasField("flow_ref"):
        message.ClearField("flow")
        if not sent.flow_ref.version:
            message.flow_ref.version = 0
    return message.SerializeToString(deterministic=True)
