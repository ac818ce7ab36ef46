"""Metrics, traces and structured logs: the engine's `Observer` made real.

Nothing here imports gRPC; the API layer adds RPC metrics with an interceptor.
"""

from flowservice.observability.composite import CompositeObserver
from flowservice.observability.logs import (
    configure_logging,
    identity_var,
    peer_var,
    request_id_var,
)
from flowservice.observability.metrics import Metrics
from flowservice.observability.tracing import Tracing

__all__ = [
    "CompositeObserver",
    "Metrics",
    "Tracing",
    "configure_logging",
    "identity_var",
    "peer_var",
    "request_id_var",
]
