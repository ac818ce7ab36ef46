"""TLS and mTLS on a real server: who gets through the handshake, and who the policy lets in."""

from __future__ import annotations

import dataclasses
import http.client
import json
import logging
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format
from grpc_health.v1 import health_pb2

from flowmanager.v1 import flow_service_pb2, flow_service_pb2_grpc
from flowservice.observability import Metrics, configure_logging
from flowservice.security import SecuritySettings
from flowservice.security.https import server_ssl_context
from flowservice.server import FlowServer
from tests.security.conftest import (
    SEED_FLOW,
    VALIDATE,
    bearer,
    error_info,
    health_check,
    refusal,
    running,
    tls_channel,
    validate,
)
from tests.security.pki import SPIFFE_CLIENT, Pki, TokenIssuer

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


def fetch_metrics(port: int, context: ssl.SSLContext | None, scheme: str = "https") -> str:
    url = f"{scheme}://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, context=context, timeout=10) as response:
        return str(response.read().decode())


def serve_metrics_https(pki: Pki, client_ca: bool) -> int:
    metrics = Metrics()
    metrics.rpc("/flowmanager.v1.FlowService/Execute", "OK")
    ca = str(pki.ca.path) if client_ca else ""
    return metrics.serve(
        "127.0.0.1:0", server_ssl_context(str(pki.server.cert), str(pki.server.key), ca)
    )


def test_metrics_over_https_require_the_scrapers_certificate(pki: Pki) -> None:
    port = serve_metrics_https(pki, client_ca=True)
    scraper = ssl.create_default_context(cafile=str(pki.ca.path))
    scraper.load_cert_chain(str(pki.client.cert), str(pki.client.key))
    anonymous = ssl.create_default_context(cafile=str(pki.ca.path))

    assert "flowmanager_rpcs_total" in fetch_metrics(port, scraper)
    with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
        fetch_metrics(port, anonymous)
    with pytest.raises((urllib.error.URLError, ConnectionError, http.client.HTTPException)):
        fetch_metrics(port, None, scheme="http")


def test_a_silent_connection_does_not_stall_metrics_over_https(pki: Pki) -> None:
    port = serve_metrics_https(pki, client_ca=False)
    scraper = ssl.create_default_context(cafile=str(pki.ca.path))

    # prometheus_client's own TLS handshakes in its accept loop: this socket,
    # which never sends a ClientHello, would hold every scrape after it.
    with socket.create_connection(("127.0.0.1", port)):
        assert "flowmanager_rpcs_total" in fetch_metrics(port, scraper)


async def test_renewed_files_are_served_without_a_restart(
    pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client_ca = tmp_path / "client-ca.pem"
    client_ca.write_bytes(pki.ca.path.read_bytes())
    security = SecuritySettings(
        tls_cert=str(pki.server.cert), tls_key=str(pki.server.key), tls_client_ca=str(client_ca)
    )
    async with running(security) as server:
        async with tls_channel(server.port, pki, pki.rogue_client.pem()) as channel:
            assert (await refusal(lambda: health_check(channel))).code() == (
                grpc.StatusCode.UNAVAILABLE
            )

        # A CA bundle that trusts the other CA too, as in a CA rotation.
        client_ca.write_bytes(pki.ca.path.read_bytes() + pki.rogue_ca_pem())
        async with tls_channel(server.port, pki, pki.rogue_client.pem()) as channel:
            assert await health_check(channel) == SERVING

        # A half-written file keeps the last good ones in service.
        client_ca.write_bytes(b"-----BEGIN CERT")
        with caplog.at_level(logging.ERROR, logger="flowservice.security.tls"):
            async with tls_channel(server.port, pki, pki.rogue_client.pem()) as channel:
                assert await health_check(channel) == SERVING
        # One error per handshake that read the broken file: one, or more
        # when a loaded machine makes the client retry its handshake.
        assert caplog.records
        assert {record.levelname for record in caplog.records} == {"ERROR"}


async def test_a_token_over_mtls_logs_its_caller_and_the_certificate_san(
    pki: Pki, issuer: TokenIssuer, capsys: pytest.CaptureFixture[str]
) -> None:
    # The token decides; the certificate's SAN, read from each call's own
    # context, still goes into the call's log lines.
    security = dataclasses.replace(mtls_settings(pki), jwt_public_key=str(issuer.public_key_path))
    request = json_format.ParseDict({"flow": SEED_FLOW}, flow_service_pb2.ExecuteRequest())
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    configure_logging("DEBUG", "json")
    try:
        async with (
            running(security) as server,
            tls_channel(server.port, pki, pki.client.pem()) as channel,
        ):
            stub = flow_service_pb2_grpc.FlowServiceStub(channel)
            token = bearer(issuer.token("ops-alice"))
            await stub.Execute(request, metadata=token, timeout=10)
    finally:
        root.handlers[:], root.level = saved[0], saved[1]

    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line[:1] == "{"]
    executions = [line for line in lines if line.get("execution_id")]
    callers = {(line.get("identity"), line.get("peer")) for line in executions}
    assert callers == {("jwt:ops-alice", SPIFFE_CLIENT)}
