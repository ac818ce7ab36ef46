"""The servers under test, and what they cost: CPU time and memory per process.

The benchmark starts its servers with the end-to-end tests' harness,
`tests.server_process.serving`, as an operator would: one process (`--cpu C`
when pinned) or `--workers N` on one port (pinned one per core, or
`--no-pin-workers`), stopped with SIGTERM at the end. With `--workers` each
worker binds the same port with SO_REUSEPORT, so the kernel spreads incoming
*connections* (not calls) over them by a hash of the connection's addresses.
This module reads what the workers use from /proc.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.server_process import RunningServer, serving

__all__ = [
    "RunningServer",
    "cpu_seconds",
    "process_cpu_seconds",
    "process_rss_bytes",
    "rss_bytes",
    "serving",
]

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(server: RunningServer) -> tuple[float, ...]:
    """CPU time (user + system, all threads) each worker has used so far."""
    return tuple(process_cpu_seconds(pid) for pid in server.workers)


def rss_bytes(server: RunningServer) -> int:
    """Resident memory of all workers together."""
    return sum(process_rss_bytes(pid) for pid in server.workers)


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid`, all its threads (from /proc)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    # Fields 14 and 15 of proc(5) (utime, stime); the slice starts at field 3.
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def process_rss_bytes(pid: int) -> int:
    """Resident set size of process `pid` (VmRSS in /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")
