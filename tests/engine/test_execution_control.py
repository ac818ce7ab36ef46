"""Timeouts, retries, deadlines, cancellation and limits, in the engine (no gRPC)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from datetime import timedelta
from typing import Any

import pytest

from flowservice.engine import Engine
from flowservice.engine._attempts import TASK_TIMEOUT
from flowservice.engine._retry import backoff_delay, should_retry
from flowservice.errors import TooManyExecutionsError
from flowservice.events import Event, ExecutionFinished, TaskFinished, TaskRetrying, TaskStarted
from flowservice.limits import Limits
from flowservice.models import Condition, ExecutionStatus, Flow, RetryPolicy, Task, TaskOutcome
from flowservice.tasks import TaskContext, TaskFailure, TaskRegistry, builtin_registry

FAST_RETRY = RetryPolicy(max_attempts=3, initial_interval=timedelta(milliseconds=1))


class FakeSleep:
    """Records the delays the engine asks for and returns at once: a controllable clock."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


async def collect(engine: Engine, flow: Flow, **kwargs: Any) -> list[Event]:
    async with asyncio.timeout(10):  # a guard against hangs, not a timing check
        return [event async for event in engine.run(flow, **kwargs)]


def one_task(task: Task, **flow_fields: Any) -> Flow:
    return Flow(start_task=task.name, tasks=(task, Task("after")), **flow_fields)


async def test_a_task_that_runs_past_its_timeout_fails_with_a_timeout_error() -> None:
    task = Task("slow", params={"sleep_ms": 10_000}, timeout=timedelta(milliseconds=20))

    summary = await Engine(builtin_registry()).execute(one_task(task))

    assert summary.status is ExecutionStatus.FAILED
    assert summary.failed_task == "slow"
    result = summary.task_results[0]
    assert result.error_type == TASK_TIMEOUT
    assert "timed out after 0.02 s" in result.error


async def test_a_sync_task_past_its_timeout_is_abandoned_and_the_flow_goes_on() -> None:
    registry = builtin_registry()

    def stuck(ctx: TaskContext) -> None:
        time.sleep(0.5)  # cannot be interrupted; the engine stops waiting for it

    registry.register("stuck", stuck)
    flow = Flow(
        start_task="stuck",
        tasks=(Task("stuck", type="stuck", timeout=timedelta(milliseconds=20)), Task("next")),
        conditions=(Condition("stuck", "failure", "next", "end"),),
    )

    summary = await Engine(registry).execute(flow)

    assert summary.executed_tasks == ("stuck", "next")
    assert summary.task_results[0].error_type == TASK_TIMEOUT
    assert summary.status is ExecutionStatus.COMPLETED


async def test_a_task_is_retried_until_it_succeeds() -> None:
    task = Task("flaky", params={"fail_attempts": 2, "error": "try again"}, retry=FAST_RETRY)
    sleep = FakeSleep()

    events = await collect(Engine(builtin_registry(), sleep=sleep), one_task(task))

    retrying = [e for e in events if isinstance(e, TaskRetrying)]
    assert [(e.task, e.attempt, e.error) for e in retrying] == [
        ("flaky", 1, "try again"),
        ("flaky", 2, "try again"),
    ]
    finished = events[-1]
    assert isinstance(finished, ExecutionFinished)
    assert finished.summary.status is ExecutionStatus.COMPLETED
    assert finished.summary.task_results[0].attempts == 3
    assert finished.summary.executed_tasks == ("flaky", "after")
    assert len(sleep.delays) == 2


async def test_retries_stop_when_attempts_are_exhausted() -> None:
    task = Task("broken", params={"fail": True, "error": "still down"}, retry=FAST_RETRY)

    summary = await Engine(builtin_registry(), sleep=FakeSleep()).execute(one_task(task))

    assert summary.status is ExecutionStatus.FAILED
    assert summary.task_results[0].attempts == 3
    assert summary.task_results[0].error == "still down"
    assert summary.executed_tasks == ("broken",)


