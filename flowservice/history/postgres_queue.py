"""The worker queues that replicas share, in PostgreSQL: a `SharedQueue` (see `shared_dispatch`).

Each offered attempt is a row of `worker_tasks` (the history's migrations
create it): its assignment id, queue, the encoded assignment, its state and
deadline, and once answered its result. States:

    offered --take--> taken --answer--> answered --collect--> (deleted)
       |                |
       +-- withdraw ----+--> cancelled / expired (kept until past its deadline)

A row withdrawn while still offered is deleted: nobody holds it. A row
taken by a replica that died is answered `WorkerLost` (`fail_lost`): the
taker's listening connection, whose backend pid the row keeps, is gone from
`pg_stat_activity` (PostgreSQL ends a dead client's session once the
connection breaks or its keepalives fail). Takers
lock rows with `FOR UPDATE SKIP LOCKED`, so replicas taking at once never
wait for each other nor take one row twice; every other change is a
conditional UPDATE on the state, so a result is applied once and never
after a withdrawal. Each change NOTIFYs channel `flowmanager_work` at its
commit ("o QUEUE", "a ID", "w0 ID" or "w1 ID"), and each replica's one
listening connection turns those into `Change`s.

Unlike `PostgresStore`, it runs on the server's event loop: only the
server's dispatcher uses it, and none of its calls is on an execution's
hot path (a worker free in the same replica takes the attempt at once).
Rows past their deadline by `_KEEP` are deleted now and then by `put`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Collection
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from flowservice.dispatch import WORKER_LOST, SharedTask, WorkResult
from flowservice.shared_dispatch import ANSWERED, OFFERED, RESYNC, WITHDRAWN, Change

__all__ = ["WORKER_TASKS_MIGRATION", "PostgresWorkQueue"]

WORKER_TASKS_MIGRATION = """
    CREATE TABLE worker_tasks (
        task_id text PRIMARY KEY,
        queue text NOT NULL,
        payload bytea NOT NULL,
        state text NOT NULL,
        owner text NOT NULL,
        taker text,
        taker_pid integer,
        deadline timestamptz,
        offered_at timestamptz NOT NULL DEFAULT now(),
        output jsonb,
        error text,
        error_type text
    );
    CREATE INDEX worker_tasks_offered ON worker_tasks (queue, offered_at)
        WHERE state = 'offered';
    CREATE INDEX worker_tasks_by_deadline ON worker_tasks (deadline);
