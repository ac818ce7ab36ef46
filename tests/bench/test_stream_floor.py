"""`python -m bench.stream_floor` measures a real bare grpc.aio server with h2load."""

from __future__ import annotations

import json
import subprocess
import sys

from bench.flows import REPO_ROOT


def test_the_stream_floor_streams_every_message_and_reports_its_cost() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "bench.stream_floor", "--messages", "300", "--streams", "2"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    figures = json.loads(completed.stdout)

    assert figures["messages"] == 600
    assert figures["messages_per_s"] > 0
    assert figures["server_cpu_us_per_message"] > 0
