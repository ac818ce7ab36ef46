"""Task implementations and the registry that maps a task `type` to one."""

from flowservice.tasks.base import (
    TaskContext,
    TaskFailure,
    TaskImplementation,
    TaskOutput,
)
from flowservice.tasks.builtin import builtin_registry
from flowservice.tasks.registry import RegisteredTask, TaskRegistry

__all__ = [
    "RegisteredTask",
    "TaskContext",
    "TaskFailure",
    "TaskImplementation",
    "TaskOutput",
    "TaskRegistry",
    "builtin_registry",
]
