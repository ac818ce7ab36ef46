"""What every outbound call carries, whatever its protocol: headers and a deadline.

The deadline (`call_timeout`) is the earliest of the task's `timeout` and
what is left of the execution's time. The engine also cancels the task at
that moment; the call's own timeout tells the downstream service (gRPC sends
it as `grpc-timeout`) and backs the cancellation up.

Headers:

- `x-request-id`: the id of the request that started the execution, so one
  id follows a call through the mesh;
- `traceparent` (and `tracestate`): the caller's trace context, by
  OpenTelemetry's configured propagator (nothing when tracing is off);
- `x-idempotency-key`: `execution id/task/step`, the same on every attempt
  of one task run, so a downstream service can drop a duplicate.
"""

from __future__ import annotations

import asyncio

from opentelemetry import propagate

from flowservice.observability import request_id_var
from flowservice.tasks import TaskContext

__all__ = ["IDEMPOTENCY_KEY", "REQUEST_ID", "call_timeout", "outbound_headers"]

REQUEST_ID = "x-request-id"
IDEMPOTENCY_KEY = "x-idempotency-key"


def outbound_headers(ctx: TaskContext) -> dict[str, str]:
    """The propagated headers of one attempt of the task run `ctx` describes."""
    headers: dict[str, str] = {IDEMPOTENCY_KEY: ctx.idempotency_key}
    request_id = request_id_var.get()
    if request_id:
        headers[REQUEST_ID] = request_id
    propagate.inject(headers)
    return headers


def call_timeout(ctx: TaskContext) -> float | None:
    """Seconds the call may take: the task's timeout or the execution's time left, earliest."""
    limits: list[float] = []
    if ctx.task.timeout is not None:
        limits.append(ctx.task.timeout.total_seconds())
    if ctx.deadline is not None:
        limits.append(ctx.deadline - asyncio.get_running_loop().time())
    return max(min(limits), 0.0) if limits else None
