"""Bad flow files and arguments: exit 2, with the file named and the problem located.

None of these reach a server: files are read and checked first, so the
address given is one where nothing listens.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.conftest import Flowctl

NOWHERE = "127.0.0.1:9"  # never contacted: the file fails first


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        (
            "broken.json",
            '{"flow": {"tasks": [}',
            "line 1, column 21: Expecting value (not valid JSON)",
        ),
        (
            "broken.yaml",
            "start_task: a\ntasks:\n  - name: a\n   type: mock\n",
            "line 4, column 4: ",
        ),
        (
            "typo.json",
            json.dumps({"flow": {"start_task": "a", "taks": [{"name": "a"}]}}),
            "flow: unknown field 'taks' (known fields: id, name, start_task, tasks, conditions, "
            "max_steps, timeout, output); did you mean 'tasks'?",
        ),
        (
            "duration.yaml",
            "start_task: a\ntasks:\n  - name: a\n    timeout: 5m\n",
            'flow.tasks[0].timeout: Duration must end with letter "s": 5m',
        ),
        (
            "date.yaml",
            "start_task: a\ntasks:\n  - name: a\n    params: {day: 2026-01-31}\n",
            "the value at flow.tasks[0].params.day is a date, which JSON cannot hold; quote it",
        ),
        (
            "neither.json",
            json.dumps({"steps": []}),
            'expected a request {"flow": {...}} or a flow {"start_task": ..., "tasks": [...]}; '
            "found keys: steps",
        ),
        ("list.yaml", "- a\n- b\n", "expected a JSON/YAML object, found a list"),
        ("empty.json", "  \n", "the file is empty"),
    ],
)
@pytest.mark.parametrize("command", ["run", "validate", "graph"])
def test_a_bad_flow_file_exits_2_naming_the_file_and_the_problem(
    flowctl: Flowctl, tmp_path: Path, command: str, name: str, content: str, problem: str
) -> None:
    flow_file = tmp_path / name
    flow_file.write_text(content)
    server = [] if command == "graph" else ["--server", NOWHERE]

    result = flowctl(command, str(flow_file), *server)

    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith(f"flowctl: {flow_file}: ")
    assert problem in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_a_missing_file_exits_2(flowctl: Flowctl, tmp_path: Path) -> None:
    result = flowctl("run", str(tmp_path / "nope.json"), "--server", NOWHERE)

    assert result.returncode == 2
    assert result.stderr == f"flowctl: {tmp_path / 'nope.json'}: no such file\n"


def test_bad_input_exits_2(flowctl: Flowctl, tmp_path: Path) -> None:
    flow_file = tmp_path / "flow.json"
    flow_file.write_text(json.dumps({"start_task": "a", "tasks": [{"name": "a"}]}))

    not_json = flowctl("run", str(flow_file), "--server", NOWHERE, "--input", "{mode: fast}")
    not_object = flowctl("run", str(flow_file), "--server", NOWHERE, "--input", "[1]")

    assert not_json.returncode == 2
    assert not_json.stderr.startswith("flowctl: --input: not valid JSON: ")
    assert not_object.returncode == 2
    assert "the input must be a JSON object, found a list" in not_object.stderr


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["run"],
        ["fly", "flow.json"],
        ["run", "flow.json", "--timeout", "0"],
        ["run", "flow.json", "-H", "no-colon"],
        ["graph", "flow.json", "--format", "gif"],
    ],
)
def test_usage_errors_exit_2(flowctl: Flowctl, args: list[str]) -> None:
    result = flowctl(*args)

    assert result.returncode == 2
    assert "usage: flowctl" in result.stderr


def test_help_documents_the_exit_codes(flowctl: Flowctl) -> None:
    result = flowctl("--help")

    assert result.returncode == 0
    assert "exit codes:" in result.stdout
    for code in ("0 ", "1 ", "2 ", "3 "):
        assert f"\n  {code}" in result.stdout
    assert "FLOWCTL_SERVER" in result.stdout
