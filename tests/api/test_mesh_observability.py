"""A `grpc` task's call is counted and traced, against a real Flow Manager as the target.

Counted in `flowmanager_outbound_calls_total{type,target,code}`, traced as
a client span under its attempt's span; the `http` task's: see
tests/outbound/test_observed_calls.py, a `worker` task's runs:
tests/api/test_observability.py.
"""

from __future__ import annotations

from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from flowservice import Engine, Flow, Limits, Task
from flowservice.api.grpc_task import GrpcTask
from flowservice.observability import Metrics, Tracing
from flowservice.outbound import OutboundPolicy
from flowservice.outbound.observe import OutboundObserver
from flowservice.server import FlowServer
from flowservice.tasks import TaskRegistry

VALIDATE = "flowmanager.v1.FlowService/Validate"
EXECUTE = "flowmanager.v1.FlowService/Execute"
INNER = {"id": "inner", "name": "inner", "start_task": "a", "tasks": [{"name": "a"}]}


async def test_a_grpc_call_is_counted_and_is_a_client_span_under_its_attempt(
    server: FlowServer,
) -> None:
    exporter = InMemorySpanExporter()
    tracing = Tracing(SimpleSpanProcessor(exporter))
    metrics = Metrics()
    target = f"127.0.0.1:{server.port}"
    observer = OutboundObserver(tracing.tracer, metrics.outbound_calls)
    task = GrpcTask(OutboundPolicy.parse([target]), Limits(), observer=observer)
    engine = Engine(TaskRegistry({"grpc": task}), observer=tracing)
    calls = [
        {"target": target, "method": VALIDATE, "request": {"flow": INNER}},
        # An empty flow: the target answers INVALID_ARGUMENT.
        {"target": target, "method": EXECUTE, "request": {"flow": {"tasks": []}}},
    ]
    try:
        for params in calls:
            flow = Flow(id="f", name="f", start_task="a", tasks=(Task("a", "grpc", params=params),))
            await engine.execute(flow)
    finally:
        await engine.aclose()
        tracing.shutdown()

    spans = exporter.get_finished_spans()
    clients = [s for s in spans if s.kind is SpanKind.CLIENT]
    attempts = [s for s in spans if s.name == "task a"]
    assert len(clients) == len(attempts) == 2
    for client, attempt in zip(clients, attempts, strict=True):
        assert client.parent is not None and client.parent.span_id == attempt.context.span_id
    counted = metrics.registry.get_sample_value
    for code in ("OK", "INVALID_ARGUMENT"):
        labels = {"type": "grpc", "target": target, "code": code}
        assert counted("flowmanager_outbound_calls_total", labels) == 1, code
