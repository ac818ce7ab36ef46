"""The requests the benchmark sends, as protobuf JSON and as framed gRPC bodies.

Flows are written as the JSON a caller would send (the format of
`examples/*.json`), so the harness depends only on the public API, not on the
server's internals.
"""

from __future__ import annotations

import itertools
import json
import struct
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from flowmanager.v1 import flow_service_pb2

__all__ = [
    "REPO_ROOT",
    "SEED_FLOW_PATH",
    "grpc_frame",
    "linear_flow",
    "seed_request",
    "sleeping_flow",
    "to_execute_request",
    "to_stream_request",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
SEED_FLOW_PATH = REPO_ROOT / "examples" / "seed-flow.json"
"""The seed example of the README: three tasks, each routed to the next on success."""


def seed_request() -> flow_service_pb2.ExecuteRequest:
    """The `Execute` request of `examples/seed-flow.json`, unchanged."""
    return to_execute_request(json.loads(SEED_FLOW_PATH.read_text())["flow"])


def linear_flow(tasks: int, *, task_type: str = "mock", flow_id: str = "linear") -> dict[str, Any]:
    """The seed's shape, `tasks` long: t1 -> t2 -> ... -> tN, each routed by a condition.

    Every task but the last has a condition sending success to the next task and
    failure to `end`, as in the seed; the last task ends the flow. `max_steps`
    is set to the length so the server's default step limit does not apply.
    """
    names = [f"t{i}" for i in range(1, tasks + 1)]
    return {
        "id": flow_id,
        "name": f"{tasks}-task linear flow",
        "start_task": names[0],
        "max_steps": tasks,
        "tasks": [{"name": name, "type": task_type} for name in names],
        "conditions": [
            {
                "name": f"after_{source}",
                "source_task": source,
                "outcome": "success",
                "target_task_success": target,
                "target_task_failure": "end",
            }
            for source, target in itertools.pairwise(names)
        ],
    }


def sleeping_flow(sleep_ms: int) -> dict[str, Any]:
    """One `mock` task that sleeps `sleep_ms` milliseconds, then succeeds."""
    return {
        "id": "sleeper",
        "start_task": "sleep",
        "tasks": [{"name": "sleep", "type": "mock", "params": {"sleep_ms": sleep_ms}}],
    }


def to_execute_request(flow: dict[str, Any]) -> flow_service_pb2.ExecuteRequest:
    """An `ExecuteRequest` carrying `flow` (protobuf JSON)."""
    return json_format.ParseDict({"flow": flow}, flow_service_pb2.ExecuteRequest())


def to_stream_request(flow: dict[str, Any]) -> flow_service_pb2.ExecuteStreamRequest:
    """An `ExecuteStreamRequest` carrying `flow` (protobuf JSON)."""
    return json_format.ParseDict({"flow": flow}, flow_service_pb2.ExecuteStreamRequest())


def grpc_frame(message: Message) -> bytes:
    """`message` as one gRPC length-prefixed frame: the body of an HTTP/2 request.

    The prefix is one byte (0: not compressed) and the message length as a
    4-byte big-endian integer.
    """
    payload = message.SerializeToString()
    return struct.pack(">BI", 0, len(payload)) + payload
