"""`python -m bench.replicas --smoke`: the replicas benchmark still produces every figure.

Its numbers are not judged: a smoke run is far too small, and the machine shared.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SMOKE_TIMEOUT = 55.0
"""Seconds the smoke run may take (about 17 on the project's machine)."""

pytestmark = pytest.mark.skipif(
    shutil.which("h2load") is None,
    reason="h2load is not installed (Debian package nghttp2-client; `make pytest` installs it)",
)


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench.replicas", "--smoke", *args],
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=SMOKE_TIMEOUT,
        check=False,
    )


def test_the_replicas_benchmark_measures_one_and_two_replicas_and_a_takeover() -> None:
    run = _bench()
    assert run.returncode == 0, run.stderr[-5000:]

    rows = re.findall(r"^\| ([12]) \| ([\d,]+) \| ([\d.]+) \|", run.stdout, re.M)
    takeover = re.search(r"median ([\d.]+) s, worst ([\d.]+) s", run.stdout)

    assert [replicas for replicas, _, _ in rows] == ["1", "2"]
    assert all(float(calls.replace(",", "")) > 0 for _, calls, _ in rows)
    assert rows[0][2] == "1.00"
    assert takeover is not None and 0 < float(takeover[1]) <= float(takeover[2])


def test_the_docs_block_is_rewritten_only_by_a_full_run(tmp_path: Path) -> None:
    run = _bench("--docs", str(tmp_path / "x.md"))
    assert run.returncode == 2  # a usage error, before anything runs
    assert not (tmp_path / "x.md").exists()