"""
"""The schema migration that creates the table (appended to the history's migrations)."""

_CHANNEL = "flowmanager_work"
_KEEP = "interval '1 minute'"  # rows this far past their deadline are deleted
_PURGE_EVERY = 60.0  # seconds between purges of one replica
_RELISTEN = 1.0  # seconds between attempts to LISTEN again after the connection broke
_ENDED = {False: "cancelled", True: "expired"}


class PostgresWorkQueue:
    """The `worker_tasks` table of the database at `url`, for the replica `owner`."""

    def __init__(self, url: str, *, owner: str, pool_size: int = 4, timeout: float = 5.0) -> None:
        self._url = url
        self._owner = owner
        self._options: dict[str, Any] = {"autocommit": True}
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
            url,
            kwargs=self._options,
            min_size=1,
            max_size=pool_size,
            timeout=timeout,
            check=AsyncConnectionPool.check_connection,
            open=False,
            name="flowmanager-work",
        )
        self._purged_at = 0.0
        self._listener_pid: int | None = None  # the backend of `changes`' connection
        self._closed = asyncio.Event()

    async def open(self) -> None:
        """Opens the pool (the schema is the history store's: it migrated already)."""
        await self._pool.open()

    async def close(self) -> None:
        self._closed.set()
        await self._pool.close()

    async def put(self, task: SharedTask, deadline: datetime | None) -> None:
        await self._purge_now_and_then()
        await self._execute(
            "WITH offered AS (INSERT INTO worker_tasks"
            " (task_id, queue, payload, state, owner, deadline)"
            " VALUES (%s, %s, %s, 'offered', %s, %s))"
            " SELECT pg_notify(%s, %s)",
            (task.id, task.queue, task.payload, self._owner, deadline, _CHANNEL, "o " + task.queue),
        )

    async def take(self, queues: dict[str, int]) -> list[SharedTask]:
        names, limits = list(queues), list(queues.values())
        rows = await self._execute(
            "WITH wanted AS (SELECT t.task_id FROM unnest(%s::text[], %s::integer[])"
            " AS q (queue, n), LATERAL (SELECT task_id FROM worker_tasks"
            "  WHERE queue = q.queue AND state = 'offered'"
            "  AND (deadline IS NULL OR deadline > now())"
            "  ORDER BY offered_at LIMIT q.n FOR UPDATE SKIP LOCKED) AS t)"
            " UPDATE worker_tasks AS w SET state = 'taken', taker = %s, taker_pid = %s"
            " FROM wanted WHERE w.task_id = wanted.task_id"
            " RETURNING w.task_id, w.queue, w.payload",
            (names, limits, self._owner, self._listener_pid),
        )
        return [SharedTask(task_id, queue, bytes(payload)) for task_id, queue, payload in rows]

    async def release(self, task_ids: Collection[str]) -> None:
        await self._execute(
            "WITH released AS (UPDATE worker_tasks SET state = 'offered', taker = NULL"
            " WHERE task_id = ANY(%s) AND state = 'taken' AND taker = %s RETURNING queue)"
            " SELECT pg_notify(%s, 'o ' || queue) FROM (SELECT DISTINCT queue FROM released) q",
            (list(task_ids), self._owner, _CHANNEL),
        )

    async def answer(self, task_id: str, result: WorkResult) -> bool:
        rows = await self._execute(
            "WITH answered AS (UPDATE worker_tasks SET state = 'answered', output = %s,"
            " error = %s, error_type = %s WHERE task_id = %s"
            " AND state IN ('offered', 'taken') RETURNING task_id)"
            " SELECT pg_notify(%s, 'a ' || task_id) FROM answered",
            (Jsonb(dict(result.output)), result.error, result.error_type, task_id, _CHANNEL),
        )
        return bool(rows)

    async def collect(self, task_ids: Collection[str]) -> dict[str, WorkResult]:
        rows = await self._execute(
            "DELETE FROM worker_tasks WHERE task_id = ANY(%s) AND state = 'answered'"
            " RETURNING task_id, output, error, error_type",
            (list(task_ids),),
        )
        return {
            task_id: WorkResult(output or {}, error or "", error_type or "")
            for task_id, output, error, error_type in rows
        }

    async def withdraw(self, task_id: str, deadline_passed: bool) -> None:
        async with self._pool.connection() as db, db.transaction():
            # Offered (nobody holds it) or answered too late: nobody needs the row.
            await db.execute(
                "DELETE FROM worker_tasks WHERE task_id = %s AND state IN ('offered', 'answered')",
                (task_id,),
            )
            await db.execute(
                "WITH ended AS (UPDATE worker_tasks SET state = %s"
                " WHERE task_id = %s AND state = 'taken' RETURNING task_id)"
                " SELECT pg_notify(%s, %s || task_id) FROM ended",
                (_ENDED[deadline_passed], task_id, _CHANNEL, f"w{int(deadline_passed)} "),
            )

    async def fail_lost(self) -> None:
        """Answers `WorkerLost` for the tasks that replicas which went away had taken."""
        await self._execute(
            "WITH lost AS (UPDATE worker_tasks SET state = 'answered', output = '{}',"
            " error = 'the replica holding it went away before its worker answered',"
            " error_type = %s WHERE state = 'taken' AND taker_pid IS NOT NULL"
            " AND taker_pid NOT IN (SELECT pid FROM pg_stat_activity) RETURNING task_id)"
            " SELECT pg_notify(%s, 'a ' || task_id) FROM lost",
            (WORKER_LOST, _CHANNEL),
        )

    async def changes(self) -> AsyncIterator[Change]:
        """The changes every replica announces; `RESYNC` first, and after each reconnection."""
        while not self._closed.is_set():
            try:
                db = await psycopg.AsyncConnection.connect(self._url, **self._options)
            except (psycopg.Error, OSError):
                await asyncio.sleep(_RELISTEN)
                continue
            try:
                async with db:
                    await db.execute(f"LISTEN {_CHANNEL}")
                    self._listener_pid = db.info.backend_pid
                    yield Change(RESYNC)  # what changed before this LISTEN was announced to nobody
                    async for notice in db.notifies():
                        yield _change(notice.payload)
            except (psycopg.Error, OSError):
                await asyncio.sleep(_RELISTEN)

    async def missed(self, task_ids: Collection[str]) -> list[Change]:
        rows = await self._execute(
            "SELECT task_id, state, taker FROM worker_tasks WHERE task_id = ANY(%s)",
            (list(task_ids),),
        )
        found = {task_id: (state, taker) for task_id, state, taker in rows}
        changes = []
        for task_id in task_ids:
            state, taker = found.get(task_id, ("", None))  # gone: withdrawn, or collected
            if state == "answered":
                changes.append(Change(ANSWERED, task_id))
            elif not (state == "taken" and taker == self._owner):
                changes.append(Change(WITHDRAWN, task_id, state == "expired"))
        return changes

    async def _purge_now_and_then(self) -> None:
        now = time.monotonic()
        if now - self._purged_at < _PURGE_EVERY:
            return
        self._purged_at = now
        await self._execute(
            f"DELETE FROM worker_tasks WHERE deadline < now() - {_KEEP}", (), fetch=False
        )

    async def _execute(
        self, sql: str, args: tuple[Any, ...], *, fetch: bool = True
    ) -> list[tuple[Any, ...]]:
        async with self._pool.connection() as db:
            cursor = await db.execute(sql, args)
            if not fetch or cursor.description is None:
                return []
            return await cursor.fetchall()


def _change(payload: str) -> Change:
    kind, _, key = payload.partition(" ")
    if kind == "o":
        return Change(OFFERED, key)
    if kind == "a":
        return Change(ANSWERED, key)
    return Change(WITHDRAWN, key, deadline_passed=kind == "w1")
