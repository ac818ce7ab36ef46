"""The history tests' PostgreSQL: one cluster for the whole run, a new database per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.history.postgres_server import PostgresServer, running_postgres


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL on 127.0.0.1, started on first use, stopped after the run."""
    with running_postgres() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL of an empty database of this test's own."""
    return postgres_server.new_database()
