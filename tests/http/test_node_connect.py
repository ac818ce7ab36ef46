"""One server, three protocols, three real clients, the same flow: the same result.

The TypeScript client of tests/interop/node (protobuf-es types, Connect's
transports for Node) runs its calls over Connect (JSON and binary) and
gRPC-Web on the HTTP port and over gRPC on the gRPC port; curl posts the
seed file as JSON, grpcurl sends it to the gRPC port. What each saw of the
seed flow must agree, and errors must keep their codes and details.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.http.conftest import EXAMPLES, HttpServer, curl, http_serving
from tests.server_process import REPO_ROOT

CLIENT_DIR = REPO_ROOT / "tests" / "interop" / "node"
CLIENT = CLIENT_DIR / "dist" / "src" / "client.js"
GRPCURL = Path(sys.executable).parent / "grpcurl"
NODE_TIMEOUT = 60.0
HTTP_PROTOCOLS = ("connect", "connect-binary", "grpc-web")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    with http_serving(tmp_path_factory.mktemp("node") / "server.log", ["--store", "memory"]) as s:
        yield s


def run_node(address: str, protocol: str) -> dict[str, dict[str, Any]]:
    """The node client's calls over `protocol`, one parsed line per call, by call name."""
    node = shutil.which("node")
    assert node, "node is not on PATH"
    assert CLIENT.exists(), f"{CLIENT} is missing: run `make interop-node`"
    result = subprocess.run(
        [node, str(CLIENT), address, str(EXAMPLES / "seed-flow.json"), protocol],
        cwd=CLIENT_DIR,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, f"node exited {result.returncode}:\n{result.stderr}"
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    return {line["call"]: line for line in lines}


@pytest.fixture(scope="module")
def runs(server: HttpServer) -> dict[str, dict[str, dict[str, Any]]]:
    """The node client's calls by protocol: the three of the HTTP port, and gRPC."""
    found = {protocol: run_node(server.url, protocol) for protocol in HTTP_PROTOCOLS}
    found["grpc"] = run_node(server.grpc.address, "grpc")
    return found


def outline(summary: dict[str, Any]) -> tuple[Any, ...]:
    """What must be the same whoever ran the flow: status, tasks and their routing."""
    return (
        summary["flowId"],
        summary["status"],
        tuple(summary["executedTasks"]),
        tuple(
            (r["task"], r["outcome"], r["step"], r["attempts"], r["branch"], r["nextTask"])
            for r in summary["taskResults"]
        ),
    )


@pytest.mark.parametrize("protocol", HTTP_PROTOCOLS)
def test_execute_over_http_is_execute_over_grpc(
    runs: dict[str, dict[str, dict[str, Any]]], protocol: str
) -> None:
    assert outline(runs[protocol]["Execute"]) == outline(runs["grpc"]["Execute"])
    assert runs[protocol]["Execute"]["status"] == "EXECUTION_STATUS_COMPLETED"


@pytest.mark.parametrize("protocol", HTTP_PROTOCOLS)
def test_the_stream_over_http_has_the_grpc_events(
    runs: dict[str, dict[str, dict[str, Any]]], protocol: str
) -> None:
    def kinds(run: dict[str, dict[str, Any]]) -> list[tuple[Any, ...]]:
        return [(e["sequence"], e["kind"], e.get("task")) for e in run["ExecuteStream"]["events"]]

    assert kinds(runs[protocol]) == kinds(runs["grpc"])
    assert len(kinds(runs[protocol])) == 10


@pytest.mark.parametrize("protocol", HTTP_PROTOCOLS)
def test_an_invalid_flow_has_the_same_details_over_http(
    runs: dict[str, dict[str, dict[str, Any]]], protocol: str
) -> None:
    over_http = runs[protocol]["Execute (invalid flow)"]
    over_grpc = runs["grpc"]["Execute (invalid flow)"]

    assert over_http["code"] == "InvalidArgument"
    assert over_http["errorInfo"] == over_grpc["errorInfo"]
    assert over_http["fieldViolations"] == over_grpc["fieldViolations"]


@pytest.mark.parametrize("protocol", HTTP_PROTOCOLS)
def test_a_missed_deadline_is_deadline_exceeded(
    runs: dict[str, dict[str, dict[str, Any]]], protocol: str
) -> None:
    missed = runs[protocol]["Execute (deadline)"]

    assert missed["code"] == "DeadlineExceeded"
    # The client's own timer and the server's reply race; the reply, when it wins,
    # carries the server's ErrorInfo.
    assert missed["reason"] in (None, "DEADLINE_EXCEEDED")


def test_curl_grpcurl_and_node_see_the_same_seed_run(
    server: HttpServer, runs: dict[str, dict[str, dict[str, Any]]]
) -> None:
    by_curl = curl(
        "-H",
        "content-type: application/json",
        "--data-binary",
        f"@{EXAMPLES / 'seed-flow.json'}",
        server.rpc("FlowService/Execute"),
    )
    with (EXAMPLES / "seed-flow.json").open("rb") as seed:
        by_grpcurl = subprocess.run(
            [
                str(GRPCURL),
                "-plaintext",
                "-max-time",
                "20",
                "-d",
                "@",
                server.grpc.address,
                "flowmanager.v1.FlowService/Execute",
            ],
            stdin=seed,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert by_curl.returncode == 0 and by_grpcurl.returncode == 0, by_grpcurl.stderr

    def routing(reply: dict[str, Any]) -> tuple[Any, ...]:
        # grpcurl prints the proto names, curl gets the JSON names: read both ways.
        results = reply.get("taskResults", reply.get("task_results"))
        return (
            reply["status"],
            tuple(reply.get("executedTasks", reply.get("executed_tasks"))),
            tuple((r["task"], r["outcome"], r.get("step")) for r in results),
        )

    node = runs["connect"]["Execute"]
    expected = (
        node["status"],
        tuple(node["executedTasks"]),
        tuple((r["task"], r["outcome"], r["step"]) for r in node["taskResults"]),
    )
    assert routing(json.loads(by_curl.stdout)) == expected
    assert routing(json.loads(by_grpcurl.stdout)) == expected
