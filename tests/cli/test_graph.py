"""`flowctl graph`: Mermaid and DOT text, images through Graphviz, and the path a run took."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.cli.conftest import Flowctl
from tests.e2e.conftest import EXAMPLES, RunningServer

CHAIN_FLOW = {
    "start_task": "score",
    "tasks": [
        {"name": "score"},
        {"name": "high"},
        {"name": "low"},
        {"name": "fallback"},
        {"name": "bad-name"},
    ],
    "conditions": [
        {
            "name": "is_high",
            "source_task": "score",
            "expression": "input.score > 0.8",
            "target_task_success": "high",
        },
        {
            "name": "is_low",
            "source_task": "score",
            "expression": "input.score < 0.2",
            "target_task_success": "low",
            "target_task_failure": "fallback",
        },
        {"source_task": "fallback", "outcome": "failure", "target_task_success": "missing"},
    ],
}


def graph(flowctl: Flowctl, *args: str) -> str:
    result = flowctl("graph", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_mermaid_has_a_node_per_task_and_an_edge_per_route(flowctl: Flowctl) -> None:
    text = graph(flowctl, str(EXAMPLES / "seed-flow.json"))

    lines = [line.strip() for line in text.splitlines()]
    assert lines[0] == "flowchart TD"
    assert 'task1["task1<br/>Fetch data"]' in lines
    assert 'flow_start(("start"))' in lines
    assert 'flow_end((("end")))' in lines
    assert "flow_start --> task1" in lines
    assert 'task1 -->|"outcome == success: true"| task2' in lines
    assert 'task1 -.->|"outcome == success: false"| flow_end' in lines
    assert 'task2 -->|"outcome == success: true"| task3' in lines
    # task3 has no condition: success goes on (to the end, it is last), failure stops.
    assert 'task3 -->|"success"| flow_end' in lines
    assert 'task3 -.->|"failure"| flow_end' in lines


def test_dot_has_the_same_routes(flowctl: Flowctl) -> None:
    text = graph(flowctl, str(EXAMPLES / "recovery-flow.json"), "--format", "dot")

    assert text.startswith("digraph flow {")
    assert '"fetch_primary" -> "store" [label="outcome == success: true"];' in text
    assert (
        '"fetch_primary" -> "fetch_backup" [label="outcome == success: false", style="dashed"];'
        in text
    )
    assert '"fetch_backup" -> "store" [label="success"];' in text
    assert '"store" -> "flow_end" [label="success"];' in text


def test_chains_expressions_and_unknown_targets_are_drawn(flowctl: Flowctl, tmp_path: Path) -> None:
    flow_file = tmp_path / "chain.json"
    flow_file.write_text(json.dumps(CHAIN_FLOW))

    text = graph(flowctl, str(flow_file))

    # A chain: each link's test in order, the last link's failure target for "none held".
    assert 'score -->|"1. input.score #62; 0.8: true"| high' in text
    assert 'score -->|"2. input.score #60; 0.2: true"| low' in text
    assert 'score -.->|"2. input.score #60; 0.2: false"| fallback' in text
    # A name Mermaid cannot take as an id gets one of its own, its label unchanged.
    assert 'task_5["bad-name"]' in text
    assert 'missing{{"missing<br/>(no such task)"}}' in text
    assert 'fallback -->|"outcome == failure: true"| missing' in text
    assert "class missing missing" in text


def test_execution_highlights_the_path_a_run_took(
    flowctl: Flowctl, server: RunningServer, tmp_path: Path
) -> None:
    run = flowctl("run", str(EXAMPLES / "recovery-flow.json"), "--server", server.address, "--json")
    assert run.returncode == 0, run.stderr
    events = tmp_path / "events.jsonl"
    events.write_text(run.stdout)
    response = tmp_path / "response.json"
    finished = json.loads(run.stdout.splitlines()[-1])["execution_finished"]["result"]
    response.write_text(json.dumps(finished, indent=2))

    from_events = graph(flowctl, str(EXAMPLES / "recovery-flow.json"), "--execution", str(events))
    from_response = graph(
        flowctl, str(EXAMPLES / "recovery-flow.json"), "--execution", str(response)
    )

    # A stream cut short (no execution_finished) is rebuilt from its task events.
    partial = tmp_path / "partial.jsonl"
    partial.write_text("\n".join(run.stdout.splitlines()[:-1]))
    from_partial = graph(flowctl, str(EXAMPLES / "recovery-flow.json"), "--execution", str(partial))

    assert from_events == from_response == from_partial
    lines = [line.strip() for line in from_events.splitlines()]
    edges = [line for line in lines if "-->" in line or "-.->" in line]
    taken = {edges[index] for index in _taken_links(lines)}
    assert taken == {
        "flow_start --> fetch_primary",
        'fetch_primary -.->|"outcome == success: false"| fetch_backup',
        'fetch_backup -->|"success"| store',
        'store -->|"success"| flow_end',
    }
    assert "class flow_start,fetch_backup,store,flow_end taken" in lines
    assert "class fetch_primary failed" in lines


def test_execution_highlights_in_dot_too(
    flowctl: Flowctl, server: RunningServer, tmp_path: Path
) -> None:
    run = flowctl("run", str(EXAMPLES / "seed-failure.json"), "--server", server.address, "--json")
    events = tmp_path / "events.jsonl"
    events.write_text(run.stdout)

    text = graph(
        flowctl, str(EXAMPLES / "seed-failure.json"), "--execution", str(events), "--format", "dot"
    )

    failed = 'style="rounded,filled", fillcolor="#ffe3e3"'
    assert f'"task2" [label="task2\\nProcess data", {failed}' in text
    assert '"task3" [label="task3\\nStore data"];' in text  # never ran
    taken = '[label="outcome == success: false", style="dashed", color="#2b8a3e", penwidth="2.5"'
    assert f'"task2" -> "flow_end" {taken}' in text
    assert '"task2" -> "task3" [label="outcome == success: true", color="#adb5bd"];' in text


def test_edges_taken_more_than_once_say_how_often(flowctl: Flowctl, tmp_path: Path) -> None:
    flow_file = tmp_path / "loop.json"
    flow_file.write_text(
        json.dumps(
            {
                "start_task": "poll",
                "tasks": [{"name": "poll"}],
                "conditions": [
                    {
                        "source_task": "poll",
                        "expression": "false",
                        "target_task_success": "end",
                        "target_task_failure": "poll",
                    }
                ],
            }
        )
    )
    decision = {"condition_index": 0, "branch": "BRANCH_FAILURE", "next_task": "poll"}
    response = {
        "status": "EXECUTION_STATUS_FAILED",
        "executed_tasks": ["poll"] * 3,
        "task_results": [{"task": "poll", "outcome": "TASK_OUTCOME_SUCCESS", "decision": decision}]
        * 3,
    }
    execution = tmp_path / "response.json"
    execution.write_text(json.dumps(response))

    text = graph(flowctl, str(flow_file), "--execution", str(execution))

    assert 'poll -.->|"false: false (3 times)"| poll' in text


def test_graph_writes_svg_with_graphviz(flowctl: Flowctl, tmp_path: Path) -> None:
    if shutil.which("dot") is None:
        pytest.skip("Graphviz's dot is not installed (apt-get install graphviz)")
    output = tmp_path / "seed.svg"

    result = flowctl("graph", str(EXAMPLES / "seed-flow.json"), "--output", str(output))

    assert result.returncode == 0, result.stderr
    assert result.stderr == f"wrote {output}\n"
    svg = output.read_text()
    assert svg.lstrip().startswith("<?xml")
    assert "<svg" in svg
    assert "task1" in svg
    assert "outcome == success: true" in svg


def test_graph_without_graphviz_says_how_to_install_it(flowctl: Flowctl, tmp_path: Path) -> None:
    output = tmp_path / "seed.png"
    empty = tmp_path / "bin"
    empty.mkdir()

    result = flowctl(
        "graph", str(EXAMPLES / "seed-flow.json"), "-o", str(output), env={"PATH": str(empty)}
    )

    assert result.returncode == 2
    assert not output.exists()
    assert f"cannot write {output} as PNG: Graphviz's `dot` is not installed" in result.stderr
    assert "apt-get install graphviz" in result.stderr


def test_graph_rejects_an_execution_file_that_is_not_one(flowctl: Flowctl, tmp_path: Path) -> None:
    execution = tmp_path / "nothing.json"
    execution.write_text('{"task_finished": 3}')

    result = flowctl("graph", str(EXAMPLES / "seed-flow.json"), "--execution", str(execution))

    assert result.returncode == 2
    assert result.stderr.startswith(f"flowctl: {execution}: not an execution record: ")


def _taken_links(lines: list[str]) -> list[int]:
    styles = [line for line in lines if line.startswith("linkStyle ") and "default" not in line]
    assert len(styles) == 1, styles
    return [int(index) for index in styles[0].split()[1].split(",")]
