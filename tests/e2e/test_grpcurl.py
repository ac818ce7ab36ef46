"""End to end: the real server, driven by the real grpcurl, as the README shows.

The server runs as `python -m flowservice --address 127.0.0.1:0`; grpcurl
discovers the API through reflection, sends the example files unchanged
with `-d @`, and prints JSON that these tests parse.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.e2e.conftest import json_messages

if TYPE_CHECKING:
    from tests.e2e.conftest import RunningServer

Grpcurl = Callable[..., subprocess.CompletedProcess[str]]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
GRPCURL = Path(sys.executable).parent / "grpcurl"
TIMEOUT = 30.0
"""Seconds any one wait in these tests may take."""

EXECUTE = "flowmanager.v1.FlowService/Execute"
EXECUTE_STREAM = "flowmanager.v1.FlowService/ExecuteStream"
HEALTH_CHECK = "grpc.health.v1.Health/Check"


def error_details(output: str) -> list[dict[str, Any]]:
    """The status details grpcurl printed for an RPC error, as `N)<tab>{json}` lines."""
    return [json.loads(line) for line in re.findall(r"^\s*\d+\)\t(.+)$", output, re.MULTILINE)]


def ok(result: subprocess.CompletedProcess[str]) -> str:
    """grpcurl's stdout, after checking that it exited 0."""
    assert result.returncode == 0, f"grpcurl exited {result.returncode}:\n{result.stderr}"
    return result.stdout


def test_example_failure_is_the_seed_with_task2_failing() -> None:
    seed = json.loads((EXAMPLES / "seed-flow.json").read_text())
    failure = json.loads((EXAMPLES / "seed-failure.json").read_text())

    params = failure["flow"]["tasks"][1].pop("params")

    assert params["fail"] is True
    assert failure == seed


def test_list_shows_the_services(server: RunningServer, grpcurl: Grpcurl) -> None:
    services = ok(grpcurl(server.address, "list")).split()

    assert "flowmanager.v1.FlowService" in services
    assert "grpc.health.v1.Health" in services


def test_describe_shows_both_rpcs(server: RunningServer, grpcurl: Grpcurl) -> None:
    output = ok(grpcurl(server.address, "describe", "flowmanager.v1.FlowService"))

    assert "flowmanager.v1.FlowService is a service" in output
    assert "rpc Execute ( .flowmanager.v1.ExecuteRequest )" in output
    assert "returns ( stream .flowmanager.v1.ExecuteStreamResponse )" in output


@pytest.mark.parametrize("service", ["", "flowmanager.v1.FlowService"])
def test_health_check_is_serving(server: RunningServer, grpcurl: Grpcurl, service: str) -> None:
    request = json.dumps({"service": service})

    output = ok(grpcurl("-d", request, server.address, HEALTH_CHECK))

    assert json_messages(output) == [{"status": "SERVING"}]


def test_execute_seed_flow_completes(server: RunningServer, grpcurl: Grpcurl) -> None:
    output = ok(grpcurl("-d", "@", server.address, EXECUTE, stdin=EXAMPLES / "seed-flow.json"))

    [response] = json_messages(output)
    assert response["flow_id"] == "flow123"
    assert response["status"] == "EXECUTION_STATUS_COMPLETED"
    assert response["executed_tasks"] == ["task1", "task2", "task3"]
    assert "failed_task" not in response  # empty strings are omitted from JSON
    assert [result["outcome"] for result in response["task_results"]] == [
        "TASK_OUTCOME_SUCCESS"
    ] * 3


def test_execute_seed_failure_fails_at_task2(server: RunningServer, grpcurl: Grpcurl) -> None:
    output = ok(grpcurl("-d", "@", server.address, EXECUTE, stdin=EXAMPLES / "seed-failure.json"))

    [response] = json_messages(output)
    assert response["status"] == "EXECUTION_STATUS_FAILED"
    assert response["failed_task"] == "task2"
    assert response["executed_tasks"] == ["task1", "task2"]
    task2 = response["task_results"][1]
    assert task2["outcome"] == "TASK_OUTCOME_FAILURE"
    assert task2["error"] == "processing failed: input is malformed"
    assert response["error"] == "task 'task2' failed: processing failed: input is malformed"


