"""Security settings, files and decisions without a server: flags, policy, tokens, keys."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from flowservice.errors import AuthenticationError, PermissionDeniedError, SecurityConfigError
from flowservice.security import AccessGuard, Policy, StaticTokens, is_loopback
from flowservice.security.tls import TlsFiles
from flowservice.security.tokens import JwtVerifier
from flowservice.server import _warn_if_exposed
from flowservice.settings import Settings
from tests.security.pki import Pki, public_pem, sha256_line

METHODS = [
    "/flowmanager.v1.FlowService/Execute",
    "/flowmanager.v1.FlowService/Validate",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
]


def policy(*rules: tuple[list[str], list[str]]) -> Policy:
    return Policy(rules, METHODS)


@pytest.mark.parametrize(
    ("identity", "method", "allowed"),
    [
        ("mtls:spiffe://prod/ns/a/sa/scheduler", "/flowmanager.v1.FlowService/Execute", True),
        ("mtls:spiffe://dev/ns/a/sa/scheduler", "/flowmanager.v1.FlowService/Execute", False),
        ("jwt:viewer", "/flowmanager.v1.FlowService/Validate", True),
        ("jwt:viewer", "/flowmanager.v1.FlowService/Execute", False),
        ("token:ci", "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", True),
        ("token:ci", "/flowmanager.v1.FlowService/Validate", False),
    ],
)
def test_a_rule_allows_only_what_it_names(identity: str, method: str, allowed: bool) -> None:
    rules = policy(
        (["mtls:spiffe://prod/*"], ["flowmanager.v1.FlowService/*"]),
        (["jwt:viewer"], ["/flowmanager.v1.FlowService/Validate"]),
        (["*"], ["grpc.reflection.v1alpha.ServerReflection/*"]),
    )

    assert rules.allows(identity, method) is allowed


def test_pattern_characters_other_than_star_are_literal() -> None:
    rules = policy((["jwt:a.b"], ["*"]))

    assert rules.allows("jwt:a.b", METHODS[0])
    assert not rules.allows("jwt:aXb", METHODS[0])


@pytest.mark.parametrize(
    "document",
    [
        "rules: []\nextra: 1\n",
        "- identities: ['*']\n",
        "rules:\n  - identities: ['*']\n",
        "rules:\n  - identities: []\n    methods: ['*']\n",
        "rules:\n  - identities: ['spiffe://prod/x']\n    methods: ['*']\n",
        "rules:\n  - identities: ['*']\n    methods: ['flowmanager.v1.FlowService/Exec']\n",
        "rules: [",
    ],
    ids=[
        "unknown key",
        "not a mapping",
        "no methods",
        "empty identities",
        "identity without kind",
        "method that matches nothing",
        "not yaml",
    ],
)
def test_a_policy_that_cannot_mean_what_it_says_stops_the_server(
    document: str, tmp_path: Path
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(document)

    with pytest.raises(SecurityConfigError):
        Policy.from_file(str(path), METHODS)


def test_a_json_policy_reads_like_yaml(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"rules": [{"identities": ["jwt:*"], "methods": ["*"]}]}))

    assert Policy.from_file(str(path), METHODS).allows("jwt:x", METHODS[1])


def test_static_tokens_are_known_by_their_hash(tmp_path: Path) -> None:
    path = tmp_path / "tokens.txt"
    path.write_text("# comment\n\n" + sha256_line("ci", "alpha") + sha256_line("ops", "beta"))
    tokens = StaticTokens.from_file(str(path))

    assert tokens.identify("beta") == "token:ops"
    assert tokens.identify("alpha") == "token:ci"
    assert tokens.identify("gamma") is None
    assert "alpha" not in path.read_text()


@pytest.mark.parametrize(
    "content",
    [
        "ci:abc\n",
        "ci:" + "z" * 64 + "\n",
        ":" + "a" * 64 + "\n",
        "",
        "a:" + "b" * 64 + "\n" * 2 + "a:" + "c" * 64,
    ],
)
def test_a_bad_static_tokens_file_stops_the_server(content: str, tmp_path: Path) -> None:
    path = tmp_path / "tokens.txt"
    path.write_text(content)

    with pytest.raises(SecurityConfigError):
        StaticTokens.from_file(str(path))


def write_jwks(tmp_path: Path, *entries: dict[str, object]) -> str:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": list(entries)}))
    return str(path)


@pytest.mark.parametrize(
    "entry",
    [
        {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
        json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()))),
        json.loads(
            jwt.algorithms.RSAAlgorithm.to_jwk(
                rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
            )
        ),
        json.loads(
            jwt.algorithms.ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP384R1()).public_key())
        ),
    ],
    ids=["symmetric", "private", "rsa-1024", "p-384"],
)
def test_a_jwks_key_the_server_must_not_trust_stops_it(
    entry: dict[str, object], tmp_path: Path
) -> None:
    with pytest.raises(SecurityConfigError):
        JwtVerifier.from_files(jwks=write_jwks(tmp_path, entry))


def test_a_private_key_file_is_not_a_public_key(tmp_path: Path, pki: Pki) -> None:
    with pytest.raises(SecurityConfigError):
        JwtVerifier.from_files(public_key=str(pki.client.key))


def test_a_certificate_stands_for_its_public_key(pki: Pki) -> None:
    JwtVerifier.from_files(public_key=str(pki.client.cert))


def test_an_rsa_key_verifies_rs256_only(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "rsa.pem").write_bytes(public_pem(key))
    verifier = JwtVerifier.from_files(public_key=str(tmp_path / "rsa.pem"))
    claims = {"sub": "svc", "exp": 4102444800}

    assert verifier.verify(jwt.encode(claims, key, algorithm="RS256")) == "jwt:svc"
    with pytest.raises(AuthenticationError) as raised:
        verifier.verify(jwt.encode(claims, key, algorithm="PS256"))
    assert raised.value.reason == "INVALID_TOKEN"


@pytest.mark.parametrize("missing", ["exp", "sub"])
def test_a_jwt_without_exp_or_sub_is_refused(missing: str, tmp_path: Path) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    (tmp_path / "ed.pem").write_bytes(public_pem(key))
    verifier = JwtVerifier.from_files(public_key=str(tmp_path / "ed.pem"))
    claims = {"sub": "svc", "exp": 4102444800}
    del claims[missing]

    with pytest.raises(AuthenticationError) as raised:
        verifier.verify(jwt.encode(claims, key, algorithm="EdDSA"))
    assert raised.value.reason == "INVALID_TOKEN"


def test_a_bad_token_is_refused_even_with_a_good_certificate(tmp_path: Path) -> None:
    path = tmp_path / "tokens.txt"
    path.write_text(sha256_line("ci", "alpha"))
    guard = AccessGuard(static_tokens=StaticTokens.from_file(str(path)))

    assert guard.check(METHODS[0], None, "mtls:spiffe://x") == "mtls:spiffe://x"
    assert guard.check(METHODS[0], "alpha", "mtls:spiffe://x") == "token:ci"
    with pytest.raises(AuthenticationError):
        guard.check(METHODS[0], "wrong", "mtls:spiffe://x")


def test_the_token_identity_is_the_one_the_policy_judges(tmp_path: Path) -> None:
    path = tmp_path / "tokens.txt"
    path.write_text(sha256_line("ci", "alpha"))
    guard = AccessGuard(
        static_tokens=StaticTokens.from_file(str(path)),
        policy=policy((["mtls:*"], ["*"])),
    )

    with pytest.raises(PermissionDeniedError):
        guard.check(METHODS[0], "alpha", "mtls:spiffe://x")


def test_tls_files_must_belong_together(pki: Pki) -> None:
    TlsFiles.load(str(pki.server.cert), str(pki.server.key), str(pki.ca.path))
    with pytest.raises(SecurityConfigError):
        TlsFiles.load(str(pki.server.cert), str(pki.client.key))
    with pytest.raises(SecurityConfigError):
        TlsFiles.load(str(pki.server.key), str(pki.server.key))
    with pytest.raises(SecurityConfigError):
        TlsFiles.load(str(pki.server.cert), str(pki.server.key), str(pki.server.key))


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1:50051", True),
        ("127.9.9.9:1", True),
        ("localhost:50051", True),
        ("[::1]:50051", True),
        ("0.0.0.0:50051", False),
        ("[::]:50051", False),
        (":50051", False),
        ("flows.example.com:443", False),
        ("10.1.2.3:50051", False),
    ],
)
def test_loopback_addresses(address: str, loopback: bool) -> None:
    assert is_loopback(address) is loopback


@pytest.mark.parametrize(
    ("flags", "warnings"),
    [
        (["--address", "127.0.0.1:50051", "--metrics-address", "127.0.0.1:9464"], 0),
        (["--address", "0.0.0.0:50051"], 1),
        (["--address", "0.0.0.0:50051", "--metrics-address", "0.0.0.0:9464"], 2),
    ],
)
def test_plaintext_off_loopback_is_warned_about(
    flags: list[str], warnings: int, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="flowservice.server"):
        _warn_if_exposed(Settings.from_args(flags, {}))

    assert len(caplog.records) == warnings


def test_tls_silences_the_warning(pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    flags = ["--address", "0.0.0.0:50051", "--tls-cert", str(pki.server.cert)]
    flags += ["--tls-key", str(pki.server.key)]

    with caplog.at_level(logging.WARNING, logger="flowservice.server"):
        _warn_if_exposed(Settings.from_args(flags, {}))

    assert caplog.records == []


@pytest.mark.parametrize(
    "flags",
    [
        ["--tls-cert", "server.crt"],
        ["--tls-client-ca", "ca.pem"],
        ["--auth-policy", "policy.yaml"],
        ["--jwt-issuer", "https://issuer.example"],
        ["--metrics-tls-key", "server.key"],
        ["--reflection", "maybe"],
    ],
)
def test_incomplete_security_flags_are_a_usage_error(flags: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        Settings.from_args(flags, {})

    assert exited.value.code == 2


def test_security_flags_have_variables() -> None:
    settings = Settings.from_args(
        ["--tls-key", "server.key"],
        {"FLOWMANAGER_TLS_CERT": "server.crt", "FLOWMANAGER_REFLECTION": "off"},
    )

    assert (settings.security.tls_cert, settings.security.tls_key) == ("server.crt", "server.key")
    assert settings.security.reflection is False


def test_a_key_embedded_in_the_token_is_ignored(tmp_path: Path) -> None:
    trusted = ed25519.Ed25519PrivateKey.generate()
    (tmp_path / "ed.pem").write_bytes(public_pem(trusted))
    verifier = JwtVerifier.from_files(public_key=str(tmp_path / "ed.pem"))
    attacker = ed25519.Ed25519PrivateKey.generate()
    embedded = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(attacker.public_key()))
    claims = {"sub": "admin", "exp": 4102444800}
    token = jwt.encode(claims, attacker, algorithm="EdDSA", headers={"jwk": embedded})

    with pytest.raises(AuthenticationError) as raised:
        verifier.verify(token)
    assert raised.value.reason == "INVALID_TOKEN"


def test_without_an_audience_flag_any_audience_is_accepted(tmp_path: Path) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    (tmp_path / "ed.pem").write_bytes(public_pem(key))
    open_verifier = JwtVerifier.from_files(public_key=str(tmp_path / "ed.pem"))
    strict = JwtVerifier.from_files(public_key=str(tmp_path / "ed.pem"), audience="flows")
    token = jwt.encode({"sub": "svc", "exp": 4102444800, "aud": "billing"}, key, "EdDSA")

    assert open_verifier.verify(token) == "jwt:svc"
    with pytest.raises(AuthenticationError):
        strict.verify(token)
