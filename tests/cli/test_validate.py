"""`flowctl validate`: errors and warnings with their field paths, from a real server."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.conftest import Flowctl
from tests.e2e.conftest import EXAMPLES, RunningServer

INVALID_YAML = """\
start_task: nope
tasks:
  - name: a
    type: teleport
  - name: a
conditions:
  - source_task: a
    expression: "result.output.rows =="
"""

SUSPICIOUS_YAML = """\
start_task: a
tasks:
  - name: a
  - name: b
  - name: orphan
conditions:
  - source_task: a
    outcome: success
    target_task_success: b
    target_task_failure: b
  - source_task: b
    outcome: success
    target_task_success: a
    target_task_failure: a
"""


def test_validate_a_valid_flow_exits_0(flowctl: Flowctl, server: RunningServer) -> None:
    result = flowctl("validate", str(EXAMPLES / "seed-flow.json"), "--server", server.address)

    assert result.returncode == 0, result.stderr
    assert result.stdout == f"✔ {EXAMPLES / 'seed-flow.json'}: valid (0 errors, 0 warnings)\n"


def test_validate_prints_every_error_with_its_field_path_and_exits_2(
    flowctl: Flowctl, server: RunningServer, tmp_path: Path
) -> None:
    flow_file = tmp_path / "invalid.yaml"
    flow_file.write_text(INVALID_YAML)

    result = flowctl("validate", str(flow_file), "--server", server.address)

    assert result.returncode == 2
    lines = result.stdout.splitlines()
    assert [line.split(": ")[1:3] for line in lines[:-1]] == [
        ["error", "flow.tasks[0].type"],
        ["error", "flow.tasks[1].name"],
        ["error", "flow.start_task"],
        ["error", "flow.conditions[0].expression"],
    ]
    assert lines[0].endswith("[UNKNOWN_TASK_TYPE]")
    assert "line 1, column 22" in lines[3]
    assert lines[-1] == f"✘ {flow_file}: invalid (4 errors, 0 warnings)"


def test_validate_prints_warnings_and_exits_0_when_there_are_no_errors(
    flowctl: Flowctl, server: RunningServer, tmp_path: Path
) -> None:
    flow_file = tmp_path / "suspicious.yaml"
    flow_file.write_text(SUSPICIOUS_YAML)

    result = flowctl("validate", str(flow_file), "--server", server.address)

    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"{flow_file}: warning: flow.tasks[0]: task 'a' is in a loop with no way out" in out
    assert "[LOOP_WITHOUT_EXIT]" in out
    assert f"{flow_file}: warning: flow.tasks[2]: task 'orphan' can never run" in out
    assert "[UNREACHABLE_TASK]" in out
    assert out.endswith(f"✔ {flow_file}: valid (0 errors, 3 warnings)\n")


def test_validate_json_prints_the_response(
    flowctl: Flowctl, server: RunningServer, tmp_path: Path
) -> None:
    flow_file = tmp_path / "invalid.yaml"
    flow_file.write_text(INVALID_YAML)

    result = flowctl("validate", str(flow_file), "--server", server.address, "--json")

    assert result.returncode == 2
    response = json.loads(result.stdout)
    assert "valid" not in response  # false is proto3's default, omitted
    assert response["errors"][0] == {
        "field": "flow.tasks[0].type",
        "description": response["errors"][0]["description"],
        "reason": "UNKNOWN_TASK_TYPE",
    }


def test_validate_against_an_unreachable_server_exits_3(
    flowctl: Flowctl, unreachable_address: str
) -> None:
    result = flowctl("validate", str(EXAMPLES / "seed-flow.json"), "--server", unreachable_address)

    assert result.returncode == 3
    assert result.stderr == (
        f"flowctl: cannot reach the Flow Manager at {unreachable_address} "
        "(is it running? `make run`)\n"
    )


def test_validate_checks_the_stubs_execute_would_reject(
    flowctl: Flowctl, server: RunningServer, tmp_path: Path
) -> None:
    body = json.loads((EXAMPLES / "seed-flow.json").read_text())
    body["stubs"] = {"task9": {"outcome": "TASK_OUTCOME_SUCCESS"}}
    flow_file = tmp_path / "what-if.json"
    flow_file.write_text(json.dumps(body))

    validated = flowctl("validate", str(flow_file), "--server", server.address, "--json")
    executed = flowctl("run", str(flow_file), "--server", server.address)

    assert validated.returncode == 2
    assert [(e["field"], e["reason"]) for e in json.loads(validated.stdout)["errors"]] == [
        ('stubs["task9"]', "UNKNOWN_TASK")
    ]
    assert executed.returncode == 2


def test_validate_accepts_the_what_if_example_with_its_input(
    flowctl: Flowctl, server: RunningServer
) -> None:
    what_if = str(EXAMPLES / "what-if.json")

    result = flowctl("validate", what_if, "--input", '{"user": 42}', "--server", server.address)

    assert result.returncode == 0, result.stderr
