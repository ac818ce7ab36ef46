"""`flowservice.client.FlowClient` against a real in-process server on 127.0.0.1:0."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from flowmanager.v1 import flow_pb2
from flowmanager.v1 import flow_service_pb2 as pb
from flowservice.client import FlowClient, FlowClientError
from flowservice.limits import Limits
from flowservice.server import FlowServer, create_server
from flowservice.settings import Settings
from tests.e2e.conftest import EXAMPLES

FLOW_SERVICE = "flowmanager.v1.FlowService"


def example(name: str) -> pb.ExecuteRequest:
    """An example request file, parsed as grpcurl would send it."""
    body = json.loads((EXAMPLES / name).read_text())
    return json_format.ParseDict(body, pb.ExecuteRequest())


def flow(body: dict[str, Any]) -> flow_pb2.Flow:
    return json_format.ParseDict(body, flow_pb2.Flow())


ROUTE_FLOW = {
    "start_task": "check",
    "tasks": [{"name": "check"}, {"name": "fast"}, {"name": "slow"}],
    "conditions": [
        {
            "source_task": "check",
            "expression": 'input.mode == "fast"',
            "target_task_success": "fast",
            "target_task_failure": "slow",
        },
        {"source_task": "fast", "outcome": "success", "target_task_success": "end"},
    ],
}


@pytest.fixture
def settings() -> Settings:
    # One execution at a time, so tests can see the server shed and free a slot.
    return Settings(
        store="memory", address="127.0.0.1:0", limits=Limits(max_concurrent_executions=1)
    )


@pytest.fixture
async def flow_server(settings: Settings) -> AsyncIterator[FlowServer]:
    flow_server = create_server(settings)
    await flow_server.start()
    yield flow_server
    await flow_server.stop(grace=None)


@pytest.fixture
async def client(flow_server: FlowServer) -> AsyncIterator[FlowClient]:
    async with FlowClient(f"127.0.0.1:{flow_server.port}") as client:
        yield client


async def test_execute_a_bare_flow(client: FlowClient) -> None:
    response = await client.execute(example("seed-flow.json").flow)

    assert response.status == pb.EXECUTION_STATUS_COMPLETED
    assert list(response.executed_tasks) == ["task1", "task2", "task3"]


async def test_execute_a_failing_flow_is_a_response_not_an_error(client: FlowClient) -> None:
    response = await client.execute(example("seed-failure.json"))

    assert response.status == pb.EXECUTION_STATUS_FAILED
    assert response.failed_task == "task2"


async def test_input_and_stubs_replace_the_requests_own(client: FlowClient) -> None:
    request = pb.ExecuteRequest(flow=flow(ROUTE_FLOW))
    request.input.update({"mode": "slow"})

    as_sent = await client.execute(request)
    with_input = await client.execute(request, input={"mode": "fast"})
    stubbed = await client.execute(
        request,
        input={"mode": "fast"},
        stubs={"fast": pb.TaskStub(outcome=pb.TASK_OUTCOME_FAILURE, error="what if")},
    )

    assert list(as_sent.executed_tasks) == ["check", "slow"]
    assert list(with_input.executed_tasks) == ["check", "fast"]
    assert stubbed.status == pb.EXECUTION_STATUS_FAILED
    assert stubbed.task_results[1].stubbed
    assert stubbed.task_results[1].error == "what if"
    assert request.input["mode"] == "slow"  # the caller's request is left alone


async def test_stream_yields_every_event_in_order(client: FlowClient) -> None:
    events = [event async for event in client.stream(example("seed-flow.json"))]

    kinds = [event.WhichOneof("event") for event in events]
    assert kinds[0] == "execution_started"
    assert kinds[-1] == "execution_finished"
    assert kinds.count("task_started") == kinds.count("task_finished") == 3
    assert [event.sequence for event in events] == list(range(1, len(events) + 1))
    assert events[-1].execution_finished.result.status == pb.EXECUTION_STATUS_COMPLETED


async def test_an_invalid_flow_raises_with_field_violations_and_error_info(
    client: FlowClient,
) -> None:
    invalid = flow(
        {
            "start_task": "fetch",
            "tasks": [{"name": "fetch", "type": "download"}],
            "conditions": [
                {"source_task": "fetch", "outcome": "ok", "target_task_success": "store"}
            ],
        }
    )

    with pytest.raises(FlowClientError) as raised:
        await client.execute(invalid)

    error = raised.value
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "unknown task type 'download'" in error.message
    assert [(v.field, v.reason) for v in error.field_violations] == [
        ("flow.tasks[0].type", "UNKNOWN_TASK_TYPE"),
        ("flow.conditions[0].outcome", "INVALID_OUTCOME"),
        ("flow.conditions[0].target_task_success", "UNKNOWN_TARGET_TASK"),
    ]
    assert error.error_info is not None
    assert (error.error_info.reason, error.error_info.domain) == ("INVALID_FLOW", "flowmanager")
    assert error.error_info.metadata["violations"] == "3"
    assert error.status is not None and len(error.status.details) == 2
    assert not error.unreachable


async def test_a_flow_timeout_raises_deadline_exceeded_with_the_limit(client: FlowClient) -> None:
    request = example("flow-timeout.json")
    request.flow.timeout.FromMilliseconds(200)

    with pytest.raises(FlowClientError) as raised:
        await client.execute(request)

    error = raised.value
    assert error.code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert error.error_info is not None
    assert error.error_info.reason == "DEADLINE_EXCEEDED"
    assert error.error_info.metadata["limit"] == "flow.timeout"


async def test_a_timed_out_stream_yields_the_finished_event_then_raises(
    client: FlowClient,
) -> None:
    request = example("flow-timeout.json")
    request.flow.timeout.FromMilliseconds(200)
    events: list[pb.ExecuteStreamResponse] = []

    with pytest.raises(FlowClientError) as raised:
        async for event in client.stream(request):
            events.append(event)

    assert raised.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert events[-1].execution_finished.result.status == pb.EXECUTION_STATUS_TIMED_OUT


@pytest.mark.parametrize("per_call", [True, False])
async def test_timeout_is_the_calls_deadline(flow_server: FlowServer, per_call: bool) -> None:
    address = f"127.0.0.1:{flow_server.port}"
    started = time.monotonic()

    async with FlowClient(address, timeout=None if per_call else 0.3) as client:
        with pytest.raises(FlowClientError) as raised:
            await client.execute(example("slow-flow.json"), timeout=0.3 if per_call else None)

    assert raised.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 3  # the flow's task alone takes 5 s


async def test_a_busy_server_sheds_with_error_info_and_leaving_a_stream_frees_it(
    client: FlowClient,
) -> None:
    slow = client.stream(example("slow-flow.json"))
    async for event in slow:
        if event.HasField("task_started"):
            break  # the execution is running; leaving the loop must cancel it
    await slow.aclose()

    # The server frees the slot as the cancellation reaches it.
    response = await eventually(lambda: client.execute(example("seed-flow.json")))
    assert response.status == pb.EXECUTION_STATUS_COMPLETED

    running = client.stream(example("slow-flow.json"))
    await anext(running)  # execution_started: the one slot is taken
    with pytest.raises(FlowClientError) as raised:
        await client.execute(example("seed-flow.json"))
    await running.aclose()

    error = raised.value
    assert error.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.error_info is not None
    assert error.error_info.reason == "TOO_MANY_EXECUTIONS"
    assert error.error_info.metadata["limit"] == "max_concurrent_executions"
    assert error.error_info.metadata["limit_value"] == "1"


async def test_validate_returns_problems_as_data(client: FlowClient) -> None:
    response = await client.validate(flow({"start_task": "a", "tasks": [{"name": "a"}, {}]}))

    assert not response.valid
    assert [(issue.field, issue.reason) for issue in response.errors] == [
        ("flow.tasks[1].name", "MISSING_TASK_NAME")
    ]


async def test_health_of_the_server_and_of_the_flow_service(client: FlowClient) -> None:
    assert (await client.health()).status == health_pb2.HealthCheckResponse.SERVING
    assert (await client.health(FLOW_SERVICE)).status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(FlowClientError) as raised:
        await client.health("no.such.Service")
    assert raised.value.code is grpc.StatusCode.NOT_FOUND


async def test_an_unreachable_server_fails_at_once(unreachable_address: str) -> None:
    started = time.monotonic()
    async with FlowClient(unreachable_address) as client:
        with pytest.raises(FlowClientError) as raised:
            await client.health(timeout=5)

    assert raised.value.unreachable
    assert raised.value.code is grpc.StatusCode.UNAVAILABLE
    assert raised.value.address == unreachable_address
    assert time.monotonic() - started < 4


async def test_metadata_of_the_client_and_of_the_call_are_both_sent() -> None:
    seen: list[dict[str, str | bytes]] = []

    class Recorder(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
        async def intercept_service(self, continuation: Any, details: Any) -> Any:
            seen.append(dict(details.invocation_metadata))
            return await continuation(details)

    server = grpc.aio.server(interceptors=[Recorder()])
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with FlowClient(f"127.0.0.1:{port}", metadata=[("x-tenant", "acme")]) as client:
            await client.health(metadata=[("x-request-id", "42")])
    finally:
        await server.stop(None)

    assert seen[0]["x-tenant"] == "acme"
    assert seen[0]["x-request-id"] == "42"


async def eventually(
    call: Callable[[], Awaitable[pb.ExecuteResponse]], within: float = 5.0
) -> pb.ExecuteResponse:
    """`call()`'s result once it stops raising RESOURCE_EXHAUSTED, within `within` seconds."""
    async with asyncio.timeout(within):
        while True:
            try:
                return await call()
            except FlowClientError as error:
                if error.code is not grpc.StatusCode.RESOURCE_EXHAUSTED:
                    raise
            await asyncio.sleep(0.02)


