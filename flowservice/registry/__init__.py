"""The flow registry: flows kept under their id in immutable, numbered versions.

The API layer stores a flow (`FlowRegistry.create`) once it has validated
it, and resolves the references that `Execute`, `ExecuteStream` and
`StartExecution` carry (`find_version`). A version's body is opaque bytes
that the API layer produced (a serialized `flowmanager.v1.Flow`); the
registry compares bodies by their digest only. `open_registry` picks the
implementation from the `--store` setting: the SQLite file or PostgreSQL
database the history uses (`registry.postgres`, imported only then), or
memory. The domain never sees grpc.
"""

from flowservice.registry.memory import MemoryRegistry
from flowservice.registry.sqlite import SqliteRegistry
from flowservice.registry.store import (
    FlowRegistry,
    FlowVersion,
    body_digest,
    find_version,
    open_registry,
)

__all__ = [
    "FlowRegistry",
    "FlowVersion",
    "MemoryRegistry",
    "SqliteRegistry",
    "body_digest",
    "find_version",
    "open_registry",
]
