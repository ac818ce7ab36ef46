"""curl against the HTTP port: Connect JSON and binary, streams, gRPC-Web, errors, deadlines.

Every call goes to one real server started with `--http-address`; the
replies are read as a browser's Connect or gRPC-Web client reads them.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2

from flowmanager.v1 import execution_service_pb2, worker_service_pb2
from flowmanager.v1 import flow_service_pb2 as pb
from tests.http.conftest import EXAMPLES, HttpServer, curl
from tests.http.framing import TRAILERS, envelope, frames, json_frames

SEED_TASKS = ["task1", "task2", "task3"]
JSON = "content-type: application/json"


def post(url: str, *headers: str, body: bytes) -> tuple[int, bytes]:
    """POSTs `body` with curl; the HTTP status and the body."""
    args = [arg for header in headers for arg in ("-H", header)]
    result = curl("-o", "-", "-w", "\n%{http_code}", *args, "--data-binary", "@-", url, stdin=body)
    assert result.returncode == 0, result.stderr.decode()
    body_out, _, status = result.stdout.rpartition(b"\n")
    return int(status), body_out


def detail_messages(error: dict[str, Any]) -> dict[str, Any]:
    """The Connect error's details, decoded, by type name."""
    types = {
        "google.rpc.ErrorInfo": error_details_pb2.ErrorInfo,
        "google.rpc.BadRequest": error_details_pb2.BadRequest,
        "google.rpc.RetryInfo": error_details_pb2.RetryInfo,
    }
    decoded = {}
    for detail in error["details"]:
        value = base64.b64decode(detail["value"] + "=" * (-len(detail["value"]) % 4))
        decoded[detail["type"]] = types[detail["type"]].FromString(value)
    return decoded


def test_execute_takes_the_seed_file_as_json(http_server: HttpServer) -> None:
    status, body = post(
        http_server.rpc("FlowService/Execute"),
        JSON,
        body=(EXAMPLES / "seed-flow.json").read_bytes(),
    )

    assert status == 200
    reply = json.loads(body)
    assert reply["status"] == "EXECUTION_STATUS_COMPLETED"
    assert reply["executedTasks"] == SEED_TASKS
    assert [r["outcome"] for r in reply["taskResults"]] == ["TASK_OUTCOME_SUCCESS"] * 3


def test_execute_in_binary_returns_the_message(http_server: HttpServer) -> None:
    request = json_format.Parse((EXAMPLES / "seed-flow.json").read_text(), pb.ExecuteRequest())

    status, body = post(
        http_server.rpc("FlowService/Execute"),
        "content-type: application/proto",
        body=request.SerializeToString(),
    )

    assert status == 200
    reply = pb.ExecuteResponse.FromString(body)
    assert reply.status == pb.EXECUTION_STATUS_COMPLETED
    assert list(reply.executed_tasks) == SEED_TASKS


def test_execute_stream_sends_every_event_then_the_end(http_server: HttpServer) -> None:
    status, body = post(
        http_server.rpc("FlowService/ExecuteStream"),
        "content-type: application/connect+json",
        body=envelope((EXAMPLES / "seed-flow.json").read_bytes()),
    )

    assert status == 200
    events, end = json_frames(body)
    assert end == {}  # no error
    assert [int(event["sequence"]) for event in events] == list(range(1, len(events) + 1))
    assert "executionStarted" in events[0]
    finished = events[-1]["executionFinished"]["result"]
    assert finished["status"] == "EXECUTION_STATUS_COMPLETED"
    assert finished["executedTasks"] == SEED_TASKS


def test_an_invalid_flow_keeps_its_error_info_and_field_violations(
    http_server: HttpServer,
) -> None:
    request = {"flow": {"id": "f", "start_task": "nope", "tasks": [{"name": "a"}]}}

    status, body = post(
        http_server.rpc("FlowService/Execute"), JSON, body=json.dumps(request).encode()
    )

    assert status == 400
    error = json.loads(body)
    assert error["code"] == "invalid_argument"
    details = detail_messages(error)
    assert details["google.rpc.ErrorInfo"].reason == "INVALID_FLOW"
    assert details["google.rpc.ErrorInfo"].domain == "flowmanager"
    assert [v.field for v in details["google.rpc.BadRequest"].field_violations] == [
        "flow.start_task"
    ]


def test_an_error_in_a_stream_ends_it_with_the_same_details(http_server: HttpServer) -> None:
    request = {"flow": {"id": "f", "start_task": "nope", "tasks": [{"name": "a"}]}}

    status, body = post(
        http_server.rpc("FlowService/ExecuteStream"),
        "content-type: application/connect+json",
        body=envelope(json.dumps(request).encode()),
    )

    assert status == 200  # a stream's status travels in its last envelope
    events, end = json_frames(body)
    assert events == []
    assert end["error"]["code"] == "invalid_argument"
    assert detail_messages(end["error"])["google.rpc.ErrorInfo"].reason == "INVALID_FLOW"


