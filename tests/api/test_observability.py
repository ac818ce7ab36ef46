"""Metrics, traces and structured logs, observed on a real server."""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.request
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from opentelemetry.instrumentation.grpc import GrpcAioInstrumentorServer
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from flowmanager.v1 import flow_service_pb2_grpc
from flowservice import Worker, WorkItem
from flowservice.observability import Metrics, Tracing, configure_logging
from flowservice.server import FlowServer, create_server
from flowservice.settings import Settings
from flowservice.tasks import TaskRegistry
from tests.api.conftest import Gate, execute_request, stream_request
from tests.api.test_execute import seed_body

Stub = flow_service_pb2_grpc.FlowServiceStub


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(max_flow_ids=3)


@pytest.fixture
async def server(
    settings: Settings, registry: TaskRegistry, metrics: Metrics
) -> AsyncIterator[FlowServer]:
    flow_server = create_server(settings, registry, metrics=metrics)
    await flow_server.start()
    yield flow_server
    await flow_server.stop(grace=None)


def scrape(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample served at /metrics, fetched over HTTP as Prometheus would."""
    port = metrics.serve("127.0.0.1:0")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_metrics_count_executions_tasks_and_rpcs(
    stub: Stub, metrics: Metrics, gate: Gate
) -> None:
    await stub.Execute(execute_request(seed_body()))
    failing = seed_body()
    failing["flow"]["tasks"][1]["params"] = {"fail": True}
    await stub.Execute(execute_request(failing))
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.Execute(execute_request({"flow": {"tasks": []}}))
    held = {"flow": {"id": "held", "start_task": "h", "tasks": [{"name": "h", "type": "gate"}]}}
    call = stub.ExecuteStream(stream_request(held))
    await call.read()
    await gate.entered.wait()
    call.cancel()
    async with asyncio.timeout(5):
        while metrics.registry.get_sample_value("flowmanager_executions_in_flight"):
            await asyncio.sleep(0.01)

    samples = scrape(metrics)

    def value(name: str, **labels: str) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    assert value("flowmanager_executions_total", flow_id="flow123", status="completed") == 1
    assert value("flowmanager_executions_total", flow_id="flow123", status="failed") == 1
    assert value("flowmanager_executions_total", flow_id="held", status="cancelled") == 1
    assert value("flowmanager_task_runs_total", type="mock", outcome="success") == 4
    assert value("flowmanager_task_runs_total", type="mock", outcome="failure") == 1
    assert value("flowmanager_task_duration_seconds_count", type="mock") == 5
    assert value("flowmanager_execution_duration_seconds_count", status="completed") == 1
    assert value("flowmanager_executions_in_flight") == 0
    execute = "/flowmanager.v1.FlowService/Execute"
    assert value("flowmanager_rpcs_total", method=execute, code="OK") == 2
    assert value("flowmanager_rpcs_total", method=execute, code="INVALID_ARGUMENT") == 1
    stream = "/flowmanager.v1.FlowService/ExecuteStream"
    assert value("flowmanager_rpcs_total", method=stream, code="CANCELLED") == 1


async def test_worker_task_runs_are_counted_by_task_type(
    server: FlowServer, metrics: Metrics
) -> None:
    async def answer(item: WorkItem) -> dict[str, object]:
        return {"step": item.step}

    worker = Worker(f"127.0.0.1:{server.port}", {"q": answer})
    serving = asyncio.create_task(worker.run())
    try:
        async with asyncio.timeout(10):
            await worker.connected.wait()
        flow = {
            "flow": {
                "id": "w",
                "name": "w",
                "start_task": "a",
                "tasks": [{"name": "a", "type": "worker", "params": {"queue": "q"}}],
            }
        }
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = flow_service_pb2_grpc.FlowServiceStub(channel)
            reply = await stub.Execute(execute_request(flow))
    finally:
        worker.stop()
        await serving
    assert reply.task_results[0].output["step"] == 1
    sample = metrics.registry.get_sample_value
    assert sample("flowmanager_task_runs_total", {"type": "worker", "outcome": "success"}) == 1
    assert sample("flowmanager_task_duration_seconds_count", {"type": "worker"}) == 1


async def test_flow_id_labels_are_bounded(stub: Stub, metrics: Metrics) -> None:
    for flow_id in ("a", "b", "c", "d", "e"):
        body = {"flow": {"id": flow_id, "start_task": "t", "tasks": [{"name": "t"}]}}
        await stub.Execute(execute_request(body))

    samples = scrape(metrics)

    flow_ids = {
        dict(labels)["flow_id"]
        for (name, labels) in samples
        if name == "flowmanager_executions_total"
    }
    assert flow_ids == {"a", "b", "c", "_other"}
    assert (
        samples[("flowmanager_executions_total", (("flow_id", "_other"), ("status", "completed")))]
        == 2
    )


@pytest.fixture
def spans() -> Iterator[tuple[Tracing, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    tracing = Tracing(SimpleSpanProcessor(exporter))
    yield tracing, exporter
    GrpcAioInstrumentorServer().uninstrument()
    tracing.shutdown()


async def test_traces_have_one_span_per_execution_and_attempt_under_the_callers_trace(
    settings: Settings, registry: TaskRegistry, spans: tuple[Tracing, InMemorySpanExporter]
) -> None:
    tracing, exporter = spans
    flow_server = create_server(settings, registry, tracing=tracing)
    await flow_server.start()
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    body = seed_body()
    body["flow"]["tasks"][1]["params"] = {"fail_attempts": 1}
    body["flow"]["tasks"][1]["retry"] = {"max_attempts": 2, "initial_interval": "0.001s"}
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{flow_server.port}") as channel:
            await flow_service_pb2_grpc.FlowServiceStub(channel).Execute(
                execute_request(body),
                metadata=(("traceparent", f"00-{trace_id}-00f067aa0ba902b7-01"),),
            )
    finally:
        await flow_server.stop(grace=None)

    finished = exporter.get_finished_spans()
    by_name: dict[str, list[object]] = {}
    for span in finished:
        by_name.setdefault(span.name, []).append(span)
    (execution,) = by_name["execute flow123"]
    assert len(by_name["task task1"]) == 1
    assert len(by_name["task task2"]) == 2  # one span per attempt
    assert len(by_name["task task3"]) == 1
    for span in finished:
        assert f"{span.context.trace_id:032x}" == trace_id  # type: ignore[attr-defined]
    for name in ("task task1", "task task2", "task task3"):
        for span in by_name[name]:
            assert span.parent.span_id == execution.context.span_id  # type: ignore[attr-defined]
    assert execution.attributes["flowmanager.status"] == "completed"  # type: ignore[attr-defined]


async def test_json_logs_carry_request_execution_and_flow_ids(
    stub: Stub, capsys: pytest.CaptureFixture[str]
) -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    configure_logging("INFO", "json")
    try:
        # A failed execution is logged at INFO (a completed one only at DEBUG).
        failing = seed_body()
        failing["flow"]["tasks"][0]["params"] = {"fail": True}
        response = await stub.Execute(
            execute_request(failing), metadata=(("x-request-id", "req-42"),)
        )
    finally:
        root.handlers[:], root.level = saved[0], saved[1]

    lines = [
        json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")
    ]
    finished = [line for line in lines if line.get("execution_id") == response.execution_id]
    assert finished, lines
    assert finished[-1]["request_id"] == "req-42"
    assert finished[-1]["flow_id"] == "flow123"
    assert finished[-1]["status"] == "failed"
    assert finished[-1]["level"] == "INFO"


async def test_metrics_count_the_compiled_plans_reused(stub: Stub, metrics: Metrics) -> None:
    for _ in range(3):
        await stub.Execute(execute_request(seed_body()))
    other = seed_body()
    other["flow"]["id"] = "another"
    await stub.Execute(execute_request(other))

    samples = scrape(metrics)

    assert samples[("flowmanager_plan_cache_hits_total", ())] == 2
    assert samples[("flowmanager_plan_cache_misses_total", ())] == 2
    assert samples[("flowmanager_plan_cache_plans", ())] == 2
