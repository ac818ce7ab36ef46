"""The `flowmanager.v1.ExecutionService` servicer: the execution history over gRPC.

`StartExecution` runs an execution in a task of its own, detached from the
call, through the same `recorded` path as `Execute`. Reads come from the
store, so they see executions that any RPC started, in this process or in
another sharing the file. `WatchExecution` reads the stored events after the
last sequence it sent, then looks again every `WATCH_POLL` seconds until the
execution has finished and every event has been sent: the store orders
events by sequence, so a watcher resuming from the last sequence it received
misses none and repeats none.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import grpc

from flowmanager.v1 import execution_service_pb2 as pb
from flowmanager.v1 import execution_service_pb2_grpc, flow_service_pb2
from flowservice.api.convert import flow_from_request, input_from_request, stubs_from_request
from flowservice.api.history_convert import (
    execution_to_proto,
    next_page_token,
    query_from_request,
)
from flowservice.api.recording import RunningExecutions, check_writable, recorded
from flowservice.api.status import status_for
from flowservice.engine import Engine
from flowservice.errors import (
    ExecutionCancelledError,
    ExecutionFinishedError,
    ExecutionNotFoundError,
)
from flowservice.events import Event
from flowservice.history import RUNNING, ExecutionStore, StoredExecution

__all__ = ["WATCH_POLL", "ExecutionServicer"]

logger = logging.getLogger(__name__)

_Context = grpc.aio.ServicerContext[Any, Any]

WATCH_POLL = 0.05
"""Seconds between a watcher's looks at a running execution's new events."""
_CANCEL_WAIT = 10.0  # seconds CancelExecution waits for the cancelled end to be recorded


class ExecutionServicer(execution_service_pb2_grpc.ExecutionServiceServicer):
    """Serves the history of `store` and starts and cancels executions with `engine`."""

    def __init__(self, engine: Engine, store: ExecutionStore, running: RunningExecutions) -> None:
        self._engine = engine
        self._store = store
        self._running = running

    async def StartExecution(
        self, request: pb.StartExecutionRequest, context: _Context
    ) -> pb.StartExecutionResponse:
        """Validates and starts the flow in a task of its own; returns it running."""
        try:
            check_writable(self._store)
            # The same fields as ExecuteRequest: kept as one, converted as one.
            raw = request.SerializeToString()
            as_execute = flow_service_pb2.ExecuteRequest.FromString(raw)
            events = self._engine.run(  # validates now; no caller's deadline
                flow_from_request(as_execute),
                flow_input=input_from_request(as_execute),
                stubs=stubs_from_request(as_execute),
            )
            messages = recorded(events, self._store, self._running, raw)
            started: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            self._running.in_background(_drain(messages, started))
            execution_id = await started
            return pb.StartExecutionResponse(execution=await self._execution(execution_id))
        except Exception as exc:
            await _abort(context, exc)
            raise  # unreachable: abort raises

    async def GetExecution(
        self, request: pb.GetExecutionRequest, context: _Context
    ) -> pb.GetExecutionResponse:
        """The execution, from the store."""
        try:
            return pb.GetExecutionResponse(execution=await self._execution(request.execution_id))
        except Exception as exc:
            await _abort(context, exc)
            raise  # unreachable: abort raises

    async def ListExecutions(
        self, request: pb.ListExecutionsRequest, context: _Context
    ) -> pb.ListExecutionsResponse:
        """A page of executions, newest first, without their requests."""
        try:
            query = query_from_request(request)
            found = await self._store.find(query)
            response = pb.ListExecutionsResponse(
                executions=[execution_to_proto(s, with_request=False) for s in found]
            )
            if len(found) == query.limit:
                response.next_page_token = next_page_token(request, found[-1])
            return response
        except Exception as exc:
            await _abort(context, exc)
            raise  # unreachable: abort raises

    async def WatchExecution(
        self, request: pb.WatchExecutionRequest, context: _Context
    ) -> AsyncIterator[pb.WatchExecutionResponse]:
        """The stored events after `after_sequence`, then the new ones until the end."""
        try:
            sent = max(request.after_sequence, 0)
            while True:
                stored = await self._stored(request.execution_id)
                # The end is written after every event: read once it is known.
                for event in await self._store.events(request.execution_id, after=sent):
                    message = flow_service_pb2.ExecuteStreamResponse.FromString(event.payload)
                    yield pb.WatchExecutionResponse(event=message)
                    sent = event.sequence
                if stored.status != RUNNING:
                    return
                await asyncio.sleep(WATCH_POLL)
        except Exception as exc:
            await _abort(context, exc)

    async def CancelExecution(
        self, request: pb.CancelExecutionRequest, context: _Context
    ) -> pb.CancelExecutionResponse:
        """Cancels the running execution and returns it once it is recorded cancelled."""
        try:
            stored = await self._stored(request.execution_id)
            if stored.status != RUNNING or not self._running.cancel(request.execution_id):
                raise ExecutionFinishedError(request.execution_id, stored.status)
            async with asyncio.timeout(_CANCEL_WAIT):
                while stored.status == RUNNING:
                    await asyncio.sleep(WATCH_POLL)
                    stored = await self._stored(request.execution_id)
            return pb.CancelExecutionResponse(execution=execution_to_proto(stored))
        except Exception as exc:
            await _abort(context, exc)
            raise  # unreachable: abort raises

    async def _stored(self, execution_id: str) -> StoredExecution:
        stored = await self._store.get(execution_id) if execution_id else None
        if stored is None:
            raise ExecutionNotFoundError(execution_id)
        return stored

    async def _execution(self, execution_id: str) -> pb.Execution:
        return execution_to_proto(await self._stored(execution_id))


async def _drain(
    messages: AsyncGenerator[tuple[Event, flow_service_pb2.ExecuteStreamResponse], None],
    started: asyncio.Future[str],
) -> None:
    """Runs a detached execution to its end; `started` gets its id, or why it did not start."""
    try:
        async with contextlib.aclosing(messages):
            async for event, _ in messages:
                if not started.done():
                    started.set_result(event.execution_id)
    except ExecutionCancelledError:
        pass  # CancelExecution ended it; recorded as cancelled
    except Exception as exc:
        if not started.done():
            started.set_exception(exc)
        else:
            logger.error("a started execution failed to run to its end", exc_info=exc)


async def _abort(context: _Context, exc: Exception) -> None:
    """Ends the call with the status `status_for` chose for `exc`."""
    status = status_for(exc)
    await context.abort(status.code, status.details, status.trailing_metadata)
