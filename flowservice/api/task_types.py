"""The task types a server offers: the built-in ones, `http`, `grpc`, and installed ones.

`server_registry` builds the registry `create_server` uses when it is given
none. The library's `builtin_registry` stays the four in-process types:
`http` and `grpc` call other services, which only a server's operator may
allow (`--allow-target`), so they exist only where that policy does.
"""

from __future__ import annotations

from flowservice.outbound import HttpTask, OutboundPolicy
from flowservice.settings import Settings
from flowservice.tasks import TaskRegistry, builtin_registry

__all__ = ["server_registry"]


def server_registry(settings: Settings) -> TaskRegistry:
    """The built-in task types, plus `http` under `settings`' outbound policy."""
    registry = builtin_registry()
    policy = OutboundPolicy.parse(settings.allow_targets, settings.targets)
    registry.register("http", HttpTask(policy, settings.limits))
    return registry
