"""What the engine tells whoever watches it: metrics, traces, anything else.

The engine calls an `Observer` around each execution and each task attempt,
and with each event. The domain defines only this protocol; the
implementations (Prometheus, OpenTelemetry) live in `flowservice.observability`
so the engine never imports them.
"""

from __future__ import annotations

import contextlib
from typing import Protocol

from flowservice.events import Event
from flowservice.models import Flow, Task

__all__ = ["NullObserver", "Observer"]


class Observer(Protocol):
    """Hooks the engine calls as it runs; each must be cheap and must not raise."""

    def execution(self, flow: Flow, execution_id: str) -> contextlib.AbstractContextManager[None]:
        """Entered before the first event of an execution, left after its last (or on cancel)."""
        ...

    def attempt(
        self, task: Task, step: int, attempt: int
    ) -> contextlib.AbstractContextManager[None]:
        """Entered around one attempt of one task, while its implementation runs."""
        ...

    def event(self, event: Event) -> None:
        """Called with every event, just before the engine yields it."""
        ...


class _Nothing:
    """A reusable context manager that does nothing (cheaper than a generator one).

    Static methods: `with` then holds the function itself, not a new bound
    method for as long as the block runs (64 bytes per execution).
    """

    __slots__ = ()

    @staticmethod
    def __enter__() -> None:
        return None

    @staticmethod
    def __exit__(*exc_info: object) -> None:
        return None


_NOTHING = _Nothing()


class NullObserver:
    """Observes nothing; the default."""

    def execution(self, flow: Flow, execution_id: str) -> contextlib.AbstractContextManager[None]:
        """Does nothing."""
        return _NOTHING

    def attempt(
        self, task: Task, step: int, attempt: int
    ) -> contextlib.AbstractContextManager[None]:
        """Does nothing."""
        return _NOTHING

    def event(self, event: Event) -> None:
        """Does nothing."""