def test_execute_recovery_flow_completes(server: RunningServer, grpcurl: Grpcurl) -> None:
    output = ok(grpcurl("-d", "@", server.address, EXECUTE, stdin=EXAMPLES / "recovery-flow.json"))

    [response] = json_messages(output)
    assert response["status"] == "EXECUTION_STATUS_COMPLETED"
    assert response["executed_tasks"] == ["fetch_primary", "fetch_backup", "store"]
    assert response["task_results"][0]["outcome"] == "TASK_OUTCOME_FAILURE"
    assert response["task_results"][2]["output"]["stored"] == 2
    assert "failed_task" not in response


def test_execute_stream_starts_and_finishes(server: RunningServer, grpcurl: Grpcurl) -> None:
    output = ok(
        grpcurl("-d", "@", server.address, EXECUTE_STREAM, stdin=EXAMPLES / "seed-flow.json")
    )

    events = json_messages(output)
    assert "execution_started" in events[0]
    assert "execution_finished" in events[-1]
    # int64 fields are JSON strings in the protobuf JSON mapping.
    assert [event["sequence"] for event in events] == [str(n) for n in range(1, len(events) + 1)]
    assert len({event["execution_id"] for event in events}) == 1
    summary = events[-1]["execution_finished"]["result"]
    assert summary["status"] == "EXECUTION_STATUS_COMPLETED"
    assert summary["executed_tasks"] == ["task1", "task2", "task3"]


@pytest.mark.parametrize("method", [EXECUTE, EXECUTE_STREAM])
def test_invalid_flow_is_invalid_argument(
    server: RunningServer, grpcurl: Grpcurl, method: str
) -> None:
    result = grpcurl("-d", '{"flow": {"tasks": []}}', server.address, method)

    assert result.returncode != 0
    assert "Code: InvalidArgument" in result.stderr
    details = {
        detail["@type"].rsplit("/", 1)[-1]: detail for detail in error_details(result.stderr)
    }
    assert details["google.rpc.ErrorInfo"]["reason"] == "INVALID_FLOW"
    assert details["google.rpc.ErrorInfo"]["domain"] == "flowmanager"
    violations = details["google.rpc.BadRequest"]["field_violations"]
    assert [(v["field"], v["reason"]) for v in violations] == [
        ("flow.tasks", "NO_TASKS"),
        ("flow.start_task", "MISSING_START_TASK"),
    ]


def test_sigterm_drains_in_flight_calls_and_exits_0(
    own_server: RunningServer, tmp_path: Path
) -> None:
    slow_flow = {
        "flow": {"start_task": "slow", "tasks": [{"name": "slow", "params": {"sleep_ms": 2000}}]}
    }
    stream_output = tmp_path / "stream.json"
    command = [str(GRPCURL), "-plaintext", "-max-time", "20", "-d", json.dumps(slow_flow)]
    with stream_output.open("wb") as out:
        client = subprocess.Popen(
            [*command, own_server.address, EXECUTE_STREAM],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        # Wait until the task is running, so the call is in flight when SIGTERM lands;
        # it outlasts the drain delay, so only the grace period lets it finish.
        deadline = time.monotonic() + TIMEOUT
        while '"task_started"' not in stream_output.read_text():
            assert client.poll() is None, stream_output.read_text()
            assert time.monotonic() < deadline, "the stream never reported task_started"
            time.sleep(0.02)

        own_server.process.send_signal(signal.SIGTERM)

        assert client.wait(timeout=TIMEOUT) == 0, stream_output.read_text()
        assert own_server.process.wait(timeout=TIMEOUT) == 0, own_server.log()
    finally:
        if client.poll() is None:
            client.kill()
        client.wait(timeout=TIMEOUT)

    events = json_messages(stream_output.read_text())
    summary = events[-1]["execution_finished"]["result"]
    assert summary["status"] == "EXECUTION_STATUS_COMPLETED"
    assert "draining" in own_server.log()
