"""Task implementations, the registry that maps a task `type` to one, and `FakeTask` for tests."""

from flowservice.tasks.base import (
    Implementation,
    TaskContext,
    TaskFailure,
    TaskFunction,
    TaskImplementation,
    TaskOutput,
)
from flowservice.tasks.builtin import builtin_registry
from flowservice.tasks.fake import FakeTask
from flowservice.tasks.registry import RegisteredTask, TaskRegistry

__all__ = [
    "FakeTask",
    "Implementation",
    "RegisteredTask",
    "TaskContext",
    "TaskFailure",
    "TaskFunction",
    "TaskImplementation",
    "TaskOutput",
    "TaskRegistry",
    "builtin_registry",
]
