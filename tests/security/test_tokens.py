"""Bearer tokens on a real server: JWTs, static tokens, the policy, Health and reflection."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf import json_format
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from flowmanager.v1 import flow_service_pb2, flow_service_pb2_grpc
from flowservice.observability import Metrics, configure_logging
from flowservice.security import SecuritySettings
from flowservice.server import FlowServer, create_server
from flowservice.settings import Settings
from tests.security.conftest import (
    EXECUTE,
    SEED_FLOW,
    VALIDATE,
    bearer,
    error_info,
    health_check,
    refusal,
    running,
    validate,
)
from tests.security.pki import TokenIssuer, sha256_line

STATIC_TOKEN = "s3cr3t-static-token-for-the-dashboard-0123456789"
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"

POLICY = f"""
rules:
  - identities: ["jwt:ops-*", "token:dashboard"]
    methods: ["flowmanager.v1.FlowService/*", "{REFLECTION[1:]}"]
  - identities: ["jwt:viewer"]
    methods: ["{VALIDATE[1:]}"]
"""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(subject: str) -> str:
    """A token with `alg: none` and no signature."""
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    body = _b64(json.dumps({"sub": subject, "exp": int(time.time()) + 300}).encode())
    return f"{header}.{body}."


def hmac_with_public_key(subject: str, public_pem: bytes) -> str:
    """HS256 'signed' with the server's public key as the secret: the classic confusion."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps({"sub": subject, "exp": int(time.time()) + 300}).encode())
    signature = hmac.new(public_pem, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{_b64(signature)}"


@pytest.fixture
async def server(issuer: TokenIssuer, tmp_path: Path) -> AsyncIterator[FlowServer]:
    """Plaintext on loopback, JWTs from `issuer` for audience flowmanager, a static token."""
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("# name:sha256\n" + sha256_line("dashboard", STATIC_TOKEN))
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    security = SecuritySettings(
        jwt_public_key=str(issuer.public_key_path),
        jwt_audience="flowmanager",
        static_tokens=str(tokens),
        auth_policy=str(policy),
    )
    async with running(security) as flow_server:
        yield flow_server


@pytest.fixture
async def channel(server: FlowServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield channel


async def assert_unauthenticated(channel: grpc.aio.Channel, token: str | None, reason: str) -> None:
    error = await refusal(lambda: validate(channel, token))

    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    info = error_info(error)
    assert (info.reason, info.domain) == (reason, "flowmanager")
    assert info.metadata["method"] == VALIDATE


async def test_a_valid_token_with_permission_gets_in(
    channel: grpc.aio.Channel, issuer: TokenIssuer
) -> None:
    await validate(channel, issuer.token("ops-alice", aud="flowmanager"))


async def test_no_token_is_unauthenticated(channel: grpc.aio.Channel) -> None:
    await assert_unauthenticated(channel, None, "UNAUTHENTICATED")


async def test_an_expired_token_is_unauthenticated(
    channel: grpc.aio.Channel, issuer: TokenIssuer
) -> None:
    token = issuer.token("ops-alice", expires_in=-3600, aud="flowmanager")

    await assert_unauthenticated(channel, token, "TOKEN_EXPIRED")


async def test_a_token_not_valid_yet_is_unauthenticated(
    channel: grpc.aio.Channel, issuer: TokenIssuer
) -> None:
    token = issuer.token("ops-alice", aud="flowmanager", nbf=int(time.time()) + 3600)

    await assert_unauthenticated(channel, token, "TOKEN_NOT_YET_VALID")


async def test_a_token_signed_by_another_key_is_unauthenticated(
    channel: grpc.aio.Channel, tmp_path: Path
) -> None:
    stranger = TokenIssuer(tmp_path, "stranger")

    await assert_unauthenticated(
        channel, stranger.token("ops-alice", aud="flowmanager"), "INVALID_TOKEN"
    )


async def test_a_token_for_another_audience_is_unauthenticated(
    channel: grpc.aio.Channel, issuer: TokenIssuer
) -> None:
    await assert_unauthenticated(channel, issuer.token("ops-alice", aud="billing"), "INVALID_TOKEN")


async def test_alg_none_is_unauthenticated(channel: grpc.aio.Channel) -> None:
    await assert_unauthenticated(channel, unsigned("ops-alice"), "INVALID_TOKEN")


async def test_hmac_keyed_with_the_public_key_is_unauthenticated(
    channel: grpc.aio.Channel, issuer: TokenIssuer
) -> None:
    token = hmac_with_public_key("ops-alice", issuer.public_key_path.read_bytes())

    await assert_unauthenticated(channel, token, "INVALID_TOKEN")


async def test_another_scheme_is_unauthenticated(channel: grpc.aio.Channel) -> None:
    stub_metadata = (("authorization", "Basic b3BzOnB3"),)
    call = channel.unary_unary(VALIDATE)
    error = await refusal(lambda: call(b"", metadata=stub_metadata, timeout=10))

    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_info(error).reason == "INVALID_TOKEN"


async def test_a_token_without_permission_for_the_rpc_is_denied(
    channel: grpc.aio.Channel, issuer: TokenIssuer
) -> None:
    token = issuer.token("viewer", aud="flowmanager")
    await validate(channel, token)  # allowed: Validate only
    call = channel.unary_unary(EXECUTE)

    error = await refusal(lambda: call(b"", metadata=bearer(token), timeout=10))

    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    info = error_info(error)
    assert (info.reason, info.domain) == ("PERMISSION_DENIED", "flowmanager")
    assert dict(info.metadata) == {"method": EXECUTE, "identity": "jwt:viewer"}


async def test_a_refused_request_is_never_decoded(channel: grpc.aio.Channel) -> None:
    call = channel.unary_unary(EXECUTE)

    # Bytes that are no ExecuteRequest: refused for the missing token, not parsed.
    error = await refusal(lambda: call(b"\xff\xff\xff\xff", timeout=10))

    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_static_token_gets_in(channel: grpc.aio.Channel) -> None:
    await validate(channel, STATIC_TOKEN)


async def test_an_unknown_static_token_is_unauthenticated(channel: grpc.aio.Channel) -> None:
    await assert_unauthenticated(channel, STATIC_TOKEN + "x", "INVALID_TOKEN")


async def test_health_is_open_without_credentials(channel: grpc.aio.Channel) -> None:
    assert await health_check(channel) == health_pb2.HealthCheckResponse.SERVING


async def test_only_the_health_probes_are_open(channel: grpc.aio.Channel) -> None:
    # Health/List is served by grpcio-health-checking but not implemented by
    # its aio servicer: a prefix-wide exemption let anyone reach it, and its
    # NotImplementedError came back INTERNAL with a traceback in the log.
    health_list = channel.unary_unary(
        "/grpc.health.v1.Health/List",
        request_serializer=health_pb2.HealthListRequest.SerializeToString,
        response_deserializer=health_pb2.HealthListResponse.FromString,
    )
    anonymous = await refusal(lambda: health_list(health_pb2.HealthListRequest(), timeout=10))
    assert anonymous.code() == grpc.StatusCode.UNAUTHENTICATED

    # A known caller is held to the policy, which does not name List...
    known = await refusal(
        lambda: health_list(
            health_pb2.HealthListRequest(), metadata=bearer(STATIC_TOKEN), timeout=10
        )
    )
    assert known.code() == grpc.StatusCode.PERMISSION_DENIED

    # ...and with no authentication at all, List is UNIMPLEMENTED, not INTERNAL.
    async with (
        running(SecuritySettings()) as server,
        grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as open_channel,
    ):
        open_list = open_channel.unary_unary(
            "/grpc.health.v1.Health/List",
            request_serializer=health_pb2.HealthListRequest.SerializeToString,
            response_deserializer=health_pb2.HealthListResponse.FromString,
        )
        error = await refusal(lambda: open_list(health_pb2.HealthListRequest(), timeout=10))
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED


async def list_services(channel: grpc.aio.Channel, token: str | None) -> list[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    responses = stub.ServerReflectionInfo(
        iter([request]), metadata=bearer(token) if token else None, timeout=10
    )
    return [
        service.name
        async for response in responses
        for service in response.list_services_response.service
    ]


async def test_reflection_follows_the_policy(
    channel: grpc.aio.Channel, issuer: TokenIssuer
) -> None:
    viewer = issuer.token("viewer", aud="flowmanager")

    assert "flowmanager.v1.FlowService" in await list_services(channel, STATIC_TOKEN)
    error = await refusal(lambda: list_services(channel, viewer))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_info(error).metadata["method"] == REFLECTION


async def test_reflection_off_is_unimplemented() -> None:
    async with (
        running(SecuritySettings(reflection=False)) as server,
        grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        error = await refusal(lambda: list_services(channel, None))

    assert error.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_a_jwks_key_is_chosen_by_kid(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [{**jwk, "kid": "k1"}]}))
    claims = {"sub": "ops-bob", "exp": int(time.time()) + 300}
    good = jwt.encode(claims, key, algorithm="ES256", headers={"kid": "k1"})
    unknown_kid = jwt.encode(claims, key, algorithm="ES256", headers={"kid": "k2"})
    security = SecuritySettings(jwt_jwks=str(tmp_path / "jwks.json"))

    async with (
        running(security) as server,
        grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        await validate(channel, good)
        await assert_unauthenticated(channel, unknown_kid, "INVALID_TOKEN")


async def test_a_stream_is_guarded_like_a_unary_call(
    channel: grpc.aio.Channel, issuer: TokenIssuer
) -> None:
    stub = flow_service_pb2_grpc.FlowServiceStub(channel)
    request = json_format.ParseDict({"flow": SEED_FLOW}, flow_service_pb2.ExecuteStreamRequest())
    token = issuer.token("ops-alice", aud="flowmanager")

    events = [event async for event in stub.ExecuteStream(request, metadata=bearer(token))]
    assert events[-1].HasField("execution_finished")
    error = await refusal(lambda: _drain(stub.ExecuteStream(request, timeout=10)))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


async def _drain(responses: Any) -> None:
    async for _ in responses:
        pass


async def test_refusals_are_counted_and_logged_with_the_request_id(
    issuer: TokenIssuer, capsys: pytest.CaptureFixture[str]
) -> None:
    metrics = Metrics()
    security = SecuritySettings(jwt_public_key=str(issuer.public_key_path))
    flow_server = create_server(
        Settings(store="memory", address="127.0.0.1:0", security=security), metrics=metrics
    )
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    configure_logging("INFO", "json")
    await flow_server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{flow_server.port}") as channel:
            call = channel.unary_unary(VALIDATE)
            await refusal(lambda: call(b"", metadata=(("x-request-id", "req-42"),), timeout=10))
    finally:
        await flow_server.stop(grace=None)
        root.handlers[:], root.level = saved[0], saved[1]

    assert metrics.rpcs.labels(VALIDATE, "UNAUTHENTICATED")._value.get() == 1
    err = capsys.readouterr().err
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    refusals = [line for line in lines if line["logger"] == "flowservice.api.auth"]
    assert [line.get("request_id") for line in refusals] == ["req-42"]


async def test_each_admitted_call_logs_its_own_identity_and_request_id(
    server: FlowServer, issuer: TokenIssuer, capsys: pytest.CaptureFixture[str]
) -> None:
    # The handler a token admits is built once per method: what differs per
    # call (who calls, the request id) must still reach each call's log lines.
    callers = {"req-a": issuer.token("ops-alice", aud="flowmanager"), "req-b": STATIC_TOKEN}
    request = json_format.ParseDict({"flow": SEED_FLOW}, flow_service_pb2.ExecuteRequest())
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    configure_logging("DEBUG", "json")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = flow_service_pb2_grpc.FlowServiceStub(channel)
            for request_id, token in callers.items():
                metadata = (*bearer(token), ("x-request-id", request_id))
                await stub.Execute(request, metadata=metadata, timeout=10)
    finally:
        root.handlers[:], root.level = saved[0], saved[1]

    err = capsys.readouterr().err
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    executions = {
        (line.get("request_id"), line.get("identity")) for line in lines if line.get("execution_id")
    }
    assert executions == {("req-a", "jwt:ops-alice"), ("req-b", "token:dashboard")}
