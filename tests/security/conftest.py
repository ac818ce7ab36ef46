"""Servers with TLS and authentication on 127.0.0.1:0, and what their tests share.

Certificates, keys and tokens are made per module in a temporary directory
(see `pki.py`); nothing secret is committed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from flowmanager.v1 import flow_service_pb2, flow_service_pb2_grpc
from flowservice.security import SecuritySettings
from flowservice.server import FlowServer, create_server
from flowservice.settings import Settings
from tests.security.pki import Pki, TokenIssuer

VALIDATE = "/flowmanager.v1.FlowService/Validate"
EXECUTE = "/flowmanager.v1.FlowService/Execute"
TIMEOUT = 10.0
"""Seconds any one call in these tests may take."""

SEED_FLOW: dict[str, Any] = {
    "id": "seed",
    "start_task": "task1",
    "tasks": [{"name": "task1"}, {"name": "task2"}],
    "conditions": [
        {
            "name": "after_task1",
            "source_task": "task1",
            "outcome": "success",
            "target_task_success": "task2",
            "target_task_failure": "end",
        }
    ],
}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.create(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> TokenIssuer:
    return TokenIssuer(tmp_path_factory.mktemp("issuer"))


@asynccontextmanager
async def running(security: SecuritySettings) -> AsyncIterator[FlowServer]:
    """A started server on 127.0.0.1:0 with `security`, stopped on exit."""
    server = create_server(Settings(store="memory", address="127.0.0.1:0", security=security))
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace=None)


def tls_channel(port: int, pki: Pki, client: tuple[bytes, bytes] | None = None) -> grpc.aio.Channel:
    """A channel that trusts the test CA, presenting `client` (chain, key) when given."""
    chain, key = client if client else (None, None)
    credentials = grpc.ssl_channel_credentials(pki.ca.path.read_bytes(), key, chain)
    return grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials)


def bearer(token: str) -> tuple[tuple[str, str]]:
    """Call metadata carrying `token`."""
    return (("authorization", f"Bearer {token}"),)


async def validate(channel: grpc.aio.Channel, token: str | None = None) -> None:
    """Calls Validate with the seed flow; raises AioRpcError when refused."""
    stub = flow_service_pb2_grpc.FlowServiceStub(channel)
    request = flow_service_pb2.ValidateRequest()
    request.flow.id = "seed"
    request.flow.start_task = "only"
    request.flow.tasks.add(name="only")
    await stub.Validate(request, metadata=bearer(token) if token else None, timeout=TIMEOUT)


async def health_check(channel: grpc.aio.Channel) -> int:
    """Health/Check of the whole server, without credentials; its status."""
    stub = health_pb2_grpc.HealthStub(channel)
    response = await stub.Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT)
    return int(response.status)


async def refusal(call: Callable[[], Any]) -> grpc.aio.AioRpcError:
    """The error `call` (a coroutine function) ends with; fails the test if it succeeds."""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call()
    return raised.value


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    """The ErrorInfo in an error's google.rpc.Status details."""
    raw = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    assert raw, "the error carries no google.rpc.Status details"
    status = status_pb2.Status.FromString(raw)
    assert status.code == error.code().value[0]
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    raise AssertionError("no ErrorInfo in the details")


def with_files(security: SecuritySettings, **paths: Path | str) -> SecuritySettings:
    """`security` with fields set to the given paths (as strings)."""
    return dataclasses.replace(security, **{name: str(path) for name, path in paths.items()})
