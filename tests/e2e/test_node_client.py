"""End to end: a typed TypeScript client, generated from our protos, against the real server.

tests/interop/node/src/client.ts uses protobuf-es types and Connect's gRPC
transport for Node (`make interop-node` installs, generates and builds it).
It runs the seed flow through `Execute` and `ExecuteStream` and sends an
invalid flow, printing one JSON line per call; these tests check the lines.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.protobuf import json_format

from flowmanager.v1 import flow_service_pb2 as pb
from tests.e2e.conftest import EXAMPLES, REPO_ROOT, RunningServer, serving

CLIENT_DIR = REPO_ROOT / "tests" / "interop" / "node"
CLIENT = CLIENT_DIR / "dist" / "src" / "client.js"
NODE_TIMEOUT = 60.0
"""Seconds the node program may take for its three calls (it takes well under one)."""

SEED_TASKS = ["task1", "task2", "task3"]


@dataclass(frozen=True, slots=True)
class NodeRun:
    """What the node program printed, and the server it ran against."""

    calls: dict[str, dict[str, Any]]
    """One parsed JSON line per call, by its `call` name."""
    server: RunningServer
    """The server, whose log the tests read."""


@pytest.fixture(scope="module")
def node_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeRun]:
    """One run of the node client against a server of its own."""
    node = shutil.which("node")
    assert node, "node is not on PATH: the TypeScript client needs Node.js 20 or newer"
    assert CLIENT.exists(), f"{CLIENT} is missing: run `make interop-node`"
    # DEBUG, so that completed executions are logged too (the test reads them).
    with serving(
        tmp_path_factory.mktemp("node") / "server.log", ["--log-level", "DEBUG"]
    ) as server:
        result = subprocess.run(
            [node, str(CLIENT), server.address, str(EXAMPLES / "seed-flow.json")],
            cwd=CLIENT_DIR,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=NODE_TIMEOUT,
            check=False,
        )
        assert result.returncode == 0, (
            f"the node client exited {result.returncode}:\n{result.stderr}\n{result.stdout}"
        )
        lines = [json.loads(line) for line in result.stdout.splitlines()]
        yield NodeRun(calls={line["call"]: line for line in lines}, server=server)


def test_execute_runs_the_seed_flow(node_run: NodeRun) -> None:
    execute = node_run.calls["Execute"]

    assert execute["flowId"] == "flow123"
    assert execute["status"] == "EXECUTION_STATUS_COMPLETED"
    assert execute["executedTasks"] == SEED_TASKS
    assert execute["failedTask"] == ""
    started = datetime.fromisoformat(execute["startTime"])
    assert abs(datetime.now(UTC) - started) < timedelta(minutes=5)
    assert [
        (r["task"], r["outcome"], r["step"], r["attempts"], r["branch"], r["nextTask"])
        for r in execute["taskResults"]
    ] == [
        ("task1", "TASK_OUTCOME_SUCCESS", 1, 1, "BRANCH_SUCCESS", "task2"),
        ("task2", "TASK_OUTCOME_SUCCESS", 2, 1, "BRANCH_SUCCESS", "task3"),
        ("task3", "TASK_OUTCOME_SUCCESS", 3, 1, None, None),
    ]
    assert f"execution {execute['executionId']} of flow 'flow123' completed" in (
        node_run.server.log()
    )


def test_the_typescript_json_mapping_is_the_python_one(node_run: NodeRun) -> None:
    """protobuf-es's JSON of the response reads into the Python message and writes back the same."""
    written = node_run.calls["Execute"]["json"]

    message = json_format.ParseDict(written, pb.ExecuteResponse())

    assert json_format.MessageToDict(message) == written
    assert message.status == pb.EXECUTION_STATUS_COMPLETED
    assert list(message.executed_tasks) == SEED_TASKS


def test_execute_stream_reads_every_event_in_order(node_run: NodeRun) -> None:
    stream = node_run.calls["ExecuteStream"]
    events = stream["events"]

    assert len(stream["executionIds"]) == 1
    assert [event["sequence"] for event in events] == list(range(1, len(events) + 1))
    assert [(event["kind"], event.get("task")) for event in events] == [
        ("executionStarted", None),
        ("taskStarted", "task1"),
        ("taskFinished", "task1"),
        ("conditionEvaluated", None),
        ("taskStarted", "task2"),
        ("taskFinished", "task2"),
        ("conditionEvaluated", None),
        ("taskStarted", "task3"),
        ("taskFinished", "task3"),
        ("executionFinished", None),
    ]
    assert events[0]["startTask"] == "task1"
    assert [e["nextTask"] for e in events if e["kind"] == "conditionEvaluated"] == [
        "task2",
        "task3",
    ]
    summary = events[-1]["result"]
    assert summary["executionId"] == stream["executionIds"][0]
    assert summary["status"] == "EXECUTION_STATUS_COMPLETED"
    assert summary["executedTasks"] == SEED_TASKS


def test_an_invalid_flow_is_decoded_into_bad_request_details(node_run: NodeRun) -> None:
    invalid = node_run.calls["Execute (invalid flow)"]

    assert invalid["code"] == "InvalidArgument"
    assert invalid["message"].startswith("invalid flow")
    assert "flow.tasks[0].type" in invalid["message"]
    assert invalid["errorInfo"]["reason"] == "INVALID_FLOW"
    assert invalid["errorInfo"]["domain"] == "flowmanager"
    assert invalid["errorInfo"]["metadata"]["violations"] == "3"
    assert [(v["field"], v["reason"]) for v in invalid["fieldViolations"]] == [
        ("flow.tasks[0].type", "UNKNOWN_TASK_TYPE"),
        ("flow.conditions[0].outcome", "INVALID_OUTCOME"),
        ("flow.conditions[0].target_task_success", "UNKNOWN_TARGET_TASK"),
    ]
    assert all(v["description"] for v in invalid["fieldViolations"])
