"""The deadlines of many executions on one loop: one heap, one loop timer, each fires on time."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from flowservice.engine import Engine
from flowservice.engine._deadline import _DEAD_KEPT, Deadlines, DeadlineTimer
from flowservice.models import ExecutionStatus, Flow, Task, TimeLimit
from flowservice.tasks import builtin_registry


def sleeping(timeout_ms: int) -> Flow:
    """A flow whose one task sleeps far past the flow's `timeout_ms`."""
    return Flow(
        start_task="nap",
        tasks=(Task("nap", params={"sleep_ms": 10_000}),),
        timeout=timedelta(milliseconds=timeout_ms),
    )


def limit(seconds: float) -> TimeLimit:
    return TimeLimit("deadline", seconds)


async def wait_until_passed(timer: DeadlineTimer) -> None:
    async with asyncio.timeout(5):  # a guard against hangs, not a timing check
        while not timer.passed:
            await asyncio.sleep(0.005)


async def test_executions_with_different_deadlines_each_time_out_by_their_own() -> None:
    engine = Engine(builtin_registry())
    # The latest deadline first: each later one comes earlier and re-arms the loop timer.
    timeouts = [300, 40, 20, 10_000]
    running = [asyncio.create_task(engine.execute(sleeping(ms))) for ms in timeouts]
    async with asyncio.timeout(5):  # a guard against hangs, not a timing check
        await asyncio.wait(running[:3])
    for task in running[:3]:
        summary = task.result()
        assert summary.status is ExecutionStatus.TIMED_OUT
        assert summary.task_results[0].error_type == "DeadlineExceeded"
    assert not running[3].done()  # its deadline is still far
    running[3].cancel()
    await asyncio.gather(running[3], return_exceptions=True)


async def test_a_cancelled_deadline_never_fires_and_the_others_still_do() -> None:
    deadlines = Deadlines(asyncio.get_running_loop())
    early = DeadlineTimer(limit(0.01), deadlines)
    later = DeadlineTimer(limit(0.03), deadlines)
    early.cancel()
    early.cancel()  # a second cancel changes nothing

    await wait_until_passed(later)

    assert not early.passed


async def test_a_deadline_added_after_the_heap_went_idle_still_fires() -> None:
    deadlines = Deadlines(asyncio.get_running_loop())
    DeadlineTimer(limit(0.01), deadlines).cancel()
    await asyncio.sleep(0.03)  # the loop timer fired, found nothing, and was not re-armed

    timer = DeadlineTimer(limit(0.01), deadlines)

    await wait_until_passed(timer)


async def test_many_cancelled_deadlines_do_not_pile_up_in_the_heap() -> None:
    deadlines = Deadlines(asyncio.get_running_loop())
    keeper = DeadlineTimer(limit(60), deadlines)
    for _ in range(1_000):
        DeadlineTimer(limit(60), deadlines).cancel()

    assert len(deadlines._heap) <= 2 + _DEAD_KEPT
    keeper.cancel()


async def test_a_deadline_already_passed_is_not_queued() -> None:
    deadlines = Deadlines(asyncio.get_running_loop())

    timer = DeadlineTimer(limit(0.0), deadlines)

    assert timer.passed and not deadlines._heap
    timer.cancel()