async def test_a_non_retryable_error_fails_at_once() -> None:
    retry = RetryPolicy(max_attempts=5, non_retryable_errors=frozenset({"Permanent"}))
    task = Task("t", params={"fail": True, "error_type": "Permanent"}, retry=retry)
    sleep = FakeSleep()

    summary = await Engine(builtin_registry(), sleep=sleep).execute(one_task(task))

    assert summary.task_results[0].attempts == 1
    assert summary.task_results[0].error_type == "Permanent"
    assert sleep.delays == []


async def test_timeouts_are_retried_unless_listed_as_non_retryable() -> None:
    retry = RetryPolicy(max_attempts=2, initial_interval=timedelta(milliseconds=1))
    task = Task("t", params={"sleep_ms": 10_000}, timeout=timedelta(milliseconds=10), retry=retry)
    summary = await Engine(builtin_registry(), sleep=FakeSleep()).execute(one_task(task))
    assert summary.task_results[0].attempts == 2

    no_timeout_retry = RetryPolicy(max_attempts=2, non_retryable_errors=frozenset({TASK_TIMEOUT}))
    task = Task(
        "t", params={"sleep_ms": 10_000}, timeout=timedelta(milliseconds=10), retry=no_timeout_retry
    )
    summary = await Engine(builtin_registry(), sleep=FakeSleep()).execute(one_task(task))
    assert summary.task_results[0].attempts == 1


async def test_backoff_grows_by_the_coefficient_up_to_the_maximum() -> None:
    retry = RetryPolicy(
        max_attempts=6,
        initial_interval=timedelta(seconds=1),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(seconds=5),
    )
    task = Task("t", params={"fail": True}, retry=retry)
    sleep = FakeSleep()

    events = await collect(Engine(builtin_registry(), sleep=sleep), one_task(task))

    assert sleep.delays == [1.0, 2.0, 4.0, 5.0, 5.0]
    reported = [e.delay for e in events if isinstance(e, TaskRetrying)]
    assert reported == [timedelta(seconds=s) for s in (1, 2, 4, 5, 5)]


def test_backoff_defaults_cap_at_a_hundred_initial_intervals() -> None:
    retry = RetryPolicy(max_attempts=100, initial_interval=timedelta(seconds=1))
    rng = random.Random(0)
    assert backoff_delay(retry, 1, rng) == timedelta(seconds=1)
    assert backoff_delay(retry, 7, rng) == timedelta(seconds=64)
    assert backoff_delay(retry, 8, rng) == timedelta(seconds=100)
    assert backoff_delay(retry, 10_000, rng) == timedelta(seconds=100)


def test_jitter_draws_each_delay_between_zero_and_its_backoff() -> None:
    retry = RetryPolicy(
        max_attempts=10, initial_interval=timedelta(seconds=1), backoff_coefficient=3, jitter=True
    )
    rng = random.Random(42)
    for attempt, ceiling in ((1, 1.0), (2, 3.0), (3, 9.0)):
        samples = [backoff_delay(retry, attempt, rng).total_seconds() for _ in range(500)]
        assert all(0.0 <= s <= ceiling for s in samples)
        # spread over the whole range, not clustered at one end
        assert min(samples) < ceiling * 0.1
        assert max(samples) > ceiling * 0.9


def test_should_retry_counts_attempts_and_honours_non_retryable_types() -> None:
    retry = RetryPolicy(max_attempts=3, non_retryable_errors=frozenset({"Fatal"}))
    assert should_retry(retry, 1, "TaskFailure")
    assert should_retry(retry, 2, "TaskFailure")
    assert not should_retry(retry, 3, "TaskFailure")
    assert not should_retry(retry, 1, "Fatal")
    assert not should_retry(RetryPolicy(), 1, "TaskFailure")


