"""Replicas on one PostgreSQL survive kill -9: the others take over, every execution ends once.

Three real server processes share a database. Executions of three slow
tasks start on all of them; one replica is killed with SIGKILL again and
again, and restarted each time. Every execution must end COMPLETED with
exactly one end in its history, and no task that had finished may run
again (the interrupted one runs again: task runs are at least once). How
long each takeover took is printed (`pytest -s`), not asserted: the
machine is shared.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest

from flowmanager.v1 import flow_service_pb2 as flow_pb
from tests.history.replicas import all_finished, events, start_on, takeover_seconds
from tests.server_process import serving

REPLICAS = 3
EXECUTIONS_PER_REPLICA = 4
KILLS = 3
LEASE_SECONDS = 1.5
TASK_MS = 1200
FINISH_WITHIN = 120.0  # seconds: a bound that only a lost execution exceeds


def _problems(execution_id: str, events: Sequence[flow_pb.ExecuteStreamResponse]) -> list[str]:
    """What is wrong with one execution's history: gaps, two ends, a finished task run again."""
    problems = []
    if [e.sequence for e in events] != list(range(1, len(events) + 1)):
        problems.append(f"{execution_id}: sequences {[e.sequence for e in events]}")
    ends = [e for e in events if e.HasField("execution_finished")]
    if len(ends) != 1 or ends[0] is not events[-1]:
        problems.append(f"{execution_id}: {len(ends)} ends")
    finished: set[str] = set()
    for event in events:
        if event.HasField("task_started") and event.task_started.task in finished:
            problems.append(f"{execution_id}: {event.task_started.task} ran again")
        if event.HasField("task_finished"):
            finished.add(event.task_finished.result.task)
    return problems


@pytest.mark.timeout(300)
async def test_replicas_killed_again_and_again_lose_no_execution_and_run_none_twice(
    postgres_url: str, tmp_path: Path
) -> None:
    flags = ["--store", postgres_url, "--lease-seconds", str(LEASE_SECONDS)]
    with contextlib.ExitStack() as survivors:
        others = [
            survivors.enter_context(serving(tmp_path / f"replica{n}.log", flags))
            for n in range(1, REPLICAS)
        ]
        ids: list[str] = []
        for server in others:
            ids += await start_on(server, EXECUTIONS_PER_REPLICA, TASK_MS)
        killed_at: dict[str, float] = {}  # the victims' executions -> when their replica died
        for kill in range(KILLS):
            with serving(tmp_path / f"victim{kill}.log", flags) as victim:
                started = await start_on(victim, EXECUTIONS_PER_REPLICA, TASK_MS)
                await asyncio.sleep(TASK_MS / 1000)  # they are in their first task
                victim.process.kill()  # SIGKILL: no drain, no lease given back
                killed_at.update(dict.fromkeys(started, time.time()))
            ids += started
        ended = await all_finished(others[0], ids, FINISH_WITHIN)
        histories = {i: await events(others[0], i) for i in ids}

    statuses = Counter(flow_pb.ExecutionStatus.Name(e.status) for e in ended.values())
    assert statuses == {"EXECUTION_STATUS_COMPLETED": len(ids)}
    assert [p for i, events in histories.items() for p in _problems(i, events)] == []
    takeovers = sorted(takeover_seconds(histories[i], t) for i, t in killed_at.items())
    print(
        f"\n{len(ids)} executions, {KILLS} kills, --lease-seconds {LEASE_SECONDS}: takeover"
        f" after kill -9: median {takeovers[len(takeovers) // 2]:.2f} s,"
        f" worst {takeovers[-1]:.2f} s"
    )
