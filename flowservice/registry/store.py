"""The interface every flow registry follows, and its record.

Versions are numbered from 1 per flow id and never change once written.
`create` decides in one step (one transaction, for a database) whether the
body is new: a body whose digest is that of the flow's latest version is not
stored again, so a client may repeat a `CreateFlow` safely. Reads never wait
on writes of other flows. Memory, SQLite and PostgreSQL registries follow it
(`open_registry` picks one).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from flowservice.errors import FlowNotFoundError

__all__ = ["FlowRegistry", "FlowVersion", "body_digest", "find_version", "open_registry"]


@dataclass(frozen=True, slots=True)
class FlowVersion:
    """One immutable version of a flow."""

    flow_id: str
    """The flow's id."""
    version: int
    """Its number: 1 for the first version of the id, one more for each next one."""
    name: str
    """The flow's name, kept apart so that lists need not read bodies."""
    body: bytes
    """The flow as the API layer serialized it; b"" in lists, which leave bodies out."""
    digest: str
    """`body_digest` of the body: equal digests mean equal bodies."""
    created_at: datetime
    """When it was created (UTC)."""


def body_digest(body: bytes) -> str:
    """The SHA-256 of `body`, in hex."""
    return hashlib.sha256(body).hexdigest()


class FlowRegistry(Protocol):
    """Where flows are kept; see the module docstring for the contract."""

    async def create(
        self, flow_id: str, name: str, body: bytes, created_at: datetime
    ) -> tuple[FlowVersion, bool]:
        """Stores `body` as the next version of `flow_id`, unless it is the latest one's.

        Returns the version stored, or the latest when its body is the
        same, and whether a version was stored.
        """
        ...

    async def get(self, flow_id: str, version: int = 0) -> FlowVersion | None:
        """The version (0: the latest) with its body; None when there is none."""
        ...

    async def list_flows(self, limit: int, after: str = "") -> list[FlowVersion]:
        """The latest version of at most `limit` flows whose id sorts after `after`, by id."""
        ...

    async def list_versions(self, flow_id: str, limit: int, before: int = 0) -> list[FlowVersion]:
        """At most `limit` versions of the flow below `before` (0: all), newest first."""
        ...

    def close(self) -> None:
        """Releases the registry."""
        ...


async def find_version(registry: FlowRegistry, flow_id: str, version: int = 0) -> FlowVersion:
    """The version (0: the latest); FlowNotFoundError, saying whether the flow exists, if none."""
    found = await registry.get(flow_id, version) if flow_id else None
    if found is None:
        known = bool(version) and await registry.get(flow_id) is not None
        raise FlowNotFoundError(flow_id, version, flow_exists=known)
    return found


def open_registry(location: str) -> FlowRegistry:
    """The registry `--store` names: "memory", the history's PostgreSQL database or SQLite file.

    Raises `StoreUnavailableError` when the file or database cannot be opened.
    """
    from flowservice.registry.memory import MemoryRegistry
    from flowservice.registry.sqlite import SqliteRegistry

    if location == "memory":
        return MemoryRegistry()
    if location.startswith(("postgresql://", "postgres://")):
        from flowservice.registry.postgres import PostgresRegistry  # psycopg only when used

        return PostgresRegistry(location)
    return SqliteRegistry(Path(location))
