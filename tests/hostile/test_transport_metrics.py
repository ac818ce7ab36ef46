"""Callers choose flow ids; /metrics shows them only printable, bounded and few.

And a metrics port that is taken stops the server at start-up with a plain
message, as a taken gRPC port does, before it says it is listening.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from flowservice.models import Flow
from flowservice.observability import Metrics
from flowservice.observability.metrics import MAX_LABEL_LENGTH, OTHER_FLOW
from tests.e2e.conftest import REPO_ROOT

HOSTILE_IDS = ["nul\x00byte", "new\nline } evil 1", "bell\x07\x1b[31m", "x" * 10_000]


def served_text(metrics: Metrics) -> str:
    port = metrics.serve("127.0.0.1:0")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text: str = response.read().decode()
    return text


def flow_id_labels(text: str) -> set[str]:
    return {
        sample.labels["flow_id"]
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if "flow_id" in sample.labels
    }


def run_and_cancel(metrics: Metrics, flow_id: str) -> None:
    """An execution of a flow with `flow_id` that never finished (counted as cancelled)."""
    with metrics.execution(Flow(tasks=(), start_task="a", id=flow_id), f"run-{flow_id[:8]}"):
        pass


def test_flow_id_labels_are_printable_and_bounded() -> None:
    metrics = Metrics(max_flow_ids=10)
    for flow_id in HOSTILE_IDS:
        run_and_cancel(metrics, flow_id)

    text = served_text(metrics)
    assert "\x00" not in text and "\x07" not in text and "\x1b" not in text
    labels = flow_id_labels(text)
    assert len(labels) == len(HOSTILE_IDS)
    for label in labels:
        assert label.isprintable() and len(label) <= MAX_LABEL_LENGTH
    assert "nul_byte" in labels


def test_distinct_flow_ids_past_the_bound_share_one_label() -> None:
    metrics = Metrics(max_flow_ids=2)
    for index in range(50):
        run_and_cancel(metrics, f"flow-{index}\x00")

    assert flow_id_labels(served_text(metrics)) == {"flow-0_", "flow-1_", OTHER_FLOW}


def test_a_taken_metrics_port_is_a_clean_start_up_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "flowservice",
                "--address",
                "127.0.0.1:0",
                "--metrics-address",
                f"127.0.0.1:{port}",
            ],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "listening" not in result.stderr
    assert f"127.0.0.1:{port}" in result.stderr
