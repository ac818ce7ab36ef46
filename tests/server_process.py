"""The real server as a subprocess: the one harness of the end-to-end tests and the benchmark.

`serving()` runs `python -m flowservice` as an operator would, with its own
flags, on a free 127.0.0.1 port, waits until every process has logged the
address it listens on, and stops it when the block exits, even on error:

- one process: `--address 127.0.0.1:0` (`pin=True` adds `--cpu C`);
- N workers: `--workers N` on a free port picked first (`--workers` needs a
  fixed one), pinned one per core with `pin=True`, else `--no-pin-workers`.
  The parent only supervises; `RunningServer.workers` are its children.

The log goes to a file rather than a pipe, so a chatty server can never block
on a full pipe and the caller can read it at any time. Every wait is
bounded, so nothing here can hang or leak a process.
"""

from __future__ import annotations

import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = ["REPO_ROOT", "RunningServer", "ServerStartError", "serving"]

REPO_ROOT = Path(__file__).resolve().parents[1]

STARTUP_TIMEOUT = 30.0
"""Seconds the server gets until every process has logged the address it listens on."""
STOP_TIMEOUT = 15.0
"""Seconds the server gets to exit after SIGTERM (its grace period is 10 s) before a kill."""

_LISTENING = re.compile(r"Flow Manager listening on [^\s:]+:(\d+)")
# Variables from the caller's shell that would change the server under test
# (a log level, say) or make it export telemetry.
_SCRUBBED_ENV_PREFIXES = ("FLOWMANAGER_", "OTEL_")


class ServerStartError(RuntimeError):
    """A server exited or stayed silent instead of listening."""


@dataclass(frozen=True, slots=True)
class RunningServer:
    """A running server: its process, the processes that serve calls, and where."""

    process: subprocess.Popen[bytes]
    """The `python -m flowservice` process (with one worker, the worker itself)."""
    port: int
    """The 127.0.0.1 port every worker listens on."""
    log_path: Path
    """The file its stderr (the log; workers inherit it) goes to."""
    workers: tuple[int, ...]
    """The process ids of the processes that serve calls."""

    @property
    def address(self) -> str:
        """host:port for clients."""
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        """Everything the server has logged so far."""
        return self.log_path.read_text(errors="replace")

    def check_alive(self) -> None:
        """Raises `ServerStartError` when the server or a worker has exited."""
        if self.process.poll() is not None or not all(_alive(pid) for pid in self.workers):
            raise ServerStartError("a server process exited:\n" + _tail(self.log_path))


@contextmanager
def serving(
    log_path: Path,
    flags: Sequence[str] = (),
    variables: Mapping[str, str] | None = None,
    *,
    workers: int = 1,
    pin: bool = False,
    graceful_stop: bool = False,
    address_space: int | None = None,
) -> Iterator[RunningServer]:
    """Runs the server with `flags` (and `variables` in its environment) until the block exits.

    At the end the server is killed, or with `graceful_stop` sent SIGTERM and
    given `STOP_TIMEOUT` to drain (the benchmark stops it as an operator would).
    `address_space` caps the server's address space (`RLIMIT_AS`, in bytes),
    so a request that makes it allocate without bound fails inside it (a
    `MemoryError`, or the process dies) instead of exhausting the machine.
    """
    command = [sys.executable, "-m", "flowservice", *flags]
    if not any(flag.startswith("--store") for flag in flags):
        # Its own history beside its log, not the repository's .data/ that
        # `make run` uses: tests neither see nor leave each other's executions.
        command += ["--store", str(log_path.with_name(log_path.stem + "-history.db"))]
    if workers == 1:
        command += ["--address", "127.0.0.1:0"]
        if pin:
            command += ["--cpu", str(min(os.sched_getaffinity(0)))]
    else:
        command += ["--address", f"127.0.0.1:{_free_port()}", "--workers", str(workers)]
        if not pin:
            command.append("--no-pin-workers")
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_ENV_PREFIXES)}
    env.update(variables or {})
    if address_space is not None:
        env["MALLOC_ARENA_MAX"] = "2"  # glibc reserves 64 MiB of address space per thread arena
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
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
        if address_space is not None:
            # Set once it listens, before any request, with prlimit rather than
            # in the child before exec: a preexec_fn forks a process that runs
            # grpc threads, which grpc warns about and which crashed servers.
            # A limit below what is mapped already only stops it mapping more.
            for pid in pids:
                resource.prlimit(pid, resource.RLIMIT_AS, (address_space, address_space))
        yield RunningServer(process, port, log_path, pids)
    finally:
        _stop(process, _children(process.pid) if workers > 1 else (), graceful_stop)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_listening(process: subprocess.Popen[bytes], log_path: Path, workers: int) -> int:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        found = _LISTENING.findall(log_path.read_text(errors="replace"))
        if len(found) >= workers:
            if len(set(found)) != 1:
                raise ServerStartError(f"workers listen on different ports: {sorted(set(found))}")
            return int(found[0])
        if process.poll() is not None:
            raise ServerStartError(
                f"server exited with {process.returncode} before listening:\n" + _tail(log_path)
            )
        time.sleep(0.05)
    raise ServerStartError(
        f"{workers} process(es) did not all log their address within {STARTUP_TIMEOUT} s:\n"
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


def _stop(process: subprocess.Popen[bytes], workers: Sequence[int], graceful: bool) -> None:
    """SIGTERM (the parent forwards it to the workers) or SIGKILL; workers left are killed."""
    if process.poll() is None:
        if graceful:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
        else:
            process.kill()
    process.wait(timeout=STOP_TIMEOUT)
    deadline = time.monotonic() + (STOP_TIMEOUT if graceful else 0)
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
