"""The `grpc` task type against a real second Flow Manager (with reflection) on 127.0.0.1:0."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2, json_format

from flowmanager.v1 import flow_service_pb2, flow_service_pb2_grpc
from flowservice import Engine, Flow, Limits, RetryPolicy, Task
from flowservice.api.grpc_task import GrpcTask, load_descriptor_sets
from flowservice.errors import InvalidFlowError
from flowservice.models import ExecutionSummary, TaskOutcome
from flowservice.outbound import OutboundPolicy
from flowservice.server import FlowServer, create_server
from flowservice.settings import Settings
from flowservice.tasks import TaskRegistry
from tests.api.conftest import Recorder, execute_request

RETRY = RetryPolicy(max_attempts=3, initial_interval=timedelta(milliseconds=1))
VALID_FLOW = {"flow": {"id": "inner", "name": "inner", "start_task": "a", "tasks": [{"name": "a"}]}}
EXECUTE = "flowmanager.v1.FlowService/Execute"
SLOW = {
    "flow": {
        "id": "s",
        "name": "s",
        "start_task": "wait",
        "tasks": [{"name": "wait", "type": "slow", "params": {"seconds": 60}}],
    }
}
"""A flow whose task runs until cancelled: the downstream `Recorder` sees the cancel."""


class Caller:
    """An engine whose only task type is `grpc`, allowed to call `allow`."""

    def __init__(self, allow: tuple[str, ...], **options: Any) -> None:
        limits = Limits(max_output_bytes=options.pop("max_output_bytes", 256 * 1024))
        self.task = GrpcTask(OutboundPolicy.parse(allow, ("fm=" + allow[0],)), limits, **options)
        self.engine = Engine(TaskRegistry({"grpc": self.task}), limits=limits)

    async def call(self, params: dict[str, Any], **task: Any) -> ExecutionSummary:
        flow = Flow(
            id="outer",
            name="outer",
            start_task="call",
            tasks=(Task("call", "grpc", params=params, **task),),
        )
        return await self.engine.execute(flow)

    async def close(self) -> None:
        await self.engine.aclose()


@pytest.fixture
async def caller(server: FlowServer) -> AsyncIterator[Caller]:
    made = Caller((f"127.0.0.1:{server.port}",))
    yield made
    await made.close()


async def test_a_flow_calls_another_flow_managers_validate(caller: Caller) -> None:
    summary = await caller.call(
        {"target": "fm", "method": "flowmanager.v1.FlowService/Validate", "request": VALID_FLOW}
    )

    result = summary.task_results[0]
    assert result.outcome is TaskOutcome.SUCCESS, result.error
    assert result.output == {"valid": True}


async def test_the_reply_uses_grpcurls_lower_camel_json_names(caller: Caller) -> None:
    summary = await caller.call({"target": "fm", "method": EXECUTE, "request": VALID_FLOW})

    output = summary.task_results[0].output
    assert output["status"] == "EXECUTION_STATUS_COMPLETED"
    assert "executionId" in output and "execution_id" not in output


async def test_a_server_streaming_method_gives_its_replies_as_a_list(caller: Caller) -> None:
    summary = await caller.call(
        {
            "target": "fm",
            "method": "flowmanager.v1.FlowService/ExecuteStream",
            "request": VALID_FLOW,
        }
    )

    messages = summary.task_results[0].output["messages"]
    assert "executionStarted" in messages[0] and "executionFinished" in messages[-1]


async def test_a_non_ok_status_is_grpc_code_with_decoded_details_never_retried(
    caller: Caller,
) -> None:
    bad = {"flow": {"id": "x", "name": "x", "start_task": "nope", "tasks": [{"name": "a"}]}}

    summary = await caller.call({"target": "fm", "method": EXECUTE, "request": bad}, retry=RETRY)

    result = summary.task_results[0]
    assert (result.error_type, result.attempts) == ("grpc.INVALID_ARGUMENT", 1)
    assert result.output["code"] == "INVALID_ARGUMENT"
    types = {detail["@type"].rsplit(".", 1)[1] for detail in result.output["details"]}
    assert {"ErrorInfo", "BadRequest"} <= types


async def test_an_unavailable_target_is_retried() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    caller = Caller((f"127.0.0.1:{port}",))
    try:
        summary = await caller.call(
            {"target": "fm", "method": EXECUTE, "request": VALID_FLOW}, retry=RETRY
        )
    finally:
        await caller.close()

    result = summary.task_results[0]
    assert (result.error_type, result.attempts) == ("grpc.UNAVAILABLE", 3)


@pytest.mark.parametrize(
    ("params", "error_type"),
    [
        ({"method": "flowmanager.v1.FlowService/Nope"}, "grpc.UNKNOWN_METHOD"),
        ({"method": "no.Such/Method"}, "grpc.UNKNOWN_METHOD"),
        ({"method": EXECUTE, "request": {"no_such_field": 1}}, "InvalidParams"),
        ({"method": EXECUTE, "metadata": {"a": 1}}, "InvalidParams"),
    ],
)
async def test_a_method_or_field_that_does_not_exist_is_a_clear_failure(
    caller: Caller, params: dict[str, Any], error_type: str
) -> None:
    summary = await caller.call({"target": "fm", **params}, retry=RETRY)

    result = summary.task_results[0]
    assert (result.error_type, result.attempts) == (error_type, 1)


async def test_a_literal_target_not_allowed_fails_validation(caller: Caller) -> None:
    with pytest.raises(InvalidFlowError) as raised:
        await caller.call({"target": "10.0.0.1:443", "method": EXECUTE})

    [violation] = raised.value.violations
    assert (violation.field, violation.reason) == (
        "flow.tasks[0].params.target",
        "TARGET_NOT_ALLOWED",
    )


async def test_a_metadata_address_is_refused_even_when_allowed_by_name() -> None:
    caller = Caller(("2852039166:80",))  # 169.254.169.254 as one number
    try:
        summary = await caller.call({"target": "2852039166:80", "method": EXECUTE})
    finally:
        await caller.close()

    assert summary.task_results[0].error_type == "TARGET_NOT_ALLOWED"


async def test_replies_past_the_output_limit_fail(server: FlowServer) -> None:
    caller = Caller((f"127.0.0.1:{server.port}",), max_output_bytes=600)
    try:
        summary = await caller.call(
            {
                "target": "fm",
                "method": "flowmanager.v1.FlowService/ExecuteStream",
                "request": VALID_FLOW,
            }
        )
    finally:
        await caller.close()

    assert summary.task_results[0].error_type == "OutputTooLarge"


async def test_cancelling_the_execution_cancels_the_downstream_call(
    caller: Caller, recorder: Recorder
) -> None:
    running = asyncio.create_task(caller.call({"target": "fm", "method": EXECUTE, "request": SLOW}))
    while not recorder.started:
        await asyncio.sleep(0.01)

    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running

    await asyncio.wait_for(recorder.any_cancelled.wait(), 30)
    assert recorder.cancelled == ["wait"]


async def test_the_execution_deadline_reaches_the_downstream_call(
    caller: Caller, recorder: Recorder
) -> None:
    summary = await caller.call(
        {"target": "fm", "method": EXECUTE, "request": SLOW}, timeout=timedelta(seconds=2)
    )

    assert summary.task_results[0].error_type in {"TaskTimeout", "grpc.DEADLINE_EXCEEDED"}
    await asyncio.wait_for(recorder.any_cancelled.wait(), 30)


async def test_a_descriptor_set_serves_a_target_without_reflection(
    tmp_path: Path, registry: TaskRegistry
) -> None:
    files = descriptor_pb2.FileDescriptorSet()
    _add_with_deps(flow_service_pb2.DESCRIPTOR, files, [])
    path = tmp_path / "flow.protoset"
    path.write_bytes(files.SerializeToString())
    dark = create_server(
        Settings(store="memory", address="127.0.0.1:0", security=_no_reflection()), registry
    )
    await dark.start()
    caller = Caller((f"127.0.0.1:{dark.port}",), descriptors=load_descriptor_sets([str(path)]))
    try:
        summary = await caller.call(
            {"target": "fm", "method": "flowmanager.v1.FlowService/Validate", "request": VALID_FLOW}
        )
    finally:
        await caller.close()
        await dark.stop(grace=None)

    assert summary.task_results[0].output == {"valid": True}


def _add_with_deps(file: Any, files: descriptor_pb2.FileDescriptorSet, seen: list[str]) -> None:
    for dependency in file.dependencies:
        _add_with_deps(dependency, files, seen)
    if file.name not in seen:
        seen.append(file.name)
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        files.file.append(proto)


def _no_reflection() -> Any:
    from flowservice.security import SecuritySettings

    return SecuritySettings(reflection=False)


async def test_the_server_refuses_a_literal_target_at_execute_and_validate(
    server: FlowServer,
) -> None:
    from tests.api.test_validation_errors import details

    settings = Settings(
        store="memory", address="127.0.0.1:0", allow_targets=(f"127.0.0.1:{server.port}",)
    )
    front = create_server(settings)
    await front.start()
    body = {
        "flow": {
            "id": "f",
            "name": "f",
            "start_task": "call",
            "tasks": [
                {"name": "ok", "type": "grpc", "params": {"target": f"127.0.0.1:{server.port}"}},
                {"name": "call", "type": "http", "params": {"url": "http://169.254.169.254/"}},
            ],
        }
    }
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{front.port}") as channel:
            stub = flow_service_pb2_grpc.FlowServiceStub(channel)
            report = await stub.Validate(
                json_format.ParseDict(body, flow_service_pb2.ValidateRequest())
            )
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.Execute(execute_request(body))
    finally:
        await front.stop(grace=None)

    assert [(e.field, e.reason) for e in report.errors] == [
        ("flow.tasks[1].params.url", "TARGET_NOT_ALLOWED")
    ]
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    violations, info = details(raised.value)
    assert violations == [("flow.tasks[1].params.url", "TARGET_NOT_ALLOWED")]
    assert info.metadata["reasons"].split(",") == ["TARGET_NOT_ALLOWED"]


async def test_a_target_without_reflection_or_descriptor_set_is_unimplemented(
    registry: TaskRegistry,
) -> None:
    dark = create_server(
        Settings(store="memory", address="127.0.0.1:0", security=_no_reflection()), registry
    )
    await dark.start()
    caller = Caller((f"127.0.0.1:{dark.port}",))
    try:
        summary = await caller.call(
            {"target": "fm", "method": EXECUTE, "request": VALID_FLOW}, retry=RETRY
        )
    finally:
        await caller.close()
        await dark.stop(grace=None)

    result = summary.task_results[0]
    assert (result.error_type, result.attempts) == ("grpc.UNIMPLEMENTED", 1)


async def test_other_params_from_an_input_mapping_are_request_fields(caller: Caller) -> None:
    task = Task(
        "call",
        "grpc",
        params={"target": "fm", "method": "flowmanager.v1.FlowService/Validate", "request": {}},
        input_mapping={"flow": "input.flow"},
    )
    flow = Flow(id="outer", name="outer", start_task="call", tasks=(task,))

    summary = await caller.engine.execute(flow, flow_input={"flow": VALID_FLOW["flow"]})

    assert summary.task_results[0].output == {"valid": True}
