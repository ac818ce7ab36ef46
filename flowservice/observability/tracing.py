"""OpenTelemetry traces: one span per execution and one per task attempt.

Off unless configured (`--otlp-endpoint` or OTEL_EXPORTER_OTLP_ENDPOINT).
When on, the gRPC server instrumentation takes the caller's trace context
from the incoming metadata, so the execution span is a child of the
caller's span and each attempt span a child of the execution's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.trace import Status, StatusCode

from flowservice.events import Event, ExecutionFinished, TaskFinished
from flowservice.models import ExecutionStatus, Flow, Task, TaskOutcome

__all__ = ["Tracing"]

SERVICE_NAME = "flowmanager"


class Tracing:
    """An `Observer` that records spans with its own tracer provider."""

    def __init__(self, processor: SpanProcessor) -> None:
        self.provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
        """Owns the span processor; shut it down to flush."""
        self.provider.add_span_processor(processor)
        self._tracer = self.provider.get_tracer("flowservice")
        self._executions: dict[str, trace.Span] = {}

    @classmethod
    def otlp(cls, endpoint: str) -> Tracing:
        """Tracing that exports to an OTLP/gRPC collector at `endpoint`."""
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        return cls(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))

    @property
    def tracer(self) -> trace.Tracer:
        """Its tracer, for spans recorded outside the engine (outbound calls)."""
        return self._tracer

    def instrument_grpc_server(self) -> None:
        """Makes grpc.aio servers created from now on trace RPCs and read incoming context."""
        from opentelemetry.instrumentation.grpc import GrpcAioInstrumentorServer

        GrpcAioInstrumentorServer().instrument(  # type: ignore[no-untyped-call]
            tracer_provider=self.provider
        )

    def shutdown(self) -> None:
        """Flushes and stops exporting."""
        self.provider.shutdown()

    @contextlib.contextmanager
    def execution(self, flow: Flow, execution_id: str) -> Iterator[None]:
        """A span around the whole execution, current while it runs."""
        attributes = {"flowmanager.execution_id": execution_id, "flowmanager.flow_id": flow.id}
        with self._tracer.start_as_current_span(
            f"execute {flow.id or flow.name or 'flow'}", attributes=attributes
        ) as span:
            self._executions[execution_id] = span
            try:
                yield
            finally:
                self._executions.pop(execution_id, None)

    @contextlib.contextmanager
    def attempt(self, task: Task, step: int, attempt: int) -> Iterator[None]:
        """A span around one attempt; its task's code runs inside it."""
        attributes: dict[str, str | int] = {
            "flowmanager.task": task.name,
            "flowmanager.task_type": task.type,
            "flowmanager.step": step,
            "flowmanager.attempt": attempt,
        }
        with self._tracer.start_as_current_span(f"task {task.name}", attributes=attributes):
            yield

    def event(self, event: Event) -> None:
        """Marks failed tasks and the execution's outcome on the execution span."""
        span = self._executions.get(event.execution_id)
        if span is None:
            return
        match event:
            case TaskFinished() if event.result.outcome is TaskOutcome.FAILURE:
                span.add_event(
                    "task failed",
                    {"flowmanager.task": event.result.task, "error": event.result.error},
                )
            case ExecutionFinished():
                summary = event.summary
                span.set_attribute("flowmanager.status", summary.status.value)
                span.set_attribute("flowmanager.steps", len(summary.executed_tasks))
                if summary.status is not ExecutionStatus.COMPLETED:
                    span.set_status(Status(StatusCode.ERROR, summary.error))
