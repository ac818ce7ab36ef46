"""Starting and stopping the REST peer for a benchmark run, and checking its reply.

With one worker the peer's process serves calls itself; with `workers` > 1
it is uvicorn's supervisor, and `RunningServer.workers` are its worker
processes (read from /proc), so the harness counts their CPU time as it
counts the Flow Manager's `--workers`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
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
_STOP_TIMEOUT = 10.0


def installed() -> bool:
    """Whether the peer's dependencies (bench/requirements.txt) are installed."""
    return all(importlib.util.find_spec(name) for name in ("fastapi", "httptools"))


@contextmanager
def serving_rest_peer(log_path: Path, workers: int = 1) -> Iterator[RunningServer]:
    """Runs `python -m bench.rest_peer --workers N` until the block exits; ready when yielded.

    Ready means the supervisor has spawned every worker and one of them
    answers `/health`; a worker still starting gets its calls once it
    accepts, which the benchmark's warm-up runs leave it time to do.
    """
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.rest_peer", "--workers", str(workers)],
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
        )
    pids: tuple[int, ...] = ()
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline().decode().split()[-1])
        pids = (process.pid,) if workers == 1 else _wait_for_workers(process, workers)
        server = RunningServer(process, port, log_path, pids)
        _wait_until_healthy(server)
        yield server
    finally:
        _stop(process, pids if workers > 1 else ())


def _wait_for_workers(process: subprocess.Popen[bytes], workers: int) -> tuple[int, ...]:
    """The pids of the supervisor's `workers` worker processes, once it has spawned them all."""
    deadline = time.monotonic() + _START_TIMEOUT
    while True:
        found = _worker_pids(process.pid)
        if len(found) == workers:
            return found
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(
                f"the REST peer has {len(found)} of {workers} workers "
                f"(exit status {process.returncode})"
            )
        time.sleep(0.05)


def _worker_pids(parent: int) -> tuple[int, ...]:
    """Children of `parent` that are multiprocessing workers (not its resource tracker)."""
    children = []
    for listing in Path(f"/proc/{parent}/task").glob("*/children"):
        try:
            children += [int(pid) for pid in listing.read_text().split()]
        except OSError:
            continue  # the thread exited meanwhile
    return tuple(sorted(pid for pid in children if _is_worker(pid)))


def _is_worker(pid: int) -> bool:
    """Whether `pid` is a process that multiprocessing spawned (uvicorn's workers are)."""
    try:
        return b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _stop(process: subprocess.Popen[bytes], workers: tuple[int, ...]) -> None:
    """SIGTERM (uvicorn's supervisor stops its workers and waits for them), else SIGKILL.

    Workers that outlive a killed supervisor are killed too, so none is left behind.
    """
    process.terminate()
    try:
        process.wait(timeout=_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if process.stdout is not None:
        process.stdout.close()
    for pid in workers:
        if _is_worker(pid):
            os.kill(pid, signal.SIGKILL)


def _wait_until_healthy(server: RunningServer) -> None:
    """Polls `/health` until it answers ok; raises if the peer exits or stays silent."""
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
