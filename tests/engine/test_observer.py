"""What an observer sees: every execution, every attempt around its task, every event."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from flowservice.engine import Engine
from flowservice.events import Event, TaskStarted
from flowservice.models import Flow, RetryPolicy, Task
from flowservice.observer import NullObserver
from flowservice.tasks import FakeTask, TaskContext, TaskFailure
from tests.engine.test_engine import SEED, registry_with


class Recorder:
    """Records the hooks the engine calls, in order."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.events: list[Event] = []

    @contextlib.contextmanager
    def execution(self, flow: Flow, execution_id: str) -> Iterator[None]:
        self.calls.append(f"execution {flow.id}")
        yield
        self.calls.append("execution ended")

    @contextlib.contextmanager
    def attempt(self, task: Task, step: int, attempt: int) -> Iterator[None]:
        self.calls.append(f"attempt {task.name} {step}.{attempt}")
        yield
        self.calls.append("attempt ended")

    def event(self, event: Event) -> None:
        self.events.append(event)


async def test_an_observer_sees_each_attempt_around_its_task_and_every_event() -> None:
    recorder = Recorder()
    failures = iter([True, False])

    def flaky(ctx: TaskContext) -> None:
        recorder.calls.append(f"ran {ctx.task.name}")
        if next(failures):
            raise TaskFailure("once")

    engine = Engine(registry_with(flaky=FakeTask(flaky)), observer=recorder, sleep=_no_wait)
    retried = RetryPolicy(max_attempts=2)
    flow = Flow(tasks=(Task("a", "flaky", retry=retried),), start_task="a", id="f")

    events = [event async for event in engine.run(flow)]

    assert recorder.calls == [
        "execution f",
        "attempt a 1.1",
        "ran a",
        "attempt ended",
        "attempt a 1.2",
        "ran a",
        "attempt ended",
        "execution ended",
    ]
    assert recorder.events == events


async def test_the_null_observer_changes_nothing_the_engine_yields() -> None:
    watched, unwatched = Recorder(), NullObserver()

    seen = [
        [type(event).__name__ for event in await _run(Engine(registry_with(), observer=observer))]
        for observer in (watched, unwatched)
    ]

    assert seen[0] == seen[1]
    assert len([e for e in watched.events if isinstance(e, TaskStarted)]) == 3


async def _run(engine: Engine) -> list[Event]:
    return [event async for event in engine.run(SEED)]


async def _no_wait(seconds: float) -> None:
    return None
