"""The task types a server offers: the built-in ones, `http`, `grpc`, and installed ones.

`server_registry` builds the registry `create_server` uses when it is given
none. The library's `builtin_registry` stays the four in-process types:
`http` and `grpc` call other services, which only a server's operator may
allow (`--allow-target`), so they exist only where that policy does.

Task types from installed packages, without forking:

- the entry-point group `flowmanager.tasks`: each entry point's name is a
  task type, its value the implementation (a function, or a class or object
  with `run`); see examples/task-package;
- `--task-module MODULE`: the module's `register(registry)` is called with
  the server's registry, for types that need set-up.

A package that cannot be loaded, or a name already taken, stops the server
at start-up (`TaskRegistrationError`), never a call.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from pathlib import Path

from flowservice.api.grpc_task import GrpcTask, load_descriptor_sets
from flowservice.errors import TaskRegistrationError
from flowservice.observability import Metrics, Tracing
from flowservice.outbound import HttpTask, OutboundPolicy
from flowservice.outbound.observe import OutboundObserver
from flowservice.settings import Settings
from flowservice.tasks import TaskRegistry, builtin_registry

__all__ = ["ENTRY_POINT_GROUP", "server_registry"]

ENTRY_POINT_GROUP = "flowmanager.tasks"


def server_registry(
    settings: Settings, metrics: Metrics | None = None, tracing: Tracing | None = None
) -> TaskRegistry:
    """The built-in task types, `http` and `grpc` under `settings`' outbound policy, and
    installed ones. Raises TaskRegistrationError when one cannot be loaded."""
    registry = builtin_registry()
    policy = OutboundPolicy.parse(settings.allow_targets, settings.targets)
    observer = OutboundObserver(
        tracing.tracer if tracing is not None else None,
        metrics.outbound_calls if metrics is not None else None,
    )
    registry.register("http", HttpTask(policy, settings.limits, observer, settings.outbound_ca))
    descriptors = load_descriptor_sets(settings.descriptor_sets)
    roots = _read_roots(settings.outbound_ca)
    registry.register("grpc", GrpcTask(policy, settings.limits, descriptors, observer, roots))
    add_installed_task_types(registry, settings.task_modules)
    return registry


def _read_roots(path: str) -> bytes | None:
    """The PEM CAs of `--outbound-ca`; None for the system's."""
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise TaskRegistrationError(f"--outbound-ca {path}: cannot be read: {exc}") from exc


def add_installed_task_types(registry: TaskRegistry, modules: tuple[str, ...]) -> None:
    """Registers the `flowmanager.tasks` entry points, then each module's `register`."""
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            implementation = entry_point.load()
        except Exception as exc:
            raise TaskRegistrationError(
                f"entry point {entry_point.name!r} ({entry_point.value}) cannot be loaded: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        registry.register(entry_point.name, implementation)
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise TaskRegistrationError(
                f"--task-module {name!r} cannot be imported: {exc}"
            ) from exc
        register = getattr(module, "register", None)
        if not callable(register):
            raise TaskRegistrationError(
                f"--task-module {name!r} has no register(registry) function"
            )
        register(registry)
