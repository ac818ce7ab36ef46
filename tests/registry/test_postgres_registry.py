"""What only the PostgreSQL registry does: it shares the history's database and schema,
opens it first if need be, and keeps what PostgreSQL's text cannot hold out of its way.

The contract every registry follows, and creators racing on two connections, are
tests/registry/test_registries.py, run against PostgreSQL there too."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest

from flowservice.errors import StoreUnavailableError
from flowservice.history import ExecutionQuery, open_store
from flowservice.history.postgres import SCHEMA_VERSION
from flowservice.registry import open_registry
from flowservice.registry.postgres import PostgresRegistry

NOW = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize("scheme", ["postgresql://", "postgres://"])
async def test_a_database_url_opens_a_registry_that_the_history_shares_across_restarts(
    postgres_url: str, scheme: str
) -> None:
    url = scheme + postgres_url.split("://", 1)[1]
    first = open_registry(url)  # first on an empty database: it makes the whole schema
    assert isinstance(first, PostgresRegistry)
    await first.create("orders", "Orders", b"one", NOW)
    first.close()
    history = open_store(url)  # finds the schema current
    again = open_registry(url)
    try:
        found = await again.get("orders")
        assert await history.find(ExecutionQuery(limit=1)) == []
    finally:
        again.close()
        history.close()
    assert found is not None and (found.version, found.body) == (1, b"one")
    with psycopg.connect(postgres_url) as db:
        versions = db.execute("SELECT version FROM schema_version").fetchall()
    assert versions == [(SCHEMA_VERSION,)]


def test_a_database_that_cannot_be_reached_is_refused_without_its_password() -> None:
    with pytest.raises(StoreUnavailableError) as raised:
        PostgresRegistry("postgresql://flow:secret@127.0.0.1:1/flows", timeout=2)
    assert "127.0.0.1:1/flows" in raised.value.problem
    assert "secret" not in raised.value.problem


async def test_nul_characters_neither_fail_a_call_nor_change_a_body(postgres_url: str) -> None:
    registry = PostgresRegistry(postgres_url)
    try:
        stored, created = await registry.create("orders", "Or\0ders", b"\0body\0", NOW)
        got = await registry.get("orders")
        listed = await registry.list_flows(10)
        after_nul = await registry.list_flows(10, after="o\0")  # a forged page token's
        missing = await registry.get("ord\0ers")
        no_versions = await registry.list_versions("ord\0ers", 10)
    finally:
        registry.close()
    assert created and stored.name == "Or\0ders"
    assert got is not None and got.body == b"\0body\0"
    assert [v.name for v in listed] == ["Or\ufffdders"]  # lists show the column's name
    assert [v.flow_id for v in after_nul] == ["orders"]
    assert (missing, no_versions) == (None, [])
