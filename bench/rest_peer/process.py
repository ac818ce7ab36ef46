"""Starting and stopping the REST peer for a benchmark run, and checking its reply."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.flows import REPO_ROOT, SEED_FLOW_PATH
from tests.server_process import RunningServer

__all__ = ["EXECUTE_PATH", "installed", "probe", "serving_rest_peer"]

EXECUTE_PATH = "/flow/execute"
_START_TIMEOUT = 30.0


def installed() -> bool:
    """Whether the peer's dependencies (bench/requirements.txt) are installed."""
    return all(importlib.util.find_spec(name) for name in ("fastapi", "httptools"))


@contextmanager
def serving_rest_peer(log_path: Path) -> Iterator[RunningServer]:
    """Runs `python -m bench.rest_peer` until the block exits; ready when it is yielded."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.rest_peer"],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=log,
        )
        try:
            assert process.stdout is not None
            port = int(process.stdout.readline().decode().split()[-1])
            server = RunningServer(process, port, log_path, (process.pid,))
            _wait_until_healthy(server)
            yield server
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_until_healthy(server: RunningServer) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    while True:
        server.check_alive()
        try:
            with urllib.request.urlopen(f"http://{server.address}/health", timeout=1) as reply:
                if json.load(reply) == {"status": "ok"}:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.05)


def probe(server: RunningServer) -> None:
    """Executes the seed flow once; raises unless it completed with its three tasks."""
    request = urllib.request.Request(
        f"http://{server.address}{EXECUTE_PATH}",
        data=SEED_FLOW_PATH.read_bytes(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        body = json.load(reply)
    if body.get("status") != "completed" or len(body.get("executed_tasks", ())) != 3:
        raise RuntimeError(f"the REST peer answered the seed flow with {body}")
