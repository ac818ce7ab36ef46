"""The soak program (`make soak`) in a few seconds, so it cannot rot between real runs.

It runs `python -m bench.soak` as `make soak` does, only short, and checks
that it drove every kind of call, sampled the server and reported. No figure
is judged: a few seconds on a shared machine say nothing about leaks.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.soak import call_kinds

REPO_ROOT = Path(__file__).resolve().parents[2]
SMOKE_TIMEOUT = 50.0
"""Seconds the smoke run may take (about 8 on the project's machine)."""


def test_soak_drives_every_kind_of_call_and_reports_the_server_figures(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    run = subprocess.run(
        [sys.executable, "-m", "bench.soak", "--seconds", "4", "--interval", "1", "--json", out],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=SMOKE_TIMEOUT,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(out.read_text())

    assert result["calls"] > 0
    assert set(result["statuses"]) == {kind.name for kind in call_kinds()}
    # Every status was one its kind may get (or CANCELLED, for calls the client cancelled).
    assert result["unexpected"] == {}
    assert result["cancels_requested"] > 0
    start, *_, end = result["samples"]
    for sample in (start, end):
        assert sample["rss_mib"] > 0
        assert sample["peak_rss_mib"] >= sample["rss_mib"]
        assert sample["fds"] > 0
        assert sample["threads"] > 0
        assert sample["asyncio_tasks"] > 0  # the gauge exists and counts the server's loop
    for label in ("calls/s", "RSS MiB", "open fds", "threads", "asyncio tasks", "peak RSS"):
        assert label in run.stdout
