"""Each outbound call counted and traced: a client span, and a metric by type, target and code.

The span is a child of the attempt's span (`Tracing.attempt`) and is
current while the call's headers are written, so the `traceparent` a
downstream service receives names this client span. Without tracing the
span is OpenTelemetry's no-op, and `traceparent` carries the caller's
context, if any.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from opentelemetry import trace
from prometheus_client import Counter

__all__ = ["CallRecord", "OutboundObserver"]

_TRACER = "flowservice.outbound"


@dataclass(slots=True)
class CallRecord:
    """What the task learnt of one call; `code` starts as `ERROR` until it says otherwise."""

    code: str = "ERROR"
    """`OK` or the gRPC code name for `grpc`, the status (`200`) for `http`,
    or the error type when no reply came (`TARGET_NOT_ALLOWED`)."""


class OutboundObserver:
    """Where outbound calls are reported: a tracer and a counter, each optional."""

    def __init__(self, tracer: trace.Tracer | None = None, calls: Counter | None = None) -> None:
        self._tracer = tracer or trace.get_tracer(_TRACER)
        self._calls = calls

    @contextlib.contextmanager
    def call(self, task_type: str, target: str, name: str) -> Iterator[CallRecord]:
        """A client span named `name` around one call to `target`, counted when it ends."""
        record = CallRecord()
        attributes = {"flowmanager.task_type": task_type, "server.address": target}
        with self._tracer.start_as_current_span(
            name, kind=trace.SpanKind.CLIENT, attributes=attributes
        ) as span:
            try:
                yield record
            finally:
                span.set_attribute("flowmanager.outbound.code", record.code)
                if self._calls is not None:
                    self._calls.labels(task_type, target, record.code).inc()