def test_json_that_is_not_the_request_is_a_malformed_request(http_server: HttpServer) -> None:
    status, body = post(http_server.rpc("FlowService/Execute"), JSON, body=b'{"flwo": {}}')

    assert status == 400
    error = json.loads(body)
    assert error["code"] == "invalid_argument"
    assert detail_messages(error)["google.rpc.ErrorInfo"].reason == "MALFORMED_REQUEST"


def test_binary_that_does_not_parse_is_refused_by_the_server_itself(
    http_server: HttpServer,
) -> None:
    status, body = post(
        http_server.rpc("FlowService/Execute"),
        "content-type: application/proto",
        body=b"\xff\xff\xff",
    )

    assert status == 400
    assert detail_messages(json.loads(body))["google.rpc.ErrorInfo"].reason == "MALFORMED_REQUEST"


def test_connect_timeout_ms_is_the_deadline(http_server: HttpServer) -> None:
    """The server ends the execution a little before the deadline (50 ms of 1 s),
    so its reply, with the ErrorInfo, arrives before the bridge's own timer fires."""
    status, body = post(
        http_server.rpc("FlowService/Execute"),
        JSON,
        "connect-timeout-ms: 1000",
        body=(EXAMPLES / "slow-flow.json").read_bytes(),
    )

    assert status == 504
    error = json.loads(body)
    assert error["code"] == "deadline_exceeded"
    assert detail_messages(error)["google.rpc.ErrorInfo"].reason == "DEADLINE_EXCEEDED"


def test_grpc_web_runs_the_seed_flow_with_its_status_in_the_trailers(
    http_server: HttpServer,
) -> None:
    request = json_format.Parse((EXAMPLES / "seed-flow.json").read_text(), pb.ExecuteRequest())

    status, body = post(
        http_server.rpc("FlowService/Execute"),
        "content-type: application/grpc-web+proto",
        "x-grpc-web: 1",
        body=envelope(request.SerializeToString()),
    )

    assert status == 200
    (data_flags, message), (trailer_flags, trailers) = frames(body)
    assert (data_flags, trailer_flags) == (0, TRAILERS)
    assert pb.ExecuteResponse.FromString(message).executed_tasks == SEED_TASKS
    assert b"grpc-status: 0" in trailers.lower()


def test_grpc_web_errors_carry_the_status_details(http_server: HttpServer) -> None:
    status, body = post(
        http_server.rpc("FlowService/Execute"),
        "content-type: application/grpc-web+proto",
        body=envelope(b"\xff\xff\xff"),
    )

    assert status == 200
    ((flags, trailers),) = frames(body)
    assert flags == TRAILERS
    fields = dict(
        line.split(":", 1) for line in trailers.decode().strip().splitlines() if ":" in line
    )
    assert fields["grpc-status"].strip() == "3"  # INVALID_ARGUMENT
    encoded = fields["grpc-status-details-bin"].strip()
    details = status_pb2.Status.FromString(base64.b64decode(encoded + "=" * (-len(encoded) % 4)))
    info = error_details_pb2.ErrorInfo()
    assert details.details[0].Unpack(info)
    assert info.reason == "MALFORMED_REQUEST"


def test_a_path_that_is_no_rpc_is_not_found(http_server: HttpServer) -> None:
    status, _ = post(http_server.url + "/flowmanager.v1.FlowService/Nope", JSON, body=b"{}")

    assert status == 404


def start(server: HttpServer, example: str) -> str:
    """StartExecution of an example over Connect JSON; the execution's id."""
    status, body = post(
        server.rpc("ExecutionService/StartExecution"), JSON, body=(EXAMPLES / example).read_bytes()
    )
    assert status == 200
    return str(json.loads(body)["execution"]["executionId"])


def test_an_execution_started_over_http_is_watched_to_its_end(http_server: HttpServer) -> None:
    execution_id = start(http_server, "seed-flow.json")

    status, body = post(
        http_server.rpc("ExecutionService/WatchExecution"),
        "content-type: application/connect+json",
        body=envelope(json.dumps({"execution_id": execution_id}).encode()),
    )

    assert status == 200
    events, end = json_frames(body)
    assert end == {}
    assert [int(e["event"]["sequence"]) for e in events] == list(range(1, len(events) + 1))
    finished = events[-1]["event"]["executionFinished"]["result"]
    assert finished["status"] == "EXECUTION_STATUS_COMPLETED"


def test_an_execution_started_over_http_is_listed_and_cancelled(http_server: HttpServer) -> None:
    execution_id = start(http_server, "slow-flow.json")

    status, _ = post(
        http_server.rpc("ExecutionService/CancelExecution"),
        JSON,
        body=json.dumps({"execution_id": execution_id}).encode(),
    )
    assert status == 200
    status, body = post(http_server.rpc("ExecutionService/ListExecutions"), JSON, body=b"{}")
    assert status == 200
    listed = {e["executionId"]: e for e in json.loads(body)["executions"]}

    assert listed[execution_id]["status"] == "EXECUTION_STATUS_CANCELLED"


