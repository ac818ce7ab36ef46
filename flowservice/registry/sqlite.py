"""The registry in the history's SQLite file (`--store`), table `flow_versions`.

The table comes with the history's schema (`flowservice.history.sqlite`,
migration 2 -> 3). Calls are rare next to executions' events: each runs in a
worker thread on the registry's own connection, one at a time. `create`
reads the latest version and writes the next in one `BEGIN IMMEDIATE`
transaction, so two processes sharing the file never number two bodies alike.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from flowservice.errors import StoreUnavailableError
from flowservice.history.sqlite import open_file
from flowservice.registry.store import FlowVersion, body_digest

__all__ = ["SqliteRegistry"]

_T = TypeVar("_T")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LISTED = "flow_id, version, name, x'', digest, created_at"  # lists leave the body out
_LATEST = "version = (SELECT max(version) FROM flow_versions AS l WHERE l.flow_id = v.flow_id)"


class SqliteRegistry:
    """A `FlowRegistry` in the SQLite file at `path` (made, with its schema, if missing)."""

    def __init__(self, path: Path, *, busy_timeout: float = 5.0) -> None:
        self._path = path
        try:
            self._db = open_file(path, busy_timeout)
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailableError(f"cannot open {path}: {exc}") from None
        self._lock = threading.Lock()

    async def create(
        self, flow_id: str, name: str, body: bytes, created_at: datetime
    ) -> tuple[FlowVersion, bool]:
        digest = body_digest(body)

        def create(db: sqlite3.Connection) -> tuple[FlowVersion, bool]:
            db.execute("BEGIN IMMEDIATE")
            try:
                latest = db.execute(
                    "SELECT flow_id, version, name, body, digest, created_at FROM flow_versions"
                    " WHERE flow_id = ? ORDER BY version DESC LIMIT 1",
                    (flow_id,),
                ).fetchone()
                if latest is not None and latest[4] == digest:
                    db.execute("COMMIT")
                    return _version(latest), False
                stored = FlowVersion(
                    flow_id, 1 + (latest[1] if latest else 0), name, body, digest, created_at
                )
                db.execute(
                    "INSERT INTO flow_versions VALUES (?, ?, ?, ?, ?, ?)",
                    (flow_id, stored.version, name, body, digest, _micros(created_at)),
                )
                db.execute("COMMIT")
                return stored, True
            except BaseException:
                db.execute("ROLLBACK")
                raise

        return await self._run(create)

    async def get(self, flow_id: str, version: int = 0) -> FlowVersion | None:
        columns = "flow_id, version, name, body, digest, created_at"
        if version:
            sql = f"SELECT {columns} FROM flow_versions WHERE flow_id = ? AND version = ?"
            rows = await self._read(sql, (flow_id, version))
        else:
            sql = (
                f"SELECT {columns} FROM flow_versions WHERE flow_id = ?"
                " ORDER BY version DESC LIMIT 1"
            )
            rows = await self._read(sql, (flow_id,))
        return _version(rows[0]) if rows else None

    async def list_flows(self, limit: int, after: str = "") -> list[FlowVersion]:
        rows = await self._read(
            f"SELECT {_LISTED} FROM flow_versions AS v WHERE flow_id > ? AND {_LATEST}"
            " ORDER BY flow_id LIMIT ?",
            (after, limit),
        )
        return [_version(row) for row in rows]

    async def list_versions(self, flow_id: str, limit: int, before: int = 0) -> list[FlowVersion]:
        rows = await self._read(
            f"SELECT {_LISTED} FROM flow_versions WHERE flow_id = ? AND (? <= 0 OR version < ?)"
            " ORDER BY version DESC LIMIT ?",
            (flow_id, before, before, limit),
        )
        return [_version(row) for row in rows]

    async def _read(self, sql: str, args: Sequence[Any]) -> list[Any]:
        return await self._run(lambda db: db.execute(sql, args).fetchall())

    async def _run(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """`work` on the connection, in a worker thread; StoreUnavailableError on an error."""

        def locked() -> _T:
            with self._lock:
                return work(self._db)

        try:
            return await asyncio.to_thread(locked)
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"cannot use {self._path}: {exc}") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _micros(moment: datetime) -> int:
    since = moment - _EPOCH  # exact: a float timestamp may be one microsecond off
    return (since.days * 86_400 + since.seconds) * 1_000_000 + since.microseconds


def _version(row: Sequence[Any]) -> FlowVersion:
    """A `FlowVersion` from a row of (flow_id, version, name, body, digest, created_at)."""
    created_at = _EPOCH + timedelta(microseconds=row[5])
    return FlowVersion(row[0], row[1], row[2], bytes(row[3]), row[4], created_at)
