"""The server process's metrics endpoint and JSON logs, driven by grpcurl."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Callable, Iterator
from subprocess import CompletedProcess

import pytest

from tests.e2e.conftest import REPO_ROOT, RunningServer, serving

SEED = REPO_ROOT / "examples" / "seed-flow.json"
SEED_FAILURE = REPO_ROOT / "examples" / "seed-failure.json"


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    log = tmp_path_factory.mktemp("observed") / "server.log"
    with serving(log, ["--metrics-address", "127.0.0.1:0", "--log-format", "json"]) as running:
        yield running


def metrics_text(server: RunningServer) -> str:
    match = re.search(r"metrics on (http://127\.0\.0\.1:\d+/metrics)", server.log())
    assert match, server.log()
    with urllib.request.urlopen(match.group(1), timeout=5) as response:
        return str(response.read().decode())


def test_the_metrics_endpoint_counts_what_grpcurl_ran(
    observed: RunningServer, grpcurl: Callable[..., CompletedProcess[str]]
) -> None:
    result = grpcurl(
        "-H",
        "x-request-id: cli-7",
        "-d",
        "@",
        observed.address,
        "flowmanager.v1.FlowService/Execute",
        stdin=SEED,
    )
    assert result.returncode == 0, result.stderr

    text = metrics_text(observed)

    assert 'flowmanager_executions_total{flow_id="flow123",status="completed"} 1.0' in text
    assert 'flowmanager_task_runs_total{outcome="success",type="mock"} 3.0' in text
    assert (
        'flowmanager_rpcs_total{code="OK",method="/flowmanager.v1.FlowService/Execute"} 1.0' in text
    )
    assert "flowmanager_executions_in_flight 0.0" in text


def test_json_log_lines_carry_the_callers_request_id(
    observed: RunningServer, grpcurl: Callable[..., CompletedProcess[str]]
) -> None:
    grpcurl(
        "-H",
        "x-request-id: cli-8",
        "-d",
        "@",
        observed.address,
        "flowmanager.v1.FlowService/Execute",
        stdin=SEED_FAILURE,  # failed executions are logged at INFO, completed ones at DEBUG
    )

    lines = [json.loads(line) for line in observed.log().splitlines() if line.startswith("{")]
    ours = [line for line in lines if line.get("request_id") == "cli-8"]
    assert ours, lines
    assert ours[-1]["flow_id"] == "flow123"
    assert ours[-1]["execution_id"]
    assert ours[-1]["status"] == "failed"
    assert "failed" in ours[-1]["message"]
