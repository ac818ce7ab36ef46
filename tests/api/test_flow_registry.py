"""The flow registry over gRPC, and running its flows by reference, on a real server."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from flowmanager.v1 import execution_service_pb2 as history_pb
from flowmanager.v1 import (
    execution_service_pb2_grpc,
    flow_registry_service_pb2_grpc,
    flow_service_pb2,
    flow_service_pb2_grpc,
)
from flowmanager.v1 import flow_registry_service_pb2 as pb
from flowservice.client import FlowClient, FlowClientError
from flowservice.limits import Limits
from flowservice.server import FlowServer
from flowservice.settings import Settings
from tests.api.conftest import execute_request, stream_request
from tests.api.test_execution_control import error_info
from tests.api.test_execution_service import finished, start_request
from tests.api.test_validation_errors import details

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
Registry = flow_registry_service_pb2_grpc.FlowRegistryServiceStub
Flows = flow_service_pb2_grpc.FlowServiceStub
Executions = execution_service_pb2_grpc.ExecutionServiceStub


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    limits = Limits(max_flows_page_size=3)
    return Settings(address="127.0.0.1:0", store=str(tmp_path / "flows.db"), limits=limits)


@pytest.fixture
def registry_stub(channel: grpc.aio.Channel) -> Registry:
    return flow_registry_service_pb2_grpc.FlowRegistryServiceStub(channel)


@pytest.fixture
def executions(channel: grpc.aio.Channel) -> Executions:
    return execution_service_pb2_grpc.ExecutionServiceStub(channel)


def example(name: str) -> dict[str, Any]:
    flow: dict[str, Any] = json.loads((EXAMPLES / name).read_text())["flow"]
    return flow


def seed(**changes: Any) -> dict[str, Any]:
    flow = example("seed-flow.json")
    flow.update(changes)
    return flow


async def create(registry: Registry, flow: dict[str, Any]) -> pb.CreateFlowResponse:
    request = json_format.ParseDict({"flow": flow}, pb.CreateFlowRequest())
    response: pb.CreateFlowResponse = await registry.CreateFlow(request)
    return response


async def test_an_identical_body_returns_the_latest_version_and_another_makes_a_new_one(
    server: FlowServer, registry_stub: Registry
) -> None:
    first = await create(registry_stub, seed())
    assert (first.flow.flow_id, first.flow.version, first.created) == ("flow123", 1, True)
    assert first.flow.flow.start_task == "task1" and first.flow.digest
    again = await create(registry_stub, seed())
    assert (again.flow.version, again.created) == (1, False)
    assert again.flow.create_time == first.flow.create_time
    changed = await create(registry_stub, seed(name="renamed"))
    assert (changed.flow.version, changed.created) == (2, True)
    assert changed.flow.digest != first.flow.digest


async def test_get_returns_the_latest_or_the_version_asked_for(
    server: FlowServer, registry_stub: Registry
) -> None:
    await create(registry_stub, seed())
    await create(registry_stub, seed(name="second"))
    latest = await registry_stub.GetFlow(pb.GetFlowRequest(flow_id="flow123"))
    first = await registry_stub.GetFlow(pb.GetFlowRequest(flow_id="flow123", version=1))
    assert (latest.flow.version, latest.flow.flow.name) == (2, "second")
    assert (first.flow.version, first.flow.flow.name) == (1, "Data processing flow")
    assert first.flow.flow == json_format.ParseDict(seed(), flow_service_pb2.ExecuteRequest().flow)


@pytest.mark.parametrize(
    ("flow_id", "version", "reason"),
    [
        ("nobody", 0, "FLOW_NOT_FOUND"),
        ("flow123", 9, "FLOW_VERSION_NOT_FOUND"),
        ("", 0, "FLOW_NOT_FOUND"),
    ],
)
async def test_get_of_an_unknown_flow_or_version_is_not_found(
    server: FlowServer, registry_stub: Registry, flow_id: str, version: int, reason: str
) -> None:
    await create(registry_stub, seed())
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await registry_stub.GetFlow(pb.GetFlowRequest(flow_id=flow_id, version=version))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    info = error_info(raised.value)
    assert (info.reason, info.metadata["flow_id"], info.metadata["version"]) == (
        reason,
        flow_id,
        str(version),
    )


async def test_list_flows_pages_by_id_within_the_page_size_limit(
    server: FlowServer, registry_stub: Registry
) -> None:
    for flow_id in ("e", "a", "d", "c", "b"):
        await create(registry_stub, seed(id=flow_id))
    await create(registry_stub, seed(id="b", name="b, second"))
    first = await registry_stub.ListFlows(pb.ListFlowsRequest(page_size=2))
    assert [(f.flow_id, f.version) for f in first.flows] == [("a", 1), ("b", 2)]
    assert first.flows[1].flow_name == "b, second"
    assert not first.flows[0].HasField("flow")  # lists leave bodies out
    rest = await registry_stub.ListFlows(
        pb.ListFlowsRequest(page_size=100, page_token=first.next_page_token)
    )
    # 100 is above max_flows_page_size (3 here): the page has 3.
    assert [f.flow_id for f in rest.flows] == ["c", "d", "e"]
    assert rest.next_page_token == ""


async def test_list_flow_versions_pages_newest_first(
    server: FlowServer, registry_stub: Registry
) -> None:
    for n in range(1, 6):
        await create(registry_stub, seed(name=f"v{n}"))
    pages: list[list[int]] = []
    token = ""
    while True:
        page = await registry_stub.ListFlowVersions(
            pb.ListFlowVersionsRequest(flow_id="flow123", page_size=2, page_token=token)
        )
        pages.append([v.version for v in page.versions])
        token = page.next_page_token
        if not token:
            break
    assert pages == [[5, 4], [3, 2], [1]]


async def test_a_page_token_of_another_flow_or_forged_is_invalid_and_an_unknown_flow_not_found(
    server: FlowServer, registry_stub: Registry
) -> None:
    for name in ("v1", "v2"):
        await create(registry_stub, seed(name=name))
    await create(registry_stub, seed(id="other"))
    page = await registry_stub.ListFlowVersions(
        pb.ListFlowVersionsRequest(flow_id="flow123", page_size=1)
    )
    for request in (
        pb.ListFlowVersionsRequest(flow_id="other", page_token=page.next_page_token),
        pb.ListFlowVersionsRequest(flow_id="flow123", page_token="not a token"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await registry_stub.ListFlowVersions(request)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_info(raised.value).reason == "INVALID_PAGE_TOKEN"
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await registry_stub.ListFlowVersions(pb.ListFlowVersionsRequest(flow_id="nobody"))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_an_invalid_flow_is_refused_with_the_field_paths_validate_reports(
    server: FlowServer, registry_stub: Registry, stub: Flows
) -> None:
    broken = seed(start_task="nowhere")
    broken["conditions"][1]["target_task_success"] = "missing"
    validated = await stub.Validate(
        json_format.ParseDict({"flow": broken}, flow_service_pb2.ValidateRequest())
    )
    expected = sorted((issue.field, issue.reason) for issue in validated.errors)
    assert ("flow.conditions[1].target_task_success", "UNKNOWN_TARGET_TASK") in expected
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await create(registry_stub, broken)
    violations, info = details(raised.value)
    assert sorted(violations) == expected
    assert info.reason == "INVALID_FLOW"
    listed = await registry_stub.ListFlows(pb.ListFlowsRequest())
    assert list(listed.flows) == []


@pytest.mark.parametrize(
    ("flow_id", "reason"),
    [
        ("", "MISSING_FLOW_ID"),
        ("orders/v2", "INVALID_FLOW_ID"),
        ("-orders", "INVALID_FLOW_ID"),
        ("o" * 64, "FLOW_ID_TOO_LONG"),
    ],
)
async def test_a_flow_id_that_cannot_name_a_flow_is_refused(
    server: FlowServer, registry_stub: Registry, flow_id: str, reason: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await create(registry_stub, seed(id=flow_id))
    violations, info = details(raised.value)
    assert violations == [("flow.id", reason)]
    if reason == "FLOW_ID_TOO_LONG":
        assert (info.metadata["limit"], info.metadata["limit_value"]) == (
            "max_flow_id_length",
            "63",
        )


async def test_warnings_come_back_with_the_created_flow(
    server: FlowServer, registry_stub: Registry, stub: Flows
) -> None:
    flow = example("validate-flow.json")
    validated = await stub.Validate(
        json_format.ParseDict({"flow": flow}, flow_service_pb2.ValidateRequest())
    )
    assert validated.valid and validated.warnings
    created = await create(registry_stub, flow)
    assert created.created
    assert list(created.warnings) == list(validated.warnings)


def by_ref(flow_id: str = "flow123", version: int = 0, **fields: Any) -> dict[str, Any]:
    return {"flow_ref": {"flow_id": flow_id, "version": version}, **fields}


async def test_execute_stream_and_start_run_a_flow_by_reference_and_the_history_says_which(
    server: FlowServer, registry_stub: Registry, stub: Flows, executions: Executions
) -> None:
    await create(registry_stub, seed())
    two_tasks = seed(tasks=seed()["tasks"][:2], conditions=seed()["conditions"][:1])
    await create(registry_stub, two_tasks)

    latest = await stub.Execute(execute_request(by_ref()))
    assert list(latest.executed_tasks) == ["task1", "task2"]
    events = [m async for m in stub.ExecuteStream(stream_request(by_ref(version=1)))]
    assert list(events[-1].execution_finished.result.executed_tasks) == ["task1", "task2", "task3"]
    started = await executions.StartExecution(start_request(by_ref(version=2)))
    detached = await finished(executions, started.execution.execution_id)

    ran = {
        latest.execution_id: 2,
        events[-1].execution_id: 1,
        started.execution.execution_id: 2,
    }
    for execution_id, version in ran.items():
        got = await executions.GetExecution(
            history_pb.GetExecutionRequest(execution_id=execution_id)
        )
        execution = got.execution
        assert (execution.flow_id, execution.flow_version) == ("flow123", version)
        assert execution.request.flow_ref.version == version
        assert len(execution.request.flow.tasks) == (3 if version == 1 else 2)
    listed = await executions.ListExecutions(history_pb.ListExecutionsRequest(flow_id="flow123"))
    assert sorted(e.flow_version for e in listed.executions) == [1, 2, 2]
    assert detached.status == flow_service_pb2.EXECUTION_STATUS_COMPLETED
    inline = await stub.Execute(execute_request({"flow": seed()}))
    got = await executions.GetExecution(
        history_pb.GetExecutionRequest(execution_id=inline.execution_id)
    )
    assert got.execution.flow_version == 0


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (by_ref("nobody"), "FLOW_NOT_FOUND"),
        (by_ref(version=5), "FLOW_VERSION_NOT_FOUND"),
    ],
)
async def test_an_unknown_reference_is_not_found_on_every_rpc(
    server: FlowServer,
    registry_stub: Registry,
    stub: Flows,
    executions: Executions,
    body: dict[str, Any],
    reason: str,
) -> None:
    await create(registry_stub, seed())
    calls = [
        lambda: stub.Execute(execute_request(body)),
        lambda: _drain(stub.ExecuteStream(stream_request(body))),
        lambda: executions.StartExecution(start_request(body)),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call()
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
        assert error_info(raised.value).reason == reason
    listed = await executions.ListExecutions(history_pb.ListExecutionsRequest())
    assert list(listed.executions) == []


async def _drain(call: Any) -> list[Any]:
    return [message async for message in call]


@pytest.mark.parametrize(
    ("body", "violations"),
    [
        ({**by_ref(), "flow": seed()}, [("flow_ref", "FLOW_AND_FLOW_REF")]),
        ({}, [("flow", "MISSING_FLOW")]),
        (by_ref(""), [("flow_ref.flow_id", "MISSING_FLOW_ID")]),
        (by_ref(version=-1), [("flow_ref.version", "INVALID_VERSION")]),
    ],
)
async def test_exactly_one_of_flow_and_flow_ref_is_set_or_invalid_argument(
    server: FlowServer,
    registry_stub: Registry,
    stub: Flows,
    executions: Executions,
    body: dict[str, Any],
    violations: list[tuple[str, str]],
) -> None:
    await create(registry_stub, seed())
    calls = [
        lambda: stub.Execute(execute_request(body)),
        lambda: _drain(stub.ExecuteStream(stream_request(body))),
        lambda: executions.StartExecution(start_request(body)),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call()
        found, info = details(raised.value)
        assert found == violations
        assert info.reason == "INVALID_FLOW"


async def test_validate_checks_a_flow_by_reference_with_its_stubs(
    server: FlowServer, registry_stub: Registry, stub: Flows
) -> None:
    await create(registry_stub, seed())
    body = by_ref(stubs={"nope": {"outcome": "TASK_OUTCOME_SUCCESS"}})
    report = await stub.Validate(json_format.ParseDict(body, flow_service_pb2.ValidateRequest()))
    assert not report.valid
    assert [(e.field, e.reason) for e in report.errors] == [('stubs["nope"]', "UNKNOWN_TASK")]
    fine = await stub.Validate(json_format.ParseDict(by_ref(), flow_service_pb2.ValidateRequest()))
    assert fine.valid


async def test_a_request_id_repeated_after_a_new_version_returns_the_first_execution(
    server: FlowServer, registry_stub: Registry, stub: Flows, executions: Executions
) -> None:
    await create(registry_stub, seed())
    body = by_ref(request_id="order-7")
    first = await stub.Execute(execute_request(body))
    await create(registry_stub, seed(name="second"))
    again = await stub.Execute(execute_request(body))
    assert again == first
    started = await executions.StartExecution(start_request(copy.deepcopy(body)))
    assert started.execution.execution_id == first.execution_id
    pinned = by_ref(version=2, request_id="order-7")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Execute(execute_request(pinned))
    assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS
    inline = {"flow": seed(), "request_id": "order-7"}
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Execute(execute_request(inline))
    assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_the_python_client_creates_reads_and_runs_by_reference(server: FlowServer) -> None:
    flow = json_format.ParseDict(seed(), flow_service_pb2.ExecuteRequest().flow)
    async with FlowClient(f"127.0.0.1:{server.port}", timeout=30) as client:
        created = await client.create_flow(flow)
        assert (created.flow.version, created.created) == (1, True)
        assert (await client.get_flow("flow123", 1)).flow == flow
        listed = await client.list_flows()
        assert [f.flow_id for f in listed.flows] == ["flow123"]
        versions = await client.list_flow_versions(pb.ListFlowVersionsRequest(flow_id="flow123"))
        assert [v.version for v in versions.versions] == [1]
        summary = await client.execute({"flow_ref": {"flow_id": "flow123"}})
        assert list(summary.executed_tasks) == ["task1", "task2", "task3"]
        started = await client.start_execution({"flow_ref": {"flow_id": "flow123", "version": 1}})
        assert started.flow_version == 1
        with pytest.raises(FlowClientError) as raised:
            await client.get_flow("nobody")
        assert raised.value.code == grpc.StatusCode.NOT_FOUND
        assert raised.value.error_info is not None
        assert raised.value.error_info.reason == "FLOW_NOT_FOUND"
