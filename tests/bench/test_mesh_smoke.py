"""`python -m bench.mesh` on a tiny load: every figure is produced, so the harness cannot rot.

The numbers are not judged (a few dozen calls on a shared machine say
nothing); `make bench-mesh` gives the real ones, in docs/performance.md.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
TRIPS = ("--round-trips", "30")
FIGURES = {
    "direct_calls_per_second",
    "grpc_task_flows_per_second",
    "ratio",
    "mock_task_flows_per_second",
    "worker_round_trip_p50_us",
    "worker_round_trip_p99_us",
    "worker_call_p50_us",
    "mock_call_p50_us",
    "worker_call_minus_mock_p50_us",
}


def test_bench_mesh_produces_every_figure() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "bench.mesh", *("--requests", "60", "--in-flight", "4"), *TRIPS],
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-5000:]
    figures = json.loads(completed.stdout)
    assert set(figures) == FIGURES
    # The difference of two medians may be negative on a noisy machine; the rest may not.
    for key, value in figures.items():
        assert math.isfinite(value), key
        assert key == "worker_call_minus_mock_p50_us" or value > 0, key
    assert figures["worker_round_trip_p50_us"] <= figures["worker_round_trip_p99_us"]
