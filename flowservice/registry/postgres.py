"""The registry in the history's PostgreSQL database (`--store postgresql://...`).

Every replica that names the database shares its flows. The tables come
with the history's schema (a migration of `flowservice.history.postgres`,
run here too when the registry opens first): `flows` holds one row per flow
id with its latest version number, `flow_versions` the versions.

`create` runs in one transaction that first locks its flow's row (an
upsert, so the first creation of an id locks it as well): replicas creating
versions of one flow at once take turns, each reads the latest version its
predecessor committed, and none numbers two bodies alike or stores one
body twice. Creations of other flows and reads never wait for it.

As the history store, the registry runs an event loop of its own in a
thread of its own, with a small pool of its own: callers on any loop use
it, and `close` stays synchronous. Calls are rare next to executions'
writes, which keep their connections to themselves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool

from flowservice.errors import StoreUnavailableError

# The history store's own ways to connect and migrate: one schema, one version.
from flowservice.history.postgres import (
    _describe,
    _LoopThread,
    _migrate,
    _new_pool,
    _options,
    _said,
)
from flowservice.registry.store import FlowVersion, body_digest

__all__ = ["PostgresRegistry"]

_T = TypeVar("_T")
_Connection = psycopg.AsyncConnection[Any]
_Pool = AsyncConnectionPool[_Connection]
_COLUMNS = "flow_id, version, name, body, digest, created_at"
_LISTED = "v.flow_id, v.version, v.name, ''::bytea, v.digest, v.created_at"  # without bodies
_NAME = "flowmanager-registry"  # the pool's, in psycopg_pool's logs
_CALL_TIMEOUT = 30.0  # seconds a call may take before the database counts as unavailable


class PostgresRegistry:
    """A `FlowRegistry` in the PostgreSQL database at `url` (its schema made if missing).

    `pool_size`: connections at most. `timeout`: seconds to connect, or to
    wait for a pooled connection, before the database counts as unavailable.
    """

    def __init__(self, url: str, *, pool_size: int = 4, timeout: float = 5.0) -> None:
        self._where = _describe(url)
        self._closed = False
        self._loop_thread = _LoopThread("registry-postgres")
        try:
            self._pool = self._loop_thread.run(self._open(url, pool_size, timeout)).result()
        except BaseException:
            self._loop_thread.stop()
            raise

    async def _open(self, url: str, pool_size: int, patience: float) -> _Pool:
        """On the registry's loop: the pool, and the schema brought up to date."""
        try:
            pool = _new_pool(url, _options(url, patience), pool_size, patience, _NAME)
        except psycopg.Error as exc:
            raise StoreUnavailableError(f"cannot use {self._where}: {_said(exc)}") from None
        try:
            await pool.open(wait=True, timeout=patience)
            async with pool.connection() as db:
                await _migrate(db)
        except (psycopg.Error, OSError) as exc:
            await pool.close()
            raise StoreUnavailableError(f"cannot open {self._where}: {_said(exc)}") from None
        except BaseException:  # a newer schema's StoreUnavailableError, a cancellation
            await pool.close()
            raise
        return pool

    async def create(
        self, flow_id: str, name: str, body: bytes, created_at: datetime
    ) -> tuple[FlowVersion, bool]:
        digest = body_digest(body)

        async def create(db: _Connection) -> tuple[FlowVersion, bool]:
            async with db.transaction():
                locked = await db.execute(
                    "INSERT INTO flows AS f VALUES (%s, 0) ON CONFLICT (flow_id)"
                    " DO UPDATE SET latest = f.latest RETURNING f.latest",  # the row, locked
                    (flow_id,),
                )
                row = await locked.fetchone()
                latest = int(row[0]) if row else 0
                found = await db.execute(
                    f"SELECT {_COLUMNS} FROM flow_versions WHERE flow_id = %s AND version = %s",
                    (flow_id, latest),
                )
                previous = await found.fetchone()
                if previous is not None and previous[4] == digest:
                    return _version(previous), False
                stored = FlowVersion(flow_id, latest + 1, name, body, digest, created_at)
                await db.execute(
                    f"INSERT INTO flow_versions ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s)",
                    (flow_id, stored.version, _text(name), body, digest, created_at),
                )
                await db.execute(
                    "UPDATE flows SET latest = %s WHERE flow_id = %s", (stored.version, flow_id)
                )
                return stored, True

        return await self._run(create)

    async def get(self, flow_id: str, version: int = 0) -> FlowVersion | None:
        if "\0" in flow_id:  # no id holds one (PostgreSQL's text cannot)
            return None
        if version:
            sql = f"SELECT {_COLUMNS} FROM flow_versions WHERE flow_id = %s AND version = %s"
            rows = await self._read(sql, (flow_id, version))
        else:
            sql = (
                f"SELECT {_COLUMNS} FROM flow_versions WHERE flow_id = %s"
                " ORDER BY version DESC LIMIT 1"
            )
            rows = await self._read(sql, (flow_id,))
        return _version(rows[0]) if rows else None

    async def list_flows(self, limit: int, after: str = "") -> list[FlowVersion]:
        rows = await self._read(
            f"SELECT {_LISTED} FROM flows AS f JOIN flow_versions AS v"
            " ON v.flow_id = f.flow_id AND v.version = f.latest"
            " WHERE f.flow_id > %s ORDER BY f.flow_id LIMIT %s",
            # In byte order, the ids after "b\0..." are exactly those after "b".
            (after.split("\0", 1)[0], limit),
        )
        return [_version(row) for row in rows]

    async def list_versions(self, flow_id: str, limit: int, before: int = 0) -> list[FlowVersion]:
        if "\0" in flow_id:
            return []
        rows = await self._read(
            f"SELECT {_LISTED} FROM flow_versions AS v WHERE flow_id = %(id)s"
            " AND (%(before)s <= 0 OR version < %(before)s) ORDER BY version DESC LIMIT %(limit)s",
            {"id": flow_id, "before": before, "limit": limit},
        )
        return [_version(row) for row in rows]

    async def _read(self, sql: str, args: Sequence[Any] | dict[str, Any]) -> list[Any]:
        async def read(db: _Connection) -> list[Any]:
            return await (await db.execute(sql, args)).fetchall()

        return await self._run(read)

    async def _run(self, work: Callable[[_Connection], Awaitable[_T]]) -> _T:
        """`work` with a pooled connection, on the registry's loop; StoreUnavailableError if not."""

        async def run() -> _T:
            async with asyncio.timeout(_CALL_TIMEOUT), self._pool.connection() as db:
                return await work(db)

        try:
            return await asyncio.wrap_future(self._loop_thread.run(run()))
        except (psycopg.Error, OSError, TimeoutError) as exc:
            raise StoreUnavailableError(f"cannot use {self._where}: {_said(exc)}") from None

    def close(self) -> None:
        """Closes the connections and the loop."""
        if self._closed:
            return
        self._closed = True
        self._loop_thread.run(self._pool.close()).result()
        self._loop_thread.stop()


def _text(name: str) -> str:
    """`name` as a text column holds it: NUL, which PostgreSQL's text refuses, as U+FFFD.

    Only lists show the column; the body keeps the name exactly.
    """
    return name.replace("\0", "\ufffd")


def _version(row: Sequence[Any]) -> FlowVersion:
    """A `FlowVersion` from a row of `_COLUMNS`; the time in UTC whatever the session's zone."""
    return FlowVersion(row[0], row[1], row[2], bytes(row[3]), row[4], row[5].astimezone(UTC))
