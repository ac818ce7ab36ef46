# The interface of the compiled core (src/lib.rs), for type checkers.
from collections.abc import Callable, Mapping
from typing import Any

TaskRow = tuple[str, Callable[..., Any], object, Mapping[str, Any], int, int, bytes, bytes]

class Plan:
    def __init__(
        self,
        flow_id: str,
        start: int,
        max_steps: int,
        tasks: list[TaskRow],
        context: Callable[..., object],
        failure_type: type[BaseException],
        new_id: Callable[[], str],
        results_view: Mapping[str, Any],
    ) -> None: ...

class Run:
    def pending(self) -> tuple[Any, Any] | None: ...
    def resume(self, value: object) -> None: ...
    def fail(self, error: BaseException) -> None: ...
    def reply(self) -> bytes: ...

def execute(plan: Plan, flow_input: Mapping[str, Any], encode: bool) -> bytes | Run | None: ...
