"""`flowctl flows create|get|list|versions` and `run|start --flow ID[@VERSION]`: the real
console script against a real server process with a registry of its own."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.conftest import Flowctl
from tests.e2e.conftest import EXAMPLES, RunningServer, serving

SEED = str(EXAMPLES / "seed-flow.json")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server with a store of its own, so that the registry holds only this module's flows."""
    directory = tmp_path_factory.mktemp("server")
    with serving(directory / "server.log", ["--store", str(directory / "f.db")]) as running:
        yield running


def changed_seed(directory: Path, flow_id: str, name: str) -> str:
    body = json.loads(Path(SEED).read_text())
    body["flow"].update(id=flow_id, name=name)
    path = directory / f"{flow_id}-{len(name)}.json"
    path.write_text(json.dumps(body))
    return str(path)


def test_create_twice_then_changed_makes_two_versions_and_get_shows_each(
    flowctl: Flowctl, server: RunningServer, tmp_path: Path
) -> None:
    first = flowctl("flows", "create", SEED, "--server", server.address)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "created flow123@1"
    same = flowctl("flows", "create", SEED, "--server", server.address, "--json")
    assert json.loads(same.stdout)["flow"]["version"] == 1
    assert "created" not in json.loads(same.stdout)  # false: proto3 JSON leaves it out
    renamed = changed_seed(tmp_path, "flow123", "renamed")
    second = flowctl("flows", "create", renamed, "--server", server.address, "--json")
    assert json.loads(second.stdout)["created"] is True

    latest = flowctl("flows", "get", "flow123", "--server", server.address, "--json")
    assert (json.loads(latest.stdout)["version"], json.loads(latest.stdout)["flow"]["name"]) == (
        2,
        "renamed",
    )
    one = flowctl("flows", "get", "flow123@1", "--server", server.address)
    assert one.returncode == 0, one.stderr
    assert one.stdout.startswith("flow123@1  ")
    assert '"name": "Data processing flow"' in one.stdout
    versions = flowctl("flows", "versions", "flow123", "--server", server.address, "--json")
    assert [v["version"] for v in json.loads(versions.stdout)["versions"]] == [2, 1]


def test_list_pages_through_the_flows(
    flowctl: Flowctl, server: RunningServer, tmp_path: Path
) -> None:
    for flow_id in ("list-a", "list-b", "list-c"):
        created = flowctl(
            "flows", "create", changed_seed(tmp_path, flow_id, flow_id), "--server", server.address
        )
        assert created.returncode == 0, created.stderr
    ids: list[str] = []
    token = ""
    while True:
        page = flowctl(
            "flows", "list", "--page-size", "2", "--page-token", token, "--json",
            "--server", server.address,
        )  # fmt: skip
        listed = json.loads(page.stdout)
        ids += [flow["flow_id"] for flow in listed.get("flows", [])]
        token = listed.get("next_page_token", "")
        if not token:
            break
    assert [i for i in ids if i.startswith("list-")] == ["list-a", "list-b", "list-c"]
    people = flowctl("flows", "list", "--page-size", "1", "--server", server.address)
    assert people.stdout.splitlines()[-1].startswith("next page: --page-token ")


def test_an_invalid_flow_is_refused_with_its_field_paths_and_exit_2(
    flowctl: Flowctl, server: RunningServer, tmp_path: Path
) -> None:
    invalid = tmp_path / "invalid.json"
    invalid.write_text(json.dumps({"id": "bad", "start_task": "nowhere", "tasks": [{"name": "a"}]}))
    result = flowctl("flows", "create", str(invalid), "--server", server.address)
    assert result.returncode == 2, result.stderr
    assert f"{invalid}: error: flow.start_task: " in result.stderr
    assert "[UNKNOWN_START_TASK]" in result.stderr
    listed = flowctl("flows", "get", "bad", "--server", server.address)
    assert listed.returncode == 3


def test_run_and_start_take_a_reference_and_the_history_shows_the_version(
    flowctl: Flowctl, server: RunningServer, tmp_path: Path
) -> None:
    flowctl("flows", "create", changed_seed(tmp_path, "by-ref", "one"), "--server", server.address)
    flowctl("flows", "create", changed_seed(tmp_path, "by-ref", "two!"), "--server", server.address)
    run = flowctl("run", "--flow", "by-ref@1", "--json", "--server", server.address)
    assert run.returncode == 0, run.stderr
    finished = json.loads(run.stdout.splitlines()[-1])["execution_finished"]["result"]
    got = flowctl("get", finished["execution_id"], "--server", server.address)
    assert "flow       by-ref@1" in got.stdout

    started = flowctl("start", "--flow", "by-ref", "--json", "--server", server.address)
    assert started.returncode == 0, started.stderr
    execution = json.loads(started.stdout)
    assert (execution["flow_version"], execution["request"]["flow_ref"]["version"]) == (2, 2)


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("run", "--flow", "nobody"), 3),
        (("run", "--flow", "by-ref@x"), 2),
        (("run", "--flow", "flow123", SEED), 2),
        (("start",), 2),
        (("flows", "get", "nobody@3"), 3),
    ],
)
def test_a_bad_or_unknown_reference_exits_with_its_code(
    flowctl: Flowctl, server: RunningServer, args: tuple[str, ...], code: int
) -> None:
    result = flowctl(*args, "--server", server.address)
    assert result.returncode == code, result.stderr
    if code == 3:
        assert "reason FLOW_NOT_FOUND" in result.stderr
