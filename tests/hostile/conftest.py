"""Hostile-input tests: real server processes whose memory is capped.

`limited_server` starts `python -m flowservice` (as the end-to-end tests do)
and caps its address space with `RLIMIT_AS`, so a request that makes the
server grow without bound fails the test (the server gets MemoryError or
dies) instead of taking the machine down.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from tests.server_process import RunningServer, serving

MEMORY_LIMIT = 2 * 1024**3
"""Bytes of address space a server under test may map (grpc reserves a lot up front)."""


@pytest.fixture
def limited_server(
    tmp_path: Path,
) -> Callable[..., AbstractContextManager[RunningServer]]:
    """Starts a server with `flags` and at most `memory_limit` bytes of address space."""

    def start(
        *flags: str, memory_limit: int = MEMORY_LIMIT
    ) -> AbstractContextManager[RunningServer]:
        return serving(tmp_path / "server.log", flags, address_space=memory_limit)

    return start


def error_details(
    error: grpc.aio.AioRpcError,
) -> tuple[error_details_pb2.ErrorInfo | None, error_details_pb2.RetryInfo | None]:
    """The ErrorInfo and RetryInfo in an error's `grpc-status-details-bin`, if there."""
    raw = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    info: error_details_pb2.ErrorInfo | None = None
    retry: error_details_pb2.RetryInfo | None = None
    if isinstance(raw, bytes):
        for detail in status_pb2.Status.FromString(raw).details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry = error_details_pb2.RetryInfo()
                detail.Unpack(retry)
    return info, retry
