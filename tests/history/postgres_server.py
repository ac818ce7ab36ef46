"""A real PostgreSQL for the tests: a throw-away cluster on a loopback port.

`running_postgres()` makes a cluster with Debian's binaries
(/usr/lib/postgresql/N/bin, installed by `make system-packages`) in a fresh
temporary directory, starts it on a free 127.0.0.1 port, and removes it all
when the block exits. PostgreSQL refuses to run as root, which CI is: then
the cluster belongs to `nobody` and its commands run through `runuser`. It
trades durability for speed (`fsync=off`): the tests check what the store
writes, not the disk.

`PostgresServer.new_database()` gives each test a database of its own.
"""

from __future__ import annotations

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
    """A running cluster whose superuser `postgres` needs no password from 127.0.0.1."""

    port: int
    directory: Path
    """The cluster's data, socket and log live here."""
    _made: Iterator[int] = field(default_factory=lambda: count(1))

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """The URL of a new, empty database."""
        name = f"test_{next(self._made)}"
        with psycopg.connect(self.url(), autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name}")
        return self.url(name)


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
def running_postgres() -> Iterator[PostgresServer]:
    """A new cluster, running until the block exits; then stopped and deleted."""
    directory = Path(tempfile.mkdtemp(prefix="flowmanager-pg-"))
    as_root = os.geteuid() == 0
    if as_root:
        user = pwd.getpwnam(_UNPRIVILEGED)
        os.chown(directory, user.pw_uid, user.pw_gid)
    bin_dir = binaries()
    data = directory / "data"
    try:
        _run(as_root, [bin_dir / "initdb", "-D", str(data), "-U", "postgres", "-A", "trust", "-N"])
        port = _free_port()
        options = (
            f"-p {port} -k {directory} -c listen_addresses=127.0.0.1 -c fsync=off"
            " -c full_page_writes=off -c max_connections=200"
        )
        start: list[str | Path] = [
            bin_dir / "pg_ctl",
            "-D",
            data,
            "-l",
            directory / "log",
            "-o",
            options,
        ]
        _run(as_root, [*start, "-w", "-t", str(_START_TIMEOUT), "start"])
        try:
            yield PostgresServer(port, directory)
        finally:
            _run(as_root, [bin_dir / "pg_ctl", "-D", data, "-m", "immediate", "stop"])
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
