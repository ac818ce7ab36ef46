"""The bounds that keep one request from hurting the server or its other callers.

Every limit has a name (used in error details, as `ErrorInfo.metadata`
`limit` and `limit_value`) and a default taken from what comparable services
use. Operators change them through `Settings`; docs/deadlines-and-limits.md
lists them all.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Limits"]


@dataclass(frozen=True, slots=True)
class Limits:
    """Every bound the service enforces; names are those reported in errors."""

    max_tasks: int = 1_000
    """Tasks per flow."""
    max_conditions: int = 1_000
    """Conditions per flow."""
    max_name_length: int = 128
    """Characters in a task, condition or flow name, id or task type."""
    max_steps_ceiling: int = 10_000
    """The largest `max_steps` a flow may ask for."""
    default_max_steps: int = 1_000
    """Task runs per execution when the flow does not set `max_steps`."""
    max_expression_length: int = 1_024
    """Characters in one CEL expression (conditions, input mappings, flow output)."""
    max_attempts: int = 100
    """The largest `retry.max_attempts` a task may ask for."""
    max_output_bytes: int = 256 * 1024
    """Bytes of one task output, as compact JSON; a larger output fails the task."""
    max_request_bytes: int = 4 * 1024 * 1024
    """Bytes of one request message; larger ones get RESOURCE_EXHAUSTED before any handler."""
    max_concurrent_executions: int = 1_000
    """Executions running at once in one server process; past it, calls are shed."""
    max_run_time: float = 60.0
    """Seconds any execution may run, whatever its caller's deadline."""
    max_results_bytes: int = 16 * 1024 * 1024
    """Bytes of all the task outputs of one execution together, as compact JSON; past it
    the execution fails at once (below the server's 64 MiB response limit)."""
    max_expression_seconds: float = 1.0
    """Seconds of CPU one execution may spend evaluating expressions, all evaluations together;
    past it the execution fails (one evaluation is bounded by CEL's iteration budget)."""
    max_concurrent_rpcs: int = 2_000
    """Calls of any method handled at once (Health/Check aside); past it, calls get
    RESOURCE_EXHAUSTED with RetryInfo. Above `max_concurrent_executions`, so that
    Validate, health watches and reflection still get through when executions are full."""
    max_concurrent_streams: int = 1_000
    """HTTP/2 streams (calls) one connection may have open, sent in its SETTINGS
    frame; further streams are refused (REFUSED_STREAM: the client sees
    UNAVAILABLE, and the call was not processed, so retrying it is safe)."""
    max_connections: int = 100
    """Client connections at once; more are closed at once (the client sees UNAVAILABLE).
    With `max_concurrent_streams` it bounds the calls grpc can queue for the server."""
    max_connection_idle: float = 300.0
    """Seconds a connection without calls stays open before the server closes it (GOAWAY)."""
    max_connection_age: float = 1_800.0
    """Seconds a connection may live; then GOAWAY, so clients reconnect and rebalance.
    Calls in flight then get `max_run_time` plus a few seconds to finish."""
    keepalive_time: float = 300.0
    """Seconds of silence after which the server pings a client to check it is still there."""
    min_ping_interval: float = 300.0
    """Fewest seconds between a client's pings when it has no call; pinging more
    often twice (`grpc.http2.max_ping_strikes`) closes the connection (GOAWAY too_many_pings)."""
    max_flow_id_length: int = 63
    """Characters in the id of a flow stored in the registry (`CreateFlow`): letters, digits,
    `-`, `_` and `.`, starting with a letter or digit (63, as DNS labels and AIP-122 ids)."""
    max_flows_page_size: int = 1_000
    """Flows or versions in one page of `ListFlows` or `ListFlowVersions`; a larger
    `page_size` gets this many."""
    max_cached_plans: int = 256
    """Compiled flows kept for reuse, the most recently used (an LRU keyed by the flow's
    serialized bytes, flows up to 16 KiB): a flow sent again skips conversion and validation."""
