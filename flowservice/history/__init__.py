"""The history of executions: one store interface, an SQLite file and memory.

The API layer records every execution through an `ExecutionStore`: what was
asked (`ExecutionRecord`), every event it streamed (`StoredEvent`, opaque
bytes the API layer produced), and how it ended. `open_store` picks the
implementation from the `--store` setting. The domain never sees grpc: the
bytes are whatever the API layer chose to keep (serialized protos).
"""

from flowservice.history.memory import MemoryStore
from flowservice.history.sqlite import SCHEMA_VERSION, SqliteStore
from flowservice.history.store import (
    DEFAULT_LEASE_SECONDS,
    RUNNING,
    Claim,
    ExecutionQuery,
    ExecutionRecord,
    ExecutionStore,
    Renewal,
    StoredEvent,
    StoredExecution,
    open_store,
)

__all__ = [
    "DEFAULT_LEASE_SECONDS",
    "RUNNING",
    "SCHEMA_VERSION",
    "Claim",
    "ExecutionQuery",
    "ExecutionRecord",
    "ExecutionStore",
    "MemoryStore",
    "Renewal",
    "SqliteStore",
    "StoredEvent",
    "StoredExecution",
    "open_store",
]
