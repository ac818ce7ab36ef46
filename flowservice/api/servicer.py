"""The `flowmanager.v1.FlowService` servicer: thin glue between gRPC and the engine.

Both RPCs share one path: convert the request, run the engine, record and
convert what it yields (`flowservice.api.recording`). The caller's gRPC
deadline is handed to the engine as the execution's time limit; an
execution that runs out of time ends the call with DEADLINE_EXCEEDED (after
the finished event, on a stream). Any other exception a handler raises ends
the call in `flowservice.api.interceptors.RpcObserver`, which every call goes
through, with the status `status_for` chooses (the one mapping from errors to
status codes); `flowservice.api.auth` refuses a call before it gets here.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import NoReturn, TypeVar

import grpc

from flowmanager.v1 import flow_service_pb2, flow_service_pb2_grpc
from flowservice.api.convert import (
    flow_from_request,
    input_from_request,
    stubs_from_request,
    validation_to_proto,
)
from flowservice.api.flow_refs import resolved
from flowservice.api.idempotency import earlier_execution, finished, replayed
from flowservice.api.recording import RunningExecutions, check_writable, recorded
from flowservice.api.resumption import Resumer
from flowservice.api.status import timed_out_status
from flowservice.engine import Engine, ValidationReport
from flowservice.errors import ExecutionCancelledError, InvalidFlowError
from flowservice.events import Event, ExecutionFinished
from flowservice.history import ExecutionStore, StoredExecution
from flowservice.models import ExecutionStatus, ExecutionSummary
from flowservice.registry import FlowRegistry, MemoryRegistry

__all__ = ["FlowServicer"]

_Context = grpc.aio.ServicerContext[object, object]
_Request = TypeVar(
    "_Request", flow_service_pb2.ExecuteRequest, flow_service_pb2.ExecuteStreamRequest
)


class FlowServicer(flow_service_pb2_grpc.FlowServiceServicer):
    """Serves `Execute`, `ExecuteStream` and `Validate` with one engine."""

    def __init__(
        self,
        engine: Engine,
        store: ExecutionStore,
        running: RunningExecutions,
        *,
        registry: FlowRegistry | None = None,
        resumer: Resumer | None = None,
    ) -> None:
        """`registry`: the flows a request's `flow_ref` names (none stored when None);
        `resumer`: takes over the execution a repeated request waits for when its owner dies."""
        self._engine = engine
        self._store = store
        self._running = running
        self._registry = registry or MemoryRegistry()
        self._resumer = resumer

    async def Execute(
        self, request: flow_service_pb2.ExecuteRequest, context: _Context
    ) -> flow_service_pb2.ExecuteResponse:
        """Runs the flow to its end and returns its summary (a repeat: the first's)."""
        last: tuple[Event, flow_service_pb2.ExecuteStreamResponse | None] | None = None
        to_run = await resolved(request, self._registry)
        raw = request.SerializeToString()
        earlier = await self._earlier(request.request_id, raw)
        if earlier is not None:
            async with self._standing_by(earlier):
                return _summary(await finished(self._store, earlier))
        run = self._recorded_run(to_run, _kept(request, raw, to_run), context, streamed=False)
        async with contextlib.aclosing(run) as events:
            async for item in events:
                last = item
        assert last is not None and isinstance(last[0], ExecutionFinished)  # see Engine.run
        assert last[1] is not None  # the last event's message is always built
        if last[0].summary.status is ExecutionStatus.TIMED_OUT:
            await _abort_timed_out(context, last[0].summary)
        return last[1].execution_finished.result

    async def ExecuteStream(
        self, request: flow_service_pb2.ExecuteStreamRequest, context: _Context
    ) -> AsyncIterator[flow_service_pb2.ExecuteStreamResponse]:
        """Runs the flow and streams its events as they happen (a repeat: the first's)."""
        summary: ExecutionSummary | None = None
        to_run = await resolved(request, self._registry)
        raw = request.SerializeToString()
        earlier = await self._earlier(request.request_id, raw)
        if earlier is not None:
            self._running.release_events(earlier)  # it runs here, maybe: a stream listens now
            async with self._standing_by(earlier):
                async for message in replayed(self._store, earlier):
                    yield message
            return
        run = self._recorded_run(to_run, _kept(request, raw, to_run), context)
        async with contextlib.aclosing(run) as events:
            async for event, built in events:
                assert built is not None  # streamed: every event's message is built
                yield built
                if isinstance(event, ExecutionFinished):
                    summary = event.summary
        if summary is not None and summary.status is ExecutionStatus.TIMED_OUT:
            # The finished event went out first, so the caller sees how far
            # the flow got; the status says it ran out of time.
            await _abort_timed_out(context, summary)

    async def _earlier(self, request_id: str, raw: bytes) -> str | None:
        """The execution a repeated `request_id` started (see `earlier_execution`)."""
        check_writable(self._store)
        return await earlier_execution(request_id, raw, self._store, self._running)

    def _standing_by(self, execution_id: str) -> AbstractAsyncContextManager[None]:
        """While a repeat waits for its execution: takes it over if its server dies."""
        if self._resumer is None:
            return contextlib.nullcontext()
        return self._resumer.standing_by(execution_id)

    def _recorded_run(
        self,
        request: flow_service_pb2.ExecuteRequest | flow_service_pb2.ExecuteStreamRequest,
        raw: bytes,
        context: _Context,
        *,
        streamed: bool = True,
    ) -> AsyncGenerator[tuple[Event, flow_service_pb2.ExecuteStreamResponse | None], None]:
        """The execution `request` (serialized: `raw`) asks for, recorded as it runs.

        `streamed` False: only the last event's message is wanted (see `recorded`).

        Raises at once what the engine raises before running (an invalid
        flow), releasing the request id the caller claimed.
        """
        time_allowed = _time_allowed(context)
        try:
            events = self._engine.run(
                lambda: flow_from_request(request),
                flow_input=input_from_request(request),
                stubs=stubs_from_request(request),
                time_allowed=time_allowed,
                # The flow's bytes identify it exactly: a flow sent again
                # reuses its compiled plan, skipping conversion and validation.
                flow_key=request.flow.SerializeToString() if request.HasField("flow") else None,
            )
        except BaseException:
            self._running.release(request.request_id)
            raise
        return recorded(
            events,
            self._store,
            self._running,
            raw,
            request.request_id,
            streamed=streamed,
            time_allowed=time_allowed,  # a resumed run keeps the caller's deadline
        )

    async def Validate(
        self, request: flow_service_pb2.ValidateRequest, context: _Context
    ) -> flow_service_pb2.ValidateResponse:
        """Checks the flow without running it; problems come back as data."""
        try:
            checked = await resolved(request, self._registry)
            report = self._engine.validate(
                flow_from_request(checked), stubs=stubs_from_request(checked)
            )
        except InvalidFlowError as missing:  # no flow at all: also data, here
            report = ValidationReport(missing.violations, ())
        return validation_to_proto(report)


def _kept(sent: _Request, raw: bytes, to_run: _Request) -> bytes:
    """The bytes the history keeps of the request: `raw` (the sent one's), or the resolved one's."""
    return raw if to_run is sent else to_run.SerializeToString()


def _summary(stored: StoredExecution) -> flow_service_pb2.ExecuteResponse:
    """The summary of a finished execution; ExecutionCancelledError if it was cancelled
    (as its first call ended), or cut short without a summary."""
    if not stored.summary or stored.status == ExecutionStatus.CANCELLED.value:
        raise ExecutionCancelledError(stored.record.execution_id)
    return flow_service_pb2.ExecuteResponse.FromString(stored.summary)


async def _abort_timed_out(context: _Context, summary: ExecutionSummary) -> NoReturn:
    """Ends the call of a timed-out execution with DEADLINE_EXCEEDED (see `timed_out_status`)."""
    status = timed_out_status(summary)
    await context.abort(status.code, status.details, status.trailing_metadata)


# The execution ends this long before the caller's deadline (or a tenth of the
# time left, if less), so the caller still receives the finished event and the
# DEADLINE_EXCEEDED details instead of only its own timeout.
DEADLINE_MARGIN = 0.05


def _time_allowed(context: _Context) -> float | None:
    """The time the execution may take: the caller's deadline, less a margin."""
    remaining = context.time_remaining()
    if remaining is None:
        return None
    return max(remaining - min(DEADLINE_MARGIN, remaining / 10), 0.0)
