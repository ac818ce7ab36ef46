"""An `Observer` that passes every hook to several observers."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from flowservice.events import Event
from flowservice.models import Flow, Task
from flowservice.observer import Observer

__all__ = ["CompositeObserver"]


class CompositeObserver:
    """Calls each observer in turn, entering their contexts in order."""

    def __init__(self, observers: Sequence[Observer]) -> None:
        self._observers = tuple(observers)

    @contextlib.contextmanager
    def execution(self, flow: Flow, execution_id: str) -> Iterator[None]:
        """Enters every observer's execution context."""
        with contextlib.ExitStack() as stack:
            for observer in self._observers:
                stack.enter_context(observer.execution(flow, execution_id))
            yield

    @contextlib.contextmanager
    def attempt(self, task: Task, step: int, attempt: int) -> Iterator[None]:
        """Enters every observer's attempt context."""
        with contextlib.ExitStack() as stack:
            for observer in self._observers:
                stack.enter_context(observer.attempt(task, step, attempt))
            yield

    def event(self, event: Event) -> None:
        """Passes `event` to every observer."""
        for observer in self._observers:
            observer.event(event)
