"""curl against the HTTP port: Connect JSON and binary, streams, gRPC-Web, errors, deadlines.

Every call goes to one real server started with `--http-address`; the
replies are read as a browser's Connect or gRPC-Web client reads them.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from google.rpc import error_details_pb2

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
    from google.protobuf import json_format

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
    status, body = post(
        http_server.rpc("FlowService/Execute"),
        JSON,
        "connect-timeout-ms: 200",
        body=(EXAMPLES / "slow-flow.json").read_bytes(),
    )

    assert status == 504
    error = json.loads(body)
    assert error["code"] == "deadline_exceeded"
    assert detail_messages(error)["google.rpc.ErrorInfo"].reason == "DEADLINE_EXCEEDED"


def test_grpc_web_runs_the_seed_flow_with_its_status_in_the_trailers(
    http_server: HttpServer,
) -> None:
    from google.protobuf import json_format

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
    from google.rpc import status_pb2

    encoded = fields["grpc-status-details-bin"].strip()
    details = status_pb2.Status.FromString(base64.b64decode(encoded + "=" * (-len(encoded) % 4)))
    info = error_details_pb2.ErrorInfo()
    assert details.details[0].Unpack(info)
    assert info.reason == "MALFORMED_REQUEST"


def test_a_path_that_is_no_rpc_is_not_found(http_server: HttpServer) -> None:
    status, _ = post(http_server.url + "/flowmanager.v1.FlowService/Nope", JSON, body=b"{}")

    assert status == 404