class Hang:
    """A task type that runs until cancelled, and says when it started and was cancelled."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.execution_ids: list[str] = []

    async def run(self, ctx: TaskContext) -> None:
        self.execution_ids.append(ctx.execution_id)
        self.started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise

    def registry(self) -> TaskRegistry:
        registry = builtin_registry()
        registry.register("hang", self)
        return registry


async def test_the_flow_timeout_cancels_the_running_task_and_starts_no_other() -> None:
    hang = Hang()
    flow = Flow(
        start_task="a",
        tasks=(Task("a", type="hang"), Task("b")),
        timeout=timedelta(milliseconds=50),
    )

    events = await collect(Engine(hang.registry()), flow)

    assert hang.cancelled.is_set()
    assert [e.task for e in events if isinstance(e, TaskStarted)] == ["a"]
    finished = events[-1]
    assert isinstance(finished, ExecutionFinished)
    summary = finished.summary
    assert summary.status is ExecutionStatus.TIMED_OUT
    assert summary.time_limit is not None and summary.time_limit.name == "flow.timeout"
    assert "the flow's timeout of 0.05 s" in summary.error
    assert summary.task_results[0].error_type == "DeadlineExceeded"
    assert summary.task_results[0].outcome is TaskOutcome.FAILURE


@pytest.mark.parametrize(
    ("flow_timeout", "time_allowed", "max_run_time", "winner"),
    [
        (timedelta(seconds=5), 0.05, 60.0, "deadline"),
        (timedelta(milliseconds=50), 5.0, 60.0, "flow.timeout"),
        (None, None, 0.05, "max_run_time"),
        (timedelta(seconds=5), 5.0, 0.05, "max_run_time"),
    ],
)
async def test_the_earliest_time_limit_wins(
    flow_timeout: timedelta | None, time_allowed: float | None, max_run_time: float, winner: str
) -> None:
    engine = Engine(builtin_registry(), limits=Limits(max_run_time=max_run_time))
    flow = one_task(Task("a", params={"sleep_ms": 10_000}), timeout=flow_timeout)

    summary = await engine.execute(flow, time_allowed=time_allowed)

    assert summary.status is ExecutionStatus.TIMED_OUT
    assert summary.time_limit is not None
    assert summary.time_limit.name == winner


async def test_the_deadline_cuts_a_retry_delay_short() -> None:
    retry = RetryPolicy(max_attempts=3, initial_interval=timedelta(seconds=30))
    task = Task("t", params={"fail": True}, retry=retry)

    events = await collect(Engine(builtin_registry()), one_task(task), time_allowed=0.05)

    finished = events[-1]
    assert isinstance(finished, ExecutionFinished)
    assert finished.summary.status is ExecutionStatus.TIMED_OUT
    assert "passed while 't' was waiting to retry" in finished.summary.error
    assert any(isinstance(e, TaskRetrying) for e in events)


async def test_closing_the_event_stream_cancels_the_running_task() -> None:
    hang = Hang()
    engine = Engine(hang.registry())
    events = engine.run(Flow(start_task="a", tasks=(Task("a", type="hang"),)))

    async def consume() -> None:
        async for _ in events:
            pass

    consumer = asyncio.ensure_future(consume())
    async with asyncio.timeout(5):
        await hang.started.wait()
    assert engine.running == 1
    consumer.cancel()
    async with asyncio.timeout(5):
        await hang.cancelled.wait()
    with pytest.raises(asyncio.CancelledError):
        await consumer
    assert engine.running == 0


async def test_cancel_ends_the_execution_cancelled_with_its_last_events() -> None:
    hang = Hang()
    engine = Engine(hang.registry())
    flow = Flow(start_task="first", tasks=(Task("first"), Task("a", type="hang"), Task("b")))
    run = asyncio.ensure_future(collect(engine, flow))
    async with asyncio.timeout(5):
        await hang.started.wait()
    execution_id = hang.execution_ids[0]
    assert not engine.cancel("another")

    assert engine.cancel(execution_id)

    events = await run
    assert hang.cancelled.is_set()
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    interrupted, finished = events[-2:]
    assert isinstance(interrupted, TaskFinished) and isinstance(finished, ExecutionFinished)
    assert (interrupted.result.task, interrupted.result.error_type) == ("a", "Cancelled")
    summary = finished.summary
    assert (summary.status, summary.error_type) == (ExecutionStatus.CANCELLED, "Cancelled")
    assert summary.executed_tasks == ("first", "a")
    assert "cancelled (CancelExecution) while task 'a' ran" in summary.error
    assert summary.output is None and summary.time_limit is None
    assert engine.running == 0 and not engine.cancel(execution_id)


async def test_cancel_cuts_a_retry_delay_short() -> None:
    retry = RetryPolicy(max_attempts=3, initial_interval=timedelta(seconds=30))
    engine = Engine(builtin_registry())
    events = engine.run(one_task(Task("t", params={"fail": True}, retry=retry)))
    seen: list[Event] = []
    async with asyncio.timeout(10):
        async for event in events:
            seen.append(event)
            if isinstance(event, TaskRetrying):
                waiting = asyncio.ensure_future(events.__anext__())
                await asyncio.sleep(0)  # the engine is in its retry delay now
                assert engine.cancel(event.execution_id)
                seen.append(await waiting)
    finished = seen[-1]
    assert isinstance(finished, ExecutionFinished)
    assert finished.summary.status is ExecutionStatus.CANCELLED
    assert "while 't' was waiting to retry" in finished.summary.error


async def test_cancel_does_nothing_while_the_consumer_holds_the_execution() -> None:
    engine = Engine(builtin_registry())
    events = engine.run(one_task(Task("a")))
    async with contextlib.aclosing(events):
        started = await events.__anext__()
        assert not engine.cancel(started.execution_id)  # between two events: the caller's turn
        rest = [event async for event in events]
    finished = rest[-1]
    assert isinstance(finished, ExecutionFinished)
    assert finished.summary.status is ExecutionStatus.COMPLETED


async def test_past_the_concurrency_limit_new_executions_are_refused_at_once() -> None:
    registry = builtin_registry()
    release = asyncio.Event()

    async def hold(ctx: TaskContext) -> None:
        await release.wait()

    registry.register("hold", hold)
    engine = Engine(registry, limits=Limits(max_concurrent_executions=2))
    held = Flow(start_task="a", tasks=(Task("a", type="hold"),))
    running = [asyncio.ensure_future(engine.execute(held)) for _ in range(2)]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert engine.running == 2

    with pytest.raises(TooManyExecutionsError) as refused:
        await engine.execute(Flow(start_task="a", tasks=(Task("a"),)))
    assert refused.value.limit == 2

    release.set()
    await asyncio.gather(*running)
    summary = await engine.execute(Flow(start_task="a", tasks=(Task("a"),)))
    assert summary.status is ExecutionStatus.COMPLETED


async def test_an_output_over_the_size_limit_fails_the_task_with_the_limit() -> None:
    engine = Engine(builtin_registry(), limits=Limits(max_output_bytes=100))
    task = Task("big", params={"output": {"blob": "x" * 200}})

    summary = await engine.execute(one_task(task))

    result = summary.task_results[0]
    assert result.outcome is TaskOutcome.FAILURE
    assert result.error_type == "OutputTooLarge"
    assert summary.error_type == "OutputTooLarge"
    assert result.output == {}


async def test_task_finished_reports_attempts_for_every_run() -> None:
    events = await collect(Engine(builtin_registry()), one_task(Task("a")))
    results = [e.result for e in events if isinstance(e, TaskFinished)]
    assert [r.attempts for r in results] == [1, 1]


async def test_a_failed_tasks_oversized_output_is_dropped_and_the_failure_says_so() -> None:
    flow = one_task(Task("big", type="big_failure"))
    registry = builtin_registry()

    async def big_failure(ctx: TaskContext) -> None:
        raise TaskFailure("boom", output={"blob": "x" * 1_000}, error_type="Permanent")

    registry.register("big_failure", big_failure)
    engine = Engine(registry, limits=Limits(max_output_bytes=100))

    summary = await engine.execute(flow)

    result = summary.task_results[0]
    assert result.output == {}
    assert result.error_type == "Permanent"
    assert result.error.startswith("boom (its output was dropped: task output is")
    assert "(max_output_bytes)" in result.error
