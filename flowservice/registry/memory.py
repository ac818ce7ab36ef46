"""The registry in the process's memory: `--store memory`, for tests and trials."""

from __future__ import annotations

import bisect
from dataclasses import replace
from datetime import datetime

from flowservice.registry.store import FlowVersion, body_digest

__all__ = ["MemoryRegistry"]


class MemoryRegistry:
    """A `FlowRegistry` in a dict of version lists (and a sorted list of ids, for paging)."""

    def __init__(self) -> None:
        self._versions: dict[str, list[FlowVersion]] = {}
        self._ids: list[str] = []

    async def create(
        self, flow_id: str, name: str, body: bytes, created_at: datetime
    ) -> tuple[FlowVersion, bool]:
        versions = self._versions.get(flow_id)
        if versions is None:
            versions = self._versions[flow_id] = []
            bisect.insort(self._ids, flow_id)
        digest = body_digest(body)
        if versions and versions[-1].digest == digest:
            return versions[-1], False
        stored = FlowVersion(flow_id, len(versions) + 1, name, body, digest, created_at)
        versions.append(stored)
        return stored, True

    async def get(self, flow_id: str, version: int = 0) -> FlowVersion | None:
        versions = self._versions.get(flow_id, [])
        if version == 0:
            return versions[-1] if versions else None
        return versions[version - 1] if 0 < version <= len(versions) else None

    async def list_flows(self, limit: int, after: str = "") -> list[FlowVersion]:
        start = bisect.bisect_right(self._ids, after)
        ids = self._ids[start : start + limit]
        return [_listed(self._versions[flow_id][-1]) for flow_id in ids]

    async def list_versions(self, flow_id: str, limit: int, before: int = 0) -> list[FlowVersion]:
        versions = self._versions.get(flow_id, [])
        end = len(versions) if before <= 0 else min(before - 1, len(versions))
        return [_listed(v) for v in reversed(versions[max(end - limit, 0) : end])]

    def close(self) -> None:
        """Nothing to release."""


def _listed(version: FlowVersion) -> FlowVersion:
    """The version as lists return it: without its body."""
    return replace(version, body=b"")
