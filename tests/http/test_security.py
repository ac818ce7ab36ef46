"""The HTTP port keeps the gRPC port's authentication and TLS, and CORS is opt-in."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.rpc import error_details_pb2

from flowservice.settings import Settings
from tests.http.conftest import EXAMPLES, HttpServer, curl, http_serving
from tests.security.pki import Pki, sha256_line

TOKEN = "s3cret-console-token"
ORIGIN = "http://console.example.test:5173"
SEED = str(EXAMPLES / "seed-flow.json")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.create(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[HttpServer]:
    """A server with TLS, a static token and one allowed CORS origin."""
    directory = tmp_path_factory.mktemp("guarded")
    tokens = directory / "tokens.txt"
    tokens.write_text(sha256_line("console", TOKEN))
    flags = [
        "--store", "memory",
        "--tls-cert", str(pki.server.cert),
        "--tls-key", str(pki.server.key),
        "--static-tokens", str(tokens),
        "--cors-origin", ORIGIN,
    ]  # fmt: skip
    with http_serving(directory / "server.log", flags) as server:
        yield server


def call(server: HttpServer, pki: Pki, *headers: str) -> tuple[int, dict[str, str], bytes]:
    """Execute with the seed over HTTPS (trusting the test CA): status, headers, body."""
    args = [arg for header in headers for arg in ("-H", header)]
    result = curl(
        "-i", "--cacert", str(pki.ca.path), "-H", "content-type: application/json",
        *args, "--data-binary", f"@{SEED}", server.rpc("FlowService/Execute"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    return parse(result.stdout)


def parse(reply: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = reply.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    return int(status_line.split()[1]), headers, body


def reason(body: bytes) -> str:
    error = json.loads(body)
    (info,) = [d for d in error["details"] if d["type"] == "google.rpc.ErrorInfo"]
    value = base64.b64decode(info["value"] + "=" * (-len(info["value"]) % 4))
    return str(error_details_pb2.ErrorInfo.FromString(value).reason)


def test_the_http_port_serves_tls_when_the_server_does(guarded: HttpServer) -> None:
    assert guarded.scheme == "https"


def test_a_call_without_a_token_is_unauthenticated(guarded: HttpServer, pki: Pki) -> None:
    status, _, body = call(guarded, pki)

    assert status == 401
    assert json.loads(body)["code"] == "unauthenticated"
    assert reason(body) == "UNAUTHENTICATED"


def test_a_wrong_token_is_refused_with_its_reason(guarded: HttpServer, pki: Pki) -> None:
    status, _, body = call(guarded, pki, "authorization: Bearer not-the-token")

    assert status == 401
    assert reason(body) == "INVALID_TOKEN"


def test_the_token_lets_the_call_in(guarded: HttpServer, pki: Pki) -> None:
    status, _, body = call(guarded, pki, f"authorization: Bearer {TOKEN}")

    assert status == 200
    assert json.loads(body)["status"] == "EXECUTION_STATUS_COMPLETED"


def test_plain_http_is_not_served_on_a_tls_port(guarded: HttpServer) -> None:
    result = curl("-o", "/dev/null", "-w", "%{http_code}", guarded.url.replace("https", "http"))

    assert result.stdout in (b"000", b"400")  # no HTTP reply, or a refusal


def test_an_allowed_origin_gets_its_preflight_answered(guarded: HttpServer, pki: Pki) -> None:
    result = curl(
        "-i", "-X", "OPTIONS", "--cacert", str(pki.ca.path),
        "-H", f"origin: {ORIGIN}",
        "-H", "access-control-request-method: POST",
        "-H", "access-control-request-headers: content-type,connect-protocol-version,authorization",
        guarded.rpc("FlowService/Execute"),
    )  # fmt: skip
    status, headers, _ = parse(result.stdout)

    assert status == 204
    assert headers["access-control-allow-origin"] == ORIGIN
    allowed = {h.strip() for h in headers["access-control-allow-headers"].split(",")}
    assert {"content-type", "connect-protocol-version", "authorization"} <= allowed
    assert "POST" in headers["access-control-allow-methods"]


def test_an_allowed_origin_may_read_replies_and_their_status(guarded: HttpServer, pki: Pki) -> None:
    status, headers, _ = call(guarded, pki, f"origin: {ORIGIN}", f"authorization: Bearer {TOKEN}")

    assert status == 200
    assert headers["access-control-allow-origin"] == ORIGIN
    assert "grpc-status-details-bin" in headers["access-control-expose-headers"]


def test_another_origin_gets_no_cors_headers(guarded: HttpServer, pki: Pki) -> None:
    status, headers, _ = call(guarded, pki, "origin: http://evil.example.test")

    assert status == 401
    assert "access-control-allow-origin" not in headers


def test_without_cors_origins_a_preflight_gets_no_cors_headers(tmp_path: Path) -> None:
    with http_serving(tmp_path / "server.log", ["--store", "memory"]) as server:
        result = curl(
            "-i", "-X", "OPTIONS", "-H", f"origin: {ORIGIN}",
            "-H", "access-control-request-method: POST",
            server.rpc("FlowService/Execute"),
        )  # fmt: skip
    status, headers, _ = parse(result.stdout)

    assert not any(name.startswith("access-control-") for name in headers)
    assert status >= 400


def test_with_mtls_the_http_port_wants_a_client_certificate_and_a_token(
    tmp_path: Path, pki: Pki
) -> None:
    """The certificate is checked at the handshake; over HTTP the token says who calls."""
    tokens = tmp_path / "tokens.txt"
    tokens.write_text(sha256_line("console", TOKEN))
    flags = [
        "--store", "memory",
        "--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key),
        "--tls-client-ca", str(pki.ca.path), "--static-tokens", str(tokens),
    ]  # fmt: skip
    client = ["--cert", str(pki.client.cert), "--key", str(pki.client.key)]
    with http_serving(tmp_path / "server.log", flags) as server:
        without_certificate = curl(
            "--cacert", str(pki.ca.path), "-H", "content-type: application/json",
            "--data-binary", f"@{SEED}", server.rpc("FlowService/Execute"),
        )  # fmt: skip
        with_both = curl(
            "-i", "--cacert", str(pki.ca.path), *client,
            "-H", "content-type: application/json", "-H", f"authorization: Bearer {TOKEN}",
            "--data-binary", f"@{SEED}", server.rpc("FlowService/Execute"),
        )  # fmt: skip
        certificate_no_token = curl(
            "-i", "--cacert", str(pki.ca.path), *client,
            "-H", "content-type: application/json",
            "--data-binary", f"@{SEED}", server.rpc("FlowService/Execute"),
        )  # fmt: skip

    assert without_certificate.returncode != 0  # the TLS handshake fails
    assert parse(with_both.stdout)[0] == 200
    status, _, body = parse(certificate_no_token.stdout)
    assert status == 401
    assert reason(body) == "UNAUTHENTICATED"


@pytest.mark.parametrize("origin", ["*", "http://console.example.test/", "console.example.test"])
def test_a_cors_origin_that_is_no_origin_is_a_usage_error(origin: str) -> None:
    with pytest.raises(SystemExit) as exited:
        Settings.from_args(["--cors-origin", origin], environ={})

    assert exited.value.code == 2
