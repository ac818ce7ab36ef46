"""Settings every test process shares, and the tests' PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.history.postgres_server import PostgresServer, running_postgres

# Servers the tests start as subprocesses inherit this: they keep their
# history in memory, not in the repository's .data/ that `make run` uses.
# (tests/server_process.py gives each of its servers a file of its own, and
# in-process servers are built with store="memory".)
os.environ["FLOWMANAGER_STORE"] = "memory"


# The history's and the registry's tests share one PostgreSQL cluster per run.
@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL on 127.0.0.1, started on first use, stopped after the run."""
    with running_postgres() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL of an empty database of this test's own."""
    return postgres_server.new_database()