async def test_a_dict_body_works_for_all_three_rpcs(client: FlowClient) -> None:
    body = json.loads((EXAMPLES / "what-if.json").read_text())

    validated = await client.validate(body)
    executed = await client.execute(body)
    events = [event async for event in client.stream(body)]

    assert validated.valid
    assert executed.status == pb.EXECUTION_STATUS_FAILED
    assert [r.stubbed for r in executed.task_results] == [
        r.stubbed for r in events[-1].execution_finished.result.task_results
    ]
    assert any(r.stubbed for r in executed.task_results)


async def test_stubs_given_as_json_replace_the_requests_own(client: FlowClient) -> None:
    flow_body = json.loads((EXAMPLES / "seed-flow.json").read_text())
    stubs = {"task9": {"outcome": "TASK_OUTCOME_SUCCESS"}}

    validated = await client.validate(flow_body, stubs=stubs)

    assert [(e.field, e.reason) for e in validated.errors] == [('stubs["task9"]', "UNKNOWN_TASK")]


async def test_a_body_that_is_not_a_request_is_refused_before_any_call(
    client: FlowClient,
) -> None:
    bare_flow = json.loads((EXAMPLES / "seed-flow.json").read_text())["flow"]

    with pytest.raises(ValueError, match=r"flowmanager\.v1\.ExecuteRequest"):
        await client.execute(bare_flow)
    with pytest.raises(TypeError, match="not str"):
        await client.execute("seed-flow.json")  # type: ignore[arg-type]
