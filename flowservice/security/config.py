"""What an operator sets to secure the server: file paths and switches, no secrets.

Every field is a path or a plain value taken from a flag (see
`flowservice.settings`); the files are read once, when the server is built.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from flowservice.errors import SecurityConfigError

__all__ = ["SecuritySettings", "is_loopback", "read_file"]


@dataclass(frozen=True, slots=True)
class SecuritySettings:
    """TLS, authentication, authorization and exposure settings; all off by default."""

    tls_cert: str = ""
    """PEM certificate chain the server presents; with `tls_key`, turns TLS on."""
    tls_key: str = ""
    """PEM private key of `tls_cert`."""
    tls_client_ca: str = ""
    """PEM CA certificates that sign client certificates; turns mTLS on, where a
    client certificate is required and its SAN is the caller's identity."""
    jwt_public_key: str = ""
    """PEM public key (or certificate) that signs bearer JWTs (RS256, ES256 or EdDSA)."""
    jwt_jwks: str = ""
    """JWKS file (JSON) whose public keys sign bearer JWTs, chosen by `kid`."""
    jwt_issuer: str = ""
    """When set, a JWT's `iss` must equal it."""
    jwt_audience: str = ""
    """When set, a JWT's `aud` must contain it."""
    static_tokens: str = ""
    """File of `name:sha256hex` lines: bearer tokens stored as their SHA-256."""
    auth_policy: str = ""
    """YAML or JSON file saying which identity may call which RPC."""
    reflection: bool = True
    """Serve gRPC server reflection (grpcurl's `list` and `describe`)."""
    metrics_tls_cert: str = ""
    """PEM certificate chain for /metrics; with `metrics_tls_key`, serves HTTPS."""
    metrics_tls_key: str = ""
    """PEM private key of `metrics_tls_cert`."""
    metrics_tls_client_ca: str = ""
    """PEM CA certificates; when set, /metrics requires a client certificate they sign."""

    @property
    def tls(self) -> bool:
        """Whether the gRPC port serves TLS."""
        return bool(self.tls_cert)

    @property
    def mtls(self) -> bool:
        """Whether callers must present a client certificate."""
        return bool(self.tls_client_ca)

    @property
    def tokens(self) -> bool:
        """Whether bearer tokens of some kind are accepted."""
        return bool(self.jwt_public_key or self.jwt_jwks or self.static_tokens)

    @property
    def authentication(self) -> bool:
        """Whether calls (other than Health) must name who makes them."""
        return self.mtls or self.tokens or bool(self.auth_policy)

    def problems(self) -> list[str]:
        """What is inconsistent in these settings, as flag-level messages (empty when none)."""
        problems = []
        if bool(self.tls_cert) != bool(self.tls_key):
            problems.append("--tls-cert and --tls-key go together")
        if self.tls_client_ca and not self.tls_cert:
            problems.append("--tls-client-ca needs --tls-cert and --tls-key")
        if self.auth_policy and not (self.mtls or self.tokens):
            problems.append(
                "--auth-policy needs a way to authenticate callers: --tls-client-ca, "
                "--jwt-public-key, --jwt-jwks or --static-tokens"
            )
        if (self.jwt_issuer or self.jwt_audience) and not (self.jwt_public_key or self.jwt_jwks):
            problems.append("--jwt-issuer and --jwt-audience need --jwt-public-key or --jwt-jwks")
        if bool(self.metrics_tls_cert) != bool(self.metrics_tls_key):
            problems.append("--metrics-tls-cert and --metrics-tls-key go together")
        if self.metrics_tls_client_ca and not self.metrics_tls_cert:
            problems.append("--metrics-tls-client-ca needs --metrics-tls-cert")
        return problems


def is_loopback(address: str) -> bool:
    """Whether `address` (host:port) only accepts connections from this machine."""
    host = address.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name other than localhost, or empty (every interface)


def read_file(path: str, what: str) -> bytes:
    """The bytes of `path`, or a SecurityConfigError that names the flag's purpose."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SecurityConfigError(f"cannot read the {what} {path}: {exc.strerror}") from exc
