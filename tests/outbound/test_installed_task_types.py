"""Task types from an installed package: its entry points and its register() module."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "examples" / "task-package"

RUN_FLOW = """
import asyncio, json
from flowservice import Engine, Flow, Task
from flowservice.api.task_types import server_registry
from flowservice.settings import Settings

async def main():
    registry = server_registry(Settings.from_args({argv!r}, {{}}))
    engine = Engine(registry)
    flow = Flow(id="f", name="f", start_task="greet", tasks=(
        Task("greet", "greet", params={{"name": "mesh"}}),
        Task("shout", "shout", params={{"text": "loud"}}),
    ), conditions=())
    summary = await engine.execute(flow)
    print(json.dumps({{"types": sorted(registry), "output": dict(summary.task_results[0].output)}}))
    await engine.aclose()

asyncio.run(main())
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example package, installed by pip (into a directory, not the shared venv)."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(PACKAGE),
        ],
        check=True,
        timeout=300,
        capture_output=True,
    )
    return target


def _run(site: Path, argv: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}
    code = RUN_FLOW.format(argv=argv)
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )


def test_an_entry_point_and_a_task_module_add_task_types(installed: Path) -> None:
    done = _run(installed, ["--task-module", "flowmanager_example_tasks"])

    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert {"greet", "shout", "http", "mock"} <= set(report["types"])
    assert report["output"] == {"greeting": "hello, mesh"}


def test_a_module_that_cannot_be_imported_fails_at_start_up(installed: Path) -> None:
    done = _run(installed, ["--task-module", "no_such_module_here"])

    assert done.returncode != 0
    assert "TaskRegistrationError" in done.stderr


def test_the_server_refuses_to_start_with_a_module_it_cannot_import() -> None:
    done = subprocess.run(
        [
            *(sys.executable, "-m", "flowservice"),
            *("--address", "127.0.0.1:0", "--task-module", "no_such_module_here"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 2
