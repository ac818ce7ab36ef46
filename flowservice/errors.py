"""Every error the domain raises, in one place.

Hierarchy::

    FlowServiceError            base of every error raised on purpose
    ├── InvalidFlowError        the flow definition breaks one or more rules;
    │                           carries every `Violation` found (the API maps
    │                           it to INVALID_ARGUMENT with BadRequest details)
    └── TaskRegistrationError   a task implementation cannot be registered
                                (raised at start-up, never during a call)

A task that fails is not an error of this hierarchy: it is an outcome,
recorded in its `TaskResult`. Tasks may raise `flowservice.tasks.TaskFailure`
to fail with a message and an output.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "FlowServiceError",
    "InvalidFlowError",
    "TaskRegistrationError",
    "Violation",
]


@dataclass(frozen=True, slots=True)
class Violation:
    """One problem with one field of a request."""

    field: str
    """The path of the field, as in the request: `flow.conditions[1].outcome`."""
    description: str
    """What is wrong, for people."""
    reason: str
    """What is wrong, for programs: an UPPER_SNAKE_CASE code such as `UNKNOWN_TASK`."""


class FlowServiceError(Exception):
    """Base class of every error the domain raises on purpose."""


class InvalidFlowError(FlowServiceError):
    """The flow definition is invalid; `violations` lists every problem found."""

    def __init__(self, violations: tuple[Violation, ...]) -> None:
        self.violations = violations
        count = len(violations)
        first = violations[0].description if violations else "invalid flow"
        more = f" (and {count - 1} more)" if count > 1 else ""
        super().__init__(f"invalid flow: {first}{more}")


class TaskRegistrationError(FlowServiceError):
    """A task implementation could not be registered."""
