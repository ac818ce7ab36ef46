"""Each outbound call is a client span under its attempt's span, and a counted metric."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from flowservice import Engine, Flow, Limits, Task
from flowservice.observability import Metrics, Tracing
from flowservice.outbound import HttpTask, OutboundPolicy
from flowservice.outbound.observe import OutboundObserver
from flowservice.tasks import TaskRegistry
from tests.outbound.downstream import Downstream, downstream


@pytest.fixture
def server() -> Iterator[Downstream]:
    with downstream() as seen:
        yield seen


async def test_the_downstream_sees_the_client_span_and_the_call_is_counted(
    server: Downstream,
) -> None:
    exporter = InMemorySpanExporter()
    tracing = Tracing(SimpleSpanProcessor(exporter))
    metrics = Metrics()
    observer = OutboundObserver(tracing.tracer, metrics.outbound_calls)
    policy = OutboundPolicy.parse([f"127.0.0.1:{server.port}"])
    engine = Engine(TaskRegistry({"http": HttpTask(policy, Limits(), observer)}), observer=tracing)
    flow = Flow(
        id="f",
        name="f",
        start_task="a",
        tasks=(Task("a", "http", params={"url": f"{server.base}/json"}),),
    )
    try:
        await engine.execute(flow)
    finally:
        await engine.aclose()
        tracing.shutdown()

    [client] = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CLIENT]
    [attempt] = [s for s in exporter.get_finished_spans() if s.name == "task a"]
    assert client.parent is not None and client.parent.span_id == attempt.context.span_id
    assert f"{client.context.span_id:016x}" in server.headers[0]["traceparent"]
    counted = metrics.registry.get_sample_value(
        "flowmanager_outbound_calls_total",
        {"type": "http", "target": f"127.0.0.1:{server.port}", "code": "200"},
    )
    assert counted == 1
