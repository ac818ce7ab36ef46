"""Every registry follows one contract: versions from 1, identical bodies not stored twice,
pages by id and newest-first versions; the SQLite and PostgreSQL ones keep them across
restarts and number them right when several connections create at once."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from flowservice.errors import FlowNotFoundError
from flowservice.history import SCHEMA_VERSION, SqliteStore
from flowservice.registry import (
    FlowRegistry,
    MemoryRegistry,
    SqliteRegistry,
    body_digest,
    find_version,
    open_registry,
)
from flowservice.registry.postgres import PostgresRegistry

NOW = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)


def _opener(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Callable[[], FlowRegistry]:
    """Opens a registry of `kind` ("sqlite", "postgres") on one file or database, each call."""
    if kind == "postgres":
        url = request.getfixturevalue("postgres_url")  # PostgreSQL starts only when asked for
        return lambda: PostgresRegistry(url)
    return lambda: SqliteRegistry(tmp_path / "f.db")


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def registry(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[FlowRegistry]:
    kind = request.param
    opened = MemoryRegistry() if kind == "memory" else _opener(kind, request, tmp_path)()
    yield opened
    opened.close()


async def test_versions_count_from_one_and_an_identical_body_is_not_stored_again(
    registry: FlowRegistry,
) -> None:
    first, created = await registry.create("orders", "Orders", b"one", NOW)
    assert (first.version, created, first.digest) == (1, True, body_digest(b"one"))
    same, created = await registry.create("orders", "Orders", b"one", NOW)
    assert (same, created) == (first, False)
    second, created = await registry.create("orders", "Orders v2", b"two", NOW)
    assert (second.version, created) == (2, True)
    # Only the latest counts: going back to an earlier body is a new version.
    third, created = await registry.create("orders", "Orders", b"one", NOW)
    assert (third.version, created) == (3, True)
    other, _ = await registry.create("billing", "Billing", b"one", NOW)
    assert other.version == 1


async def test_get_returns_a_version_or_the_latest_with_its_body(registry: FlowRegistry) -> None:
    await registry.create("orders", "Orders", b"one", NOW)
    await registry.create("orders", "Orders", b"two", NOW)
    latest = await registry.get("orders")
    first = await registry.get("orders", 1)
    assert latest is not None and (latest.version, latest.body) == (2, b"two")
    assert first is not None and (first.body, first.created_at) == (b"one", NOW)
    assert await registry.get("orders", 3) is None
    assert await registry.get("nobody") is None


async def test_find_version_tells_an_unknown_flow_from_an_unknown_version(
    registry: FlowRegistry,
) -> None:
    await registry.create("orders", "Orders", b"one", NOW)
    with pytest.raises(FlowNotFoundError) as unknown_flow:
        await find_version(registry, "nobody")
    with pytest.raises(FlowNotFoundError) as unknown_version:
        await find_version(registry, "orders", 7)
    assert not unknown_flow.value.flow_exists
    assert unknown_version.value.flow_exists
    assert (await find_version(registry, "orders", 1)).body == b"one"


async def test_lists_page_flows_by_id_and_versions_newest_first_without_bodies(
    registry: FlowRegistry,
) -> None:
    for flow_id in ("c", "a", "b"):
        await registry.create(flow_id, flow_id.upper(), b"1", NOW)
    await registry.create("b", "B", b"2", NOW)
    page = await registry.list_flows(2)
    assert [(v.flow_id, v.version, v.body) for v in page] == [("a", 1, b""), ("b", 2, b"")]
    rest = await registry.list_flows(2, after="b")
    assert [v.flow_id for v in rest] == ["c"]
    for body in (b"3", b"4"):
        await registry.create("b", "B", body, NOW)
    versions = await registry.list_versions("b", 3)
    assert [v.version for v in versions] == [4, 3, 2]
    assert all(v.body == b"" and v.digest for v in versions)
    assert [v.version for v in await registry.list_versions("b", 3, before=2)] == [1]
    assert await registry.list_versions("nobody", 3) == []


async def test_the_sqlite_registry_keeps_flows_across_restarts_beside_the_history(
    tmp_path: Path,
) -> None:
    path = tmp_path / "shared.db"
    history = SqliteStore(path)  # the history's store opens the same file
    first = open_registry(str(path))
    await first.create("orders", "Orders", b"one", NOW)
    first.close()
    history.close()
    again = open_registry(str(path))
    found = await again.get("orders")
    again.close()
    assert found is not None and found.body == b"one"
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version FROM schema_version").fetchone()[0] == SCHEMA_VERSION


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_two_connections_creating_at_once_never_number_two_bodies_alike(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    open_one = _opener(kind, request, tmp_path)
    registries = [open_one(), open_one()]
    try:
        created = await asyncio.gather(
            *(
                registries[i % 2].create("orders", "Orders", f"body {i}".encode(), NOW)
                for i in range(20)
            )
        )
        # Clients repeating one CreateFlow on both at once: the body is stored once.
        repeated = await asyncio.gather(
            *(registries[i % 2].create("billing", "Billing", b"same", NOW) for i in range(10))
        )
    finally:
        for opened in registries:
            opened.close()
    numbers = sorted(version.version for version, _ in created)
    assert numbers == list(range(1, 21))
    assert all(was_created for _, was_created in created)
    assert sum(was_created for _, was_created in repeated) == 1
    assert {version.version for version, _ in repeated} == {1}
