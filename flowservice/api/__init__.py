"""The gRPC API layer: the only part of the service that knows protobuf messages."""

from flowservice.api.servicer import FlowServicer

__all__ = ["FlowServicer"]
