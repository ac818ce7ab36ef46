"""The benchmark harness in smoke mode: it still produces every figure, and they are sane.

The smoke run (`python -m bench --smoke`) starts the real servers and drives
them with h2load and the Python client, with a few hundred calls and tiny
flows, so the harness cannot rot between full runs (`make bench`). Its
numbers are not judged against the targets: a smoke run is too small to say
anything about them.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SMOKE_TIMEOUT = 90.0
"""Seconds the smoke run may take (it takes about 20 on the project's machine)."""

pytestmark = [
    pytest.mark.skipif(
        shutil.which("h2load") is None,
        reason="h2load is not installed (Debian package nghttp2-client; `make pytest` installs it)",
    ),
    # The module's first test waits for the whole smoke run: past the suite's
    # 60 s per test on a loaded machine, well within SMOKE_TIMEOUT.
    pytest.mark.timeout(SMOKE_TIMEOUT + 30),
]

IN_FLIGHT = (1, 8, 64)
EXPECTED_FIGURES = {
    *(
        f"transport.{generator}.{kind}.{n}"
        for generator in ("h2load", "python")
        for kind in ("check", "execute", "ratio")
        for n in IN_FLIGHT
    ),
    "engine.us_per_step",
    "flow_size.10",
    "flow_size.30",
    "flow_size.100",
    "flow_size.ratio",
    "stream.events_per_s",
    "stream.events_per_s.python",
    "memory.kb_per_execution",
    "multicore.workers1",
    "multicore.workers2",
    "multicore.workers1_pinned",
    "multicore.workers2_unpinned",
    "multicore.ratio",
    "multicore.ratio_pinned",
    "multicore.ratio_unpinned",
    "store.memory",
    "store.sqlite",
    "store.ratio",
    "store.cpu_ratio",
    "store.start",
}
REST_FIGURES = {
    *(f"transport.h2load.{kind}.{n}" for kind in ("rest", "rest_ratio") for n in IN_FLIGHT),
    "multicore.rest_workers2",
    "multicore.best_vs_rest",
}
"""The REST peer's figures: there when `make bench` installed its dependencies."""
REST_TARGETED = {
    "transport.h2load.rest_ratio.8",
    "transport.h2load.rest_ratio.64",
    "multicore.best_vs_rest",
}
TARGETED = {
    "transport.h2load.ratio.8",
    "transport.h2load.ratio.64",
    "engine.us_per_step",
    "flow_size.100",
    "flow_size.ratio",
    "stream.events_per_s",
    "memory.kb_per_execution",
    "multicore.ratio",
    "store.ratio",
}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    """The JSON and the printed table of one smoke run."""
    output = tmp_path_factory.mktemp("bench") / "smoke.json"
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--json", str(output)],
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=SMOKE_TIMEOUT,
        check=False,
    )
    assert completed.returncode == 0, f"smoke run failed:\n{completed.stderr[-5000:]}"
    return json.loads(output.read_text()), completed.stdout


def test_every_figure_is_produced_and_positive(smoke: tuple[dict[str, Any], str]) -> None:
    results, _ = smoke
    figures = {figure["key"]: figure for figure in results["figures"]}
    assert set(figures) == EXPECTED_FIGURES | (REST_FIGURES if _rest_measured(results) else set())
    for key, figure in figures.items():
        assert isinstance(figure["value"], float | int), key
        assert math.isfinite(figure["value"]), key
        assert figure["value"] > 0, key


def test_targets_are_attached_but_not_judged_on_a_smoke_run(
    smoke: tuple[dict[str, Any], str],
) -> None:
    results, _ = smoke
    assert results["mode"] == "smoke"
    targeted = {figure["key"] for figure in results["figures"] if figure["target"]}
    assert targeted == TARGETED | (REST_TARGETED if _rest_measured(results) else set())
    assert all(figure["passed"] is None for figure in results["figures"])


def test_transport_points_are_consistent(smoke: tuple[dict[str, Any], str]) -> None:
    results, _ = smoke
    points = results["transport"]
    rest_points = len(IN_FLIGHT) if _rest_measured(results) else 0
    assert len(points) == 2 * 2 * len(IN_FLIGHT) + rest_points
    assert sum(point["method"] == "REST (seed design)" for point in points) == rest_points
    for point in points:
        assert point["requests"] > 0
        assert 0 < point["p50_ms"] <= point["p99_ms"]
        assert point["server_cpu_us_per_call"] >= 0
        assert point["rps"] == pytest.approx(point["requests"] / point["seconds"])


def _rest_measured(results: dict[str, Any]) -> bool:
    """Whether the run measured the REST peer; when not, the run says why."""
    note = results["rest"]["note"]
    assert note == "" or "not installed" in note
    return note == ""


def test_memory_was_measured_with_every_execution_in_flight(
    smoke: tuple[dict[str, Any], str],
) -> None:
    memory = smoke[0]["memory"]
    assert memory["executions"] == memory["in_flight"] == 200


def test_both_workers_of_a_two_worker_layout_got_calls(
    smoke: tuple[dict[str, Any], str],
) -> None:
    shares = smoke[0]["multicore"]["cpu_share"]
    assert len(shares["workers2"]) == len(shares["workers2_unpinned"]) == 2
    assert all(share > 0 for share in shares["workers2"])


def test_the_rest_peer_with_two_workers_joins_every_multicore_round(
    smoke: tuple[dict[str, Any], str],
) -> None:
    results, table = smoke
    if not _rest_measured(results):
        return
    multicore = results["multicore"]
    assert len(multicore["round_rps"]["rest_workers2"]) == results["config"]["rounds"]
    # Both of uvicorn's workers were found, and their CPU time counted.
    assert len(multicore["cpu_share"]["rest_workers2"]) == 2
    assert multicore["cores_used"]["rest_workers2"] > 0
    assert "Whole machine: the best serving configuration ÷ REST with 2 workers" in table


def test_machine_is_recorded(smoke: tuple[dict[str, Any], str]) -> None:
    machine = smoke[0]["machine"]
    assert machine["cores"] >= 1
    assert machine["python"].count(".") == 2
    assert machine["grpcio"]
    assert machine["h2load"].startswith("h2load")


def test_profiles_are_summarised_when_the_profilers_are_installed(
    smoke: tuple[dict[str, Any], str],
) -> None:
    profile = smoke[0]["profile"]
    if profile["execute"] is None:
        # `make test` does not install bench/requirements.txt; the run says so.
        assert "not installed" in profile["note"]
        return
    for summary in (profile["execute"], profile["engine"]):
        assert summary["samples"] > 0
        assert 0 < summary["root_share"] <= 1
        assert summary["callees"]


def test_the_store_section_compares_both_stores_round_by_round(
    smoke: tuple[dict[str, Any], str],
) -> None:
    store = smoke[0]["store"]
    rounds = smoke[0]["config"]["rounds"]
    assert len(store["memory"]["round_rps"]) == len(store["sqlite"]["round_rps"]) == rounds
    assert len(store["round_ratios"]) == rounds
    assert store["start"]["method"] == "StartExecution(seed), SQLite store"
    assert store["start"]["requests"] > 0
    assert store["drain_seconds"] >= 0


def test_the_table_is_printed(smoke: tuple[dict[str, Any], str]) -> None:
    _, table = smoke
    assert "Execute(seed) ÷ Health/Check, 8 in flight (h2load)" in table
    assert "Memory per sleeping in-flight execution" in table
    assert "SQLite store ÷ --store memory, Execute(seed) throughput" in table
