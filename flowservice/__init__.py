"""Flow Manager: runs flows of tasks and conditions, defined as data, over gRPC.

The domain (`models`, `events`, `errors`, `limits`, `engine`, `tasks`) knows
nothing of gRPC; `api` converts messages to domain models and back, `server`
serves them and `client` calls them.

What users import is listed in `__all__` and loaded on first use: a program
that only runs flows in-process (`Engine`, the task API) never imports grpc,
and `import flowservice` costs nothing until a name is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flowservice.client import FlowClient, FlowClientError
    from flowservice.engine import Engine, ValidationReport
    from flowservice.errors import (
        FlowServiceError,
        InvalidFlowError,
        TaskRegistrationError,
        TooManyExecutionsError,
    )
    from flowservice.limits import Limits
    from flowservice.models import (
        Condition,
        ExecutionStatus,
        ExecutionSummary,
        Flow,
        RetryPolicy,
        Task,
        TaskOutcome,
        TaskResult,
        TaskStub,
    )
    from flowservice.server import create_server
    from flowservice.settings import Settings
    from flowservice.tasks import (
        FakeTask,
        TaskContext,
        TaskFailure,
        TaskImplementation,
        TaskOutput,
        TaskRegistry,
        builtin_registry,
    )
    from flowservice.worker import Worker, WorkItem

__all__ = [
    "Condition",
    "Engine",
    "ExecutionStatus",
    "ExecutionSummary",
    "FakeTask",
    "Flow",
    "FlowClient",
    "FlowClientError",
    "FlowServiceError",
    "InvalidFlowError",
    "Limits",
    "RetryPolicy",
    "Settings",
    "Task",
    "TaskContext",
    "TaskFailure",
    "TaskImplementation",
    "TaskOutcome",
    "TaskOutput",
    "TaskRegistrationError",
    "TaskRegistry",
    "TaskResult",
    "TaskStub",
    "TooManyExecutionsError",
    "ValidationReport",
    "WorkItem",
    "Worker",
    "builtin_registry",
    "create_server",
]

# Where each public name lives; `__getattr__` imports it on first use.
_HOMES = {
    "Condition": "flowservice.models",
    "Engine": "flowservice.engine",
    "ExecutionStatus": "flowservice.models",
    "ExecutionSummary": "flowservice.models",
    "FakeTask": "flowservice.tasks",
    "Flow": "flowservice.models",
    "FlowClient": "flowservice.client",
    "FlowClientError": "flowservice.client",
    "FlowServiceError": "flowservice.errors",
    "InvalidFlowError": "flowservice.errors",
    "Limits": "flowservice.limits",
    "RetryPolicy": "flowservice.models",
    "Settings": "flowservice.settings",
    "Task": "flowservice.models",
    "TaskContext": "flowservice.tasks",
    "TaskFailure": "flowservice.tasks",
    "TaskImplementation": "flowservice.tasks",
    "TaskOutcome": "flowservice.models",
    "TaskOutput": "flowservice.tasks",
    "TaskRegistrationError": "flowservice.errors",
    "TaskRegistry": "flowservice.tasks",
    "TaskResult": "flowservice.models",
    "TaskStub": "flowservice.models",
    "TooManyExecutionsError": "flowservice.errors",
    "ValidationReport": "flowservice.engine",
    "WorkItem": "flowservice.worker",
    "Worker": "flowservice.worker",
    "builtin_registry": "flowservice.tasks",
    "create_server": "flowservice.server",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'flowservice' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
