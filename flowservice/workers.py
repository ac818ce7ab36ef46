"""Several server processes on one port, one per core.

A Python process runs one event loop on one core; to use more, `--workers N`
starts N server processes that bind the same address (grpc sets SO_REUSEPORT
on Linux, so the kernel spreads new connections across them), each pinned to
its own core: unpinned processes sharing a port were measured at ~1.2x one
process on two cores, pinned ones at ~1.9x (docs/performance.md). The parent
only supervises: it forwards SIGTERM/SIGINT so every worker drains, stops
them all when one exits, and exits with the worst exit code among them.
Limits such as `--max-concurrent-executions` apply to each worker.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from types import FrameType

from flowservice.settings import Settings

__all__ = ["run_workers"]

logger = logging.getLogger(__name__)


def run_workers(settings: Settings, argv: Sequence[str]) -> int:
    """Runs `settings.workers` server processes with `argv` until they all exit."""
    port = settings.address.rpartition(":")[2]
    if port == "0":
        logger.error("--workers needs a fixed port: with port 0 each worker would pick its own")
        return 2
    cores = sorted(os.sched_getaffinity(0))
    children: list[subprocess.Popen[bytes]] = []
    for index in range(settings.workers):
        worker_argv = [*argv, "--workers", "1", "--reuse-port", "--worker-index", str(index)]
        if settings.pin_workers:
            worker_argv += ["--cpu", str(cores[index % len(cores)])]
        if settings.metrics_address:
            # Each worker has its own registry, so its own port: base port + index.
            host, _, base = settings.metrics_address.rpartition(":")
            worker_argv += ["--metrics-address", f"{host}:{int(base) + index if int(base) else 0}"]
        children.append(subprocess.Popen([sys.executable, "-m", "flowservice", *worker_argv]))
    logger.info("started %d workers on %s", len(children), settings.address)

    stopping = False

    def forward(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    # The first worker to exit ends them all: a server quietly running on
    # half its workers is worse than one that exits for its supervisor (or
    # Kubernetes) to restart.
    pid, status = os.wait()
    first_code = os.waitstatus_to_exitcode(status)
    if not stopping:
        logger.error("worker %d exited with %d: stopping the others", pid, first_code)
        forward(signal.SIGTERM, None)
    codes = [first_code] + [child.wait() for child in children if child.pid != pid]
    worst = max(codes, key=abs)
    return 128 - worst if worst < 0 else worst  # killed by signal N: 128 + N, as shells say
