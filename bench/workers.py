"""Server processes for the benchmark: `python -m flowservice`, with one worker or several.

`serving(workers=N, pin=...)` runs the server as an operator would, with its
own flags:

- one worker, not pinned: `python -m flowservice` as it runs by default;
- one worker, pinned: `--cpu C`;
- N workers: `--workers N` (pinned, one per core, by default) or
  `--workers N --no-pin-workers`. The parent process only supervises; the
  workers are its children and each binds the same port with SO_REUSEPORT
  (grpc's channel arg `grpc.so_reuseport`, which the server turns on for
  `--workers` only), so the kernel spreads incoming *connections* (not calls)
  over them by a hash of the connection's addresses. `--workers` needs a
  fixed port, so a free one is picked first.

The group measures its workers (CPU time, RSS) through /proc, and stops the
server with SIGTERM (the parent forwards it) when the block exits.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.flows import REPO_ROOT

__all__ = ["ServerGroup", "ServerStartError", "process_cpu_seconds", "process_rss_bytes", "serving"]

STARTUP_TIMEOUT = 30.0
"""Seconds the server gets until every worker has logged the address it listens on."""
STOP_TIMEOUT = 15.0
"""Seconds the server gets to exit after SIGTERM before it is killed."""

_LISTENING = re.compile(r"Flow Manager listening on [^\s:]+:(\d+)")
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Variables that would change the server under test, or make it export telemetry.
_SCRUBBED_ENV_PREFIXES = ("FLOWMANAGER_", "OTEL_")


class ServerStartError(RuntimeError):
    """A server exited or stayed silent instead of listening."""


@dataclass(frozen=True, slots=True)
class ServerGroup:
    """A running server: its process and the worker processes that serve calls."""

    process: subprocess.Popen[bytes]
    """The `python -m flowservice` process (with one worker, the worker itself)."""
    workers: tuple[int, ...]
    """The process ids of the workers."""
    port: int
    """The 127.0.0.1 port they all listen on."""
    log_path: Path
    """The server's stderr (its log; workers inherit it)."""

    @property
    def address(self) -> str:
        """host:port for clients."""
        return f"127.0.0.1:{self.port}"

    def cpu_seconds(self) -> tuple[float, ...]:
        """CPU time (user + system, all threads) each worker has used so far."""
        return tuple(process_cpu_seconds(pid) for pid in self.workers)

    def rss_bytes(self) -> int:
        """Resident memory of all workers together."""
        return sum(process_rss_bytes(pid) for pid in self.workers)

    def check_alive(self) -> None:
        """Raises `ServerStartError` when the server or a worker has exited."""
        if self.process.poll() is not None or not all(_alive(pid) for pid in self.workers):
            raise ServerStartError("a server process exited:\n" + _tail(self.log_path))


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


@contextmanager
def serving(
    *,
    workers: int = 1,
    pin: bool = False,
    server_args: Sequence[str] = (),
    log_dir: Path,
    name: str = "server",
) -> Iterator[ServerGroup]:
    """Runs the server on a free 127.0.0.1 port until the block exits.

    `server_args` are extra `python -m flowservice` flags. The server is
    stopped (SIGTERM, then SIGKILL) when the block exits, even on error.
    """
    flags = list(server_args)
    if workers == 1:
        flags += ["--address", "127.0.0.1:0"]
        if pin:
            flags += ["--cpu", str(min(os.sched_getaffinity(0)))]
    else:
        flags += ["--address", f"127.0.0.1:{_free_port()}", "--workers", str(workers)]
        if not pin:
            flags.append("--no-pin-workers")
    log_path = log_dir / f"{name}.log"
    # The log level stays the default (INFO), as deployed.
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(_SCRUBBED_ENV_PREFIXES)
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "flowservice", *flags],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        port = _wait_listening(process, log_path, workers)
        pids = (process.pid,) if workers == 1 else _children(process.pid)
        if len(pids) != workers:
            raise ServerStartError(f"{len(pids)} worker processes for --workers {workers}")
        yield ServerGroup(process, pids, port, log_path)
    finally:
        _stop(process, _children(process.pid) if workers > 1 else ())


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_listening(process: subprocess.Popen[bytes], log_path: Path, workers: int) -> int:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        found = _LISTENING.findall(log_path.read_text(errors="replace"))
        ports = set(found)
        if len(found) >= workers:
            if len(ports) != 1:
                raise ServerStartError(f"workers listen on different ports: {sorted(ports)}")
            return int(ports.pop())
        if process.poll() is not None:
            raise ServerStartError(
                f"server exited with {process.returncode} before listening:\n" + _tail(log_path)
            )
        time.sleep(0.05)
    raise ServerStartError(
        f"{workers} worker(s) did not all log their address within {STARTUP_TIMEOUT} s:\n"
        + _tail(log_path)
    )


def _children(pid: int) -> tuple[int, ...]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # the process exited meanwhile
        if int(text[text.rindex(")") + 2 :].split()[1]) == pid:
            children.append(int(stat.parent.name))
    return tuple(sorted(children))


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rindex(")") + 2] != "Z"


def _stop(process: subprocess.Popen[bytes], workers: Sequence[int]) -> None:
    """SIGTERM to the server (its parent forwards it to the workers), SIGKILL when late."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
    process.wait(timeout=STOP_TIMEOUT)
    deadline = time.monotonic() + STOP_TIMEOUT
    for pid in workers:
        while _alive(pid) and _is_server(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid) and _is_server(pid):
            os.kill(pid, signal.SIGKILL)


def _is_server(pid: int) -> bool:
    try:
        return b"flowservice" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _tail(log_path: Path, lines: int = 30) -> str:
    return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])
