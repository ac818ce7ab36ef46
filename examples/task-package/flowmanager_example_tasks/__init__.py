"""Task types for the Flow Manager, from a package of their own.

`greet` is found by its entry point (pyproject.toml); `register` is what
`--task-module flowmanager_example_tasks` calls, for types that need set-up.
"""

from __future__ import annotations

from typing import Any


async def greet(ctx: Any) -> dict[str, str]:
    """Greets `params.name`."""
    return {"greeting": f"hello, {ctx.params.get('name', 'world')}"}


def shout(ctx: Any) -> dict[str, str]:
    """Upper-cases `params.text` (sync: the engine runs it in a thread)."""
    return {"text": str(ctx.params.get("text", "")).upper()}


def register(registry: Any) -> None:
    """Adds `shout` to the server's registry (`--task-module flowmanager_example_tasks`)."""
    registry.register("shout", shout)
