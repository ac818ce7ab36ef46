"""The `flowmanager.v1.FlowService` servicer: thin glue between gRPC and the engine.

Both RPCs share one path: convert the request, run the engine, convert what
it yields. Every exception goes through `status_for`, the one mapping from
errors to status codes; this module is the only caller of `abort`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from flowmanager.v1 import flow_service_pb2, flow_service_pb2_grpc

from flowservice.api.convert import event_to_proto, flow_from_request, summary_to_proto
from flowservice.api.status import status_for
from flowservice.engine import Engine

__all__ = ["FlowServicer"]

_Context = grpc.aio.ServicerContext[object, object]


class FlowServicer(flow_service_pb2_grpc.FlowServiceServicer):
    """Serves `Execute` and `ExecuteStream` with one engine."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def Execute(
        self, request: flow_service_pb2.ExecuteRequest, context: _Context
    ) -> flow_service_pb2.ExecuteResponse:
        """Runs the flow to its end and returns its summary."""
        try:
            summary = await self._engine.execute(flow_from_request(request))
            return summary_to_proto(summary)
        except Exception as exc:
            await _abort(context, exc)
            raise  # unreachable: abort raises

    async def ExecuteStream(
        self, request: flow_service_pb2.ExecuteStreamRequest, context: _Context
    ) -> AsyncIterator[flow_service_pb2.ExecuteStreamResponse]:
        """Runs the flow and streams its events as they happen."""
        try:
            async for event in self._engine.run(flow_from_request(request)):
                yield event_to_proto(event)
        except Exception as exc:
            await _abort(context, exc)


async def _abort(context: _Context, exc: Exception) -> None:
    """Ends the call with the status `status_for` chose for `exc`."""
    status = status_for(exc)
    await context.abort(status.code, status.details, status.trailing_metadata)
