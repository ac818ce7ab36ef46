"""A real PostgreSQL for the tests: a throw-away cluster on a loopback port.

`running_postgres()` makes a cluster with Debian's binaries
(/usr/lib/postgresql/N/bin, installed by `make system-packages`) in a fresh
temporary directory, starts it on a free 127.0.0.1 port, and removes it all
when the block exits. PostgreSQL refuses to run as root, which CI is: then
the cluster belongs to `nobody` and its commands run through `runuser`. It
trades durability for speed (`fsync=off`) unless asked not to: the tests
check what the store writes, not the disk; the benchmark asks for a durable one.

`PostgresServer.new_database()` gives each test a database of its own.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path

import psycopg

__all__ = ["PostgresServer", "running_postgres"]

_UNPRIVILEGED = "nobody"
_START_TIMEOUT = 60  # seconds pg_ctl waits for the server to accept connections


@dataclass
class PostgresServer:
    """A cluster whose superuser `postgres` needs no password from 127.0.0.1."""

    port: int
    directory: Path
    """The cluster's data, socket and log live here."""
    bin_dir: Path
    """Where initdb and pg_ctl are."""
    as_root: bool
    """Whether this process is root, so that the cluster's commands run as `nobody`."""
    durable: bool = False
    """Whether commits reach the disk (`fsync`), as in production."""
    _made: Iterator[int] = field(default_factory=lambda: count(1))

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """The URL of a new, empty database."""
        name = f"test_{next(self._made)}"
        with psycopg.connect(self.url(), autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def start(self) -> None:
        """Starts the server; returns once it accepts connections."""
        options = (
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1"
            " -c max_connections=200"
        )
        if not self.durable:
            options += " -c fsync=off -c full_page_writes=off"
        log = self.directory / "log"
        self._pg_ctl("-l", str(log), "-o", options, "-w", "-t", str(_START_TIMEOUT), "start")

    def stop(self, mode: str = "fast") -> None:
        """Stops the server (`fast`: disconnects every client; `immediate`: no shutdown)."""
        self._pg_ctl("-m", mode, "stop")

    def _pg_ctl(self, *args: str) -> None:
        _run(self.as_root, [self.bin_dir / "pg_ctl", "-D", str(self.directory / "data"), *args])


def binaries() -> Path:
    """The directory of initdb and pg_ctl: the newest Debian PostgreSQL, else the PATH's."""
    installed = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda path: int(path.parts[-3]) if path.parts[-3].isdigit() else 0,
    )
    if installed:
        return installed[-1].parent
    found = shutil.which("initdb")
    if found is None:
        raise RuntimeError("PostgreSQL is not installed: run `make system-packages`")
    return Path(found).parent


@contextmanager
def running_postgres(*, durable: bool = False) -> Iterator[PostgresServer]:
    """A new cluster, running until the block exits; then stopped and deleted."""
    directory = Path(tempfile.mkdtemp(prefix="flowmanager-pg-"))
    as_root = os.geteuid() == 0
    if as_root:
        user = pwd.getpwnam(_UNPRIVILEGED)
        os.chown(directory, user.pw_uid, user.pw_gid)
    server = PostgresServer(_free_port(), directory, binaries(), as_root, durable)
    try:
        initdb: list[str | Path] = [server.bin_dir / "initdb", "-D", str(directory / "data")]
        _run(as_root, [*initdb, "-U", "postgres", "-A", "trust", "-N"])
        server.start()
        try:
            yield server
        finally:
            with contextlib.suppress(RuntimeError):  # a test may have stopped it
                server.stop("immediate")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _run(as_root: bool, command: Sequence[str | Path]) -> None:
    """Runs `command`, as `nobody` when this process is root; its output only on failure."""
    prefix = ["runuser", "-u", _UNPRIVILEGED, "--"] if as_root else []
    done = subprocess.run(
        [*prefix, *map(str, command)],
        cwd="/",  # nobody may not enter the tests' directory
        capture_output=True,
        timeout=_START_TIMEOUT + 30,
        check=False,
    )
    if done.returncode != 0:
        output = (done.stdout + done.stderr).decode(errors="replace")
        raise RuntimeError(f"{command[0]} failed ({done.returncode}):\n{output}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
