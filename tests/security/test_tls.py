"""TLS and mTLS on a real server: who gets through the handshake, and who the policy lets in."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from flowservice.security import SecuritySettings
from flowservice.server import FlowServer
from tests.security.conftest import (
    VALIDATE,
    error_info,
    health_check,
    refusal,
    running,
    tls_channel,
    validate,
)
from tests.security.pki import SPIFFE_CLIENT, Pki

SERVING = health_pb2.HealthCheckResponse.SERVING


def mtls_settings(pki: Pki, policy: Path | None = None) -> SecuritySettings:
    return SecuritySettings(
        tls_cert=str(pki.server.cert),
        tls_key=str(pki.server.key),
        tls_client_ca=str(pki.ca.path),
        auth_policy=str(policy) if policy else "",
    )


@pytest.fixture
async def mtls_server(pki: Pki, tmp_path: Path) -> AsyncIterator[FlowServer]:
    """mTLS, and a policy that lets only the SPIFFE client call Validate."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        f"rules:\n  - identities: [mtls:{SPIFFE_CLIENT}]\n    methods: [{VALIDATE[1:]}]\n"
    )
    async with running(mtls_settings(pki, policy)) as server:
        yield server


async def test_a_client_certificate_the_policy_allows_gets_in(
    mtls_server: FlowServer, pki: Pki
) -> None:
    async with tls_channel(mtls_server.port, pki, pki.client.pem()) as channel:
        await validate(channel)


async def test_no_client_certificate_fails_the_handshake(mtls_server: FlowServer, pki: Pki) -> None:
    async with tls_channel(mtls_server.port, pki) as channel:
        error = await refusal(lambda: health_check(channel))

    assert error.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_client_certificate_from_another_ca_fails_the_handshake(
    mtls_server: FlowServer, pki: Pki
) -> None:
    async with tls_channel(mtls_server.port, pki, pki.rogue_client.pem()) as channel:
        error = await refusal(lambda: validate(channel))

    assert error.code() == grpc.StatusCode.UNAVAILABLE


async def test_plaintext_to_the_tls_port_fails(mtls_server: FlowServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{mtls_server.port}") as channel:
        error = await refusal(lambda: health_check(channel))

    assert error.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_valid_certificate_the_policy_does_not_name_is_denied(
    mtls_server: FlowServer, pki: Pki
) -> None:
    async with tls_channel(mtls_server.port, pki, pki.other_client.pem()) as channel:
        error = await refusal(lambda: validate(channel))

    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    info = error_info(error)
    assert (info.reason, info.domain) == ("PERMISSION_DENIED", "flowmanager")
    assert info.metadata["method"] == VALIDATE
    # Without a URI SAN, the first DNS SAN names the client.
    assert info.metadata["identity"] == "mtls:other.flowmanager.test"


async def test_health_needs_only_the_handshake(mtls_server: FlowServer, pki: Pki) -> None:
    async with tls_channel(mtls_server.port, pki, pki.other_client.pem()) as channel:
        assert await health_check(channel) == SERVING


async def test_mtls_without_a_policy_lets_every_certified_client_in(pki: Pki) -> None:
    async with (
        running(mtls_settings(pki)) as server,
        tls_channel(server.port, pki, pki.other_client.pem()) as channel,
    ):
        await validate(channel)


async def test_server_only_tls_serves_clients_without_certificates(pki: Pki) -> None:
    security = SecuritySettings(tls_cert=str(pki.server.cert), tls_key=str(pki.server.key))
    async with running(security) as server, tls_channel(server.port, pki) as channel:
        await validate(channel)
        assert await health_check(channel) == SERVING