def test_cancelling_a_finished_execution_keeps_its_reason(http_server: HttpServer) -> None:
    status, body = post(
        http_server.rpc("FlowService/Execute"),
        JSON,
        body=(EXAMPLES / "seed-flow.json").read_bytes(),
    )
    execution_id = json.loads(body)["executionId"]

    status, body = post(
        http_server.rpc("ExecutionService/CancelExecution"),
        JSON,
        body=json.dumps({"execution_id": execution_id}).encode(),
    )

    assert status == 400  # failed_precondition
    error = json.loads(body)
    assert error["code"] == "failed_precondition"
    assert detail_messages(error)["google.rpc.ErrorInfo"].reason == "EXECUTION_FINISHED"


@pytest.mark.parametrize("depth", [150, 50_000])
def test_json_nested_past_the_limits_is_a_malformed_request(
    http_server: HttpServer, depth: int
) -> None:
    """Past protobuf's nesting limit (100) and past Python's recursion limit alike."""
    body = b'{"input": {"a": ' + b'{"a": ' * depth + b"1" + b"}" * depth + b"}}"

    status, reply = post(http_server.rpc("FlowService/Execute"), JSON, body=body)

    assert status == 400
    error = json.loads(reply)
    assert detail_messages(error)["google.rpc.ErrorInfo"].reason == "MALFORMED_REQUEST"
    assert "Error" not in error["message"]  # no Python exception text


def test_grpc_timeout_is_the_deadline_of_a_grpc_web_call(http_server: HttpServer) -> None:
    request = json_format.Parse((EXAMPLES / "slow-flow.json").read_text(), pb.ExecuteRequest())

    status, body = post(
        http_server.rpc("FlowService/Execute"),
        "content-type: application/grpc-web+proto",
        "grpc-timeout: 300m",
        body=envelope(request.SerializeToString()),
    )

    assert status == 200
    ((flags, trailers),) = frames(body)
    assert flags == TRAILERS
    assert b"grpc-status: 4" in trailers.lower()  # DEADLINE_EXCEEDED


def test_a_malformed_deadline_is_refused(http_server: HttpServer) -> None:
    status, body = post(
        http_server.rpc("FlowService/Execute"),
        JSON,
        "connect-timeout-ms: soon",
        body=(EXAMPLES / "seed-flow.json").read_bytes(),
    )

    assert status == 400
    assert json.loads(body)["code"] == "invalid_argument"


def served_methods() -> list[str]:
    """Every method of flowmanager.v1 that the HTTP port serves: all but request streams."""
    files = (pb.DESCRIPTOR, execution_service_pb2.DESCRIPTOR, worker_service_pb2.DESCRIPTOR)
    return [
        f"{service.name}/{method.name}"
        for file in files
        for service in file.services_by_name.values()
        for method in service.methods
        if not method.client_streaming
    ]


@pytest.mark.parametrize("method", served_methods())
def test_every_rpc_is_served(http_server: HttpServer, method: str) -> None:
    """An empty request reaches the servicer, which answers it (most refuse it as invalid)."""
    streamed = method in ("FlowService/ExecuteStream", "ExecutionService/WatchExecution")
    content_type = "application/connect+json" if streamed else "application/json"

    status, body = post(
        http_server.rpc(method),
        f"content-type: {content_type}",
        body=envelope(b"{}") if streamed else b"{}",
    )

    reply = json_frames(body)[1].get("error", {}) if streamed else json.loads(body)
    assert status in (200, 400, 404)
    assert reply.get("code") != "unimplemented"
    if status == 404:  # a servicer's not_found (an empty id), never the router's
        assert reply["code"] == "not_found"


def test_the_bidirectional_work_stream_stays_on_grpc(http_server: HttpServer) -> None:
    status, _ = post(http_server.rpc("WorkerService/Work"), JSON, body=b"{}")

    assert status == 404


def from_text(body: bytes) -> bytes:
    """The binary of a gRPC-Web text reply: padded base64 chunks, one after another."""
    decoded = b""
    for chunk in body.split(b"="):
        if chunk:
            decoded += base64.b64decode(chunk + b"=" * (-len(chunk) % 4))
    return decoded


def test_grpc_web_text_streams_the_seed_run(http_server: HttpServer) -> None:
    request = json_format.Parse(
        (EXAMPLES / "seed-flow.json").read_text(), pb.ExecuteStreamRequest()
    )

    status, body = post(
        http_server.rpc("FlowService/ExecuteStream"),
        "content-type: application/grpc-web-text",
        "accept: application/grpc-web-text",
        body=base64.b64encode(envelope(request.SerializeToString())),
    )

    assert status == 200
    *messages, (trailer_flags, trailers) = frames(from_text(body))
    events = [pb.ExecuteStreamResponse.FromString(message) for _, message in messages]
    assert [event.WhichOneof("event") for event in events][::9] == [
        "execution_started",
        "execution_finished",
    ]
    assert events[-1].execution_finished.result.status == pb.EXECUTION_STATUS_COMPLETED
    assert trailer_flags == TRAILERS
    assert b"grpc-status: 0" in trailers.lower()


def test_grpc_web_text_that_is_not_base64_is_refused(http_server: HttpServer) -> None:
    status, _ = post(
        http_server.rpc("FlowService/Execute"),
        "content-type: application/grpc-web-text",
        body=b"not base64 at all!",
    )

    assert status == 400
