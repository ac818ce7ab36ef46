"""The `flowmanager.v1.ExecutionService` servicer: the execution history over gRPC.

`StartExecution` runs an execution in a task of its own, detached from the
call, through the same `recorded` path as `Execute`. Reads come from the
store, so they see executions that any RPC started, in this process or in
another sharing the file. `WatchExecution` replays the stored events after the
last sequence it sent, then waits for the store's next change (at once for
this process's writes; another process's within `idempotency.POLL` seconds)
until the execution has finished and every event has been sent: the store orders
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
from flowservice.api.flow_refs import resolved
from flowservice.api.history_convert import (
    execution_to_proto,
    next_page_token,
    query_from_request,
)
from flowservice.api.idempotency import (
    earlier_execution,
    finished,
    replayed,
    stored_execution,
)
from flowservice.api.recording import (
    RunningExecutions,
    check_writable,
    record_cancelled,
    recorded,
)
from flowservice.engine import Engine
from flowservice.errors import (
    ExecutionCancelledError,
    ExecutionFinishedError,
    LeaseLostError,
)
from flowservice.events import Event
from flowservice.history import RUNNING, ExecutionStore
from flowservice.registry import FlowRegistry, MemoryRegistry

__all__ = ["ExecutionServicer"]

logger = logging.getLogger(__name__)

_Context = grpc.aio.ServicerContext[Any, Any]

_CANCEL_WAIT = 10.0  # seconds CancelExecution waits for the cancelled end to be recorded


class ExecutionServicer(execution_service_pb2_grpc.ExecutionServiceServicer):
    """Serves the history of `store` and starts and cancels executions with `engine`."""

    def __init__(
        self,
        engine: Engine,
        store: ExecutionStore,
        running: RunningExecutions,
        *,
        registry: FlowRegistry | None = None,
    ) -> None:
        """`registry`: the flows a request's `flow_ref` names (none stored when None)."""
        self._engine = engine
        self._store = store
        self._running = running
        self._registry = registry or MemoryRegistry()

    async def StartExecution(
        self, request: pb.StartExecutionRequest, context: _Context
    ) -> pb.StartExecutionResponse:
        """Validates and starts the flow in a task of its own; returns it running."""
        check_writable(self._store)
        to_run = await resolved(request, self._registry)
        # The same fields as ExecuteRequest: kept as one, converted as one.
        raw = request.SerializeToString()
        earlier = await earlier_execution(request.request_id, raw, self._store, self._running)
        if earlier is not None:
            return pb.StartExecutionResponse(execution=await self._execution(earlier))
        messages = self._detached_run(to_run.SerializeToString(), request.request_id)
        started: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._running.in_background(_drain(messages, started))
        execution_id = await started
        return pb.StartExecutionResponse(execution=await self._execution(execution_id))

    def _detached_run(
        self, raw: bytes, request_id: str
    ) -> AsyncGenerator[tuple[Event, flow_service_pb2.ExecuteStreamResponse | None], None]:
        """The recorded run of the serialized request; validates now; no caller's deadline."""
        as_execute = flow_service_pb2.ExecuteRequest.FromString(raw)
        try:
            events = self._engine.run(
                flow_from_request(as_execute),
                flow_input=input_from_request(as_execute),
                stubs=stubs_from_request(as_execute),
            )
        except BaseException:
            self._running.release(request_id)
            raise
        return recorded(events, self._store, self._running, raw, request_id, streamed=False)

    async def GetExecution(
        self, request: pb.GetExecutionRequest, context: _Context
    ) -> pb.GetExecutionResponse:
        """The execution, from the store."""
        return pb.GetExecutionResponse(execution=await self._execution(request.execution_id))

    async def ListExecutions(
        self, request: pb.ListExecutionsRequest, context: _Context
    ) -> pb.ListExecutionsResponse:
        """A page of executions, newest first, without their requests."""
        query = query_from_request(request)
        found = await self._store.find(query)
        response = pb.ListExecutionsResponse(
            executions=[execution_to_proto(s, with_request=False) for s in found]
        )
        if len(found) == query.limit:
            response.next_page_token = next_page_token(request, found[-1])
        return response

    async def WatchExecution(
        self, request: pb.WatchExecutionRequest, context: _Context
    ) -> AsyncIterator[pb.WatchExecutionResponse]:
        """The stored events after `after_sequence`, then the new ones until the end."""
        after = max(request.after_sequence, 0)
        self._running.release_events(request.execution_id)  # if it runs here, it is watched now
        async for message in replayed(self._store, request.execution_id, after):
            yield pb.WatchExecutionResponse(event=message)

    async def CancelExecution(
        self, request: pb.CancelExecutionRequest, context: _Context
    ) -> pb.CancelExecutionResponse:
        """Cancels the running execution and returns it once it is recorded cancelled.

        One that runs in another process is cancelled there: the store holds
        the request until its owner renews its lease. One whose owner is gone
        (its lease expired) is claimed and recorded cancelled here.
        """
        execution_id = request.execution_id
        stored = await stored_execution(self._store, execution_id)
        if stored.status != RUNNING or not (
            self._running.cancel(execution_id)
            or await asyncio.shield(self._cancel_elsewhere(execution_id))
        ):
            stored = await stored_execution(self._store, execution_id)
            raise ExecutionFinishedError(execution_id, stored.status)
        async with asyncio.timeout(_CANCEL_WAIT + self._store.lease_seconds):
            stored = await finished(self._store, execution_id)
        return pb.CancelExecutionResponse(execution=execution_to_proto(stored))

    async def _cancel_elsewhere(self, execution_id: str) -> bool:
        """Asks the owner in another process to cancel the execution; False if it is not running.

        An owner that is gone would never hear of it: the execution is
        claimed (which fences that owner out) and its end recorded, with its
        last event, here. A process whose keeper claims it first records it
        the same way (`Resumer`).
        """
        if not await self._store.request_cancel(execution_id):
            return False
        for claim in await self._store.claim(1, execution_id):
            await record_cancelled(self._store, claim.execution.record.execution_id)
        return True

    async def _execution(self, execution_id: str) -> pb.Execution:
        return execution_to_proto(await stored_execution(self._store, execution_id))


async def _drain(
    messages: AsyncGenerator[tuple[Event, flow_service_pb2.ExecuteStreamResponse | None], None],
    started: asyncio.Future[str],
) -> None:
    """Runs a detached execution to its end; `started` gets its id, or why it did not start."""
    try:
        async with contextlib.aclosing(messages):
            async for event, _ in messages:
                if not started.done():
                    started.set_result(event.execution_id)
    except (ExecutionCancelledError, LeaseLostError):
        pass  # CancelExecution ended it (recorded as cancelled), or another process runs it on
    except Exception as exc:
        if not started.done():
            started.set_exception(exc)
        else:
            logger.error("a started execution failed to run to its end", exc_info=exc)
