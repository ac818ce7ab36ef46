"""`--workers 2`: two server processes share one port and drain together."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.e2e.conftest import REPO_ROOT

SEED = REPO_ROOT / "examples" / "seed-flow.json"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_two_workers_serve_one_port_and_stop_on_sigterm(
    tmp_path: Path, grpcurl: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    port = free_port()
    log = tmp_path / "workers.log"
    with log.open("wb") as sink:
        command = [sys.executable, "-m", "flowservice", "--address", f"127.0.0.1:{port}"]
        parent = subprocess.Popen(
            [*command, "--workers", "2", "--drain-delay", "0"],
            start_new_session=True,  # so teardown can end the workers with their parent
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
    try:
        deadline = time.monotonic() + 20
        while log.read_text().count("listening on") < 2:
            assert parent.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)

        for _ in range(6):
            result = grpcurl(
                "-d", "@", f"127.0.0.1:{port}", "flowmanager.v1.FlowService/Execute", stdin=SEED
            )
            assert "EXECUTION_STATUS_COMPLETED" in result.stdout, result.stderr

        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=20) == 0
        assert log.read_text().count("stopped") == 2
        assert " worker 0 " in log.read_text() and " worker 1 " in log.read_text()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)


def test_a_second_server_on_a_taken_port_fails_clearly(tmp_path: Path) -> None:
    port = free_port()
    command = [sys.executable, "-m", "flowservice", "--address", f"127.0.0.1:{port}"]
    with (tmp_path / "first.log").open("wb") as sink:
        first = subprocess.Popen(command, cwd=REPO_ROOT, stderr=sink, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while "listening on" not in (tmp_path / "first.log").read_text():
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)

        second = subprocess.run(
            command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=30, check=False
        )

        assert second.returncode == 1
        assert "cannot serve" in second.stderr
        assert first.poll() is None
    finally:
        first.kill()
        first.wait(timeout=10)


def test_when_one_worker_dies_the_others_stop_and_the_exit_code_says_so(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "workers.log"
    command = [sys.executable, "-m", "flowservice", "--address", f"127.0.0.1:{port}"]
    with log.open("wb") as sink:
        parent = subprocess.Popen(
            [*command, "--workers", "2", "--drain-delay", "0"],
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=sink,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 20
        while log.read_text().count("listening on") < 2:
            assert parent.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        workers = subprocess.run(
            ["pgrep", "-P", str(parent.pid)], capture_output=True, text=True, check=True
        ).stdout.split()
        assert len(workers) == 2

        os.kill(int(workers[0]), signal.SIGKILL)

        assert parent.wait(timeout=20) == 128 + signal.SIGKILL
        assert "stopping the others" in log.read_text()
        assert log.read_text().count("stopped") == 1  # the survivor drained
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
