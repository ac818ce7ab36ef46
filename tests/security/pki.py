"""Certificates, keys and tokens made in the test: nothing secret is committed.

`Pki.create(directory)` writes a CA, a server certificate for 127.0.0.1 and
localhost, and client certificates signed by that CA (or by another one),
as PEM files the server and grpcurl read.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

SPIFFE_CLIENT = "spiffe://example.org/ns/prod/sa/scheduler"
"""The URI SAN of the default client certificate."""


def _pem_key(key: _PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_pem(key: _PrivateKey) -> bytes:
    """The PEM SubjectPublicKeyInfo of `key`."""
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@dataclass(frozen=True, slots=True)
class Issued:
    """A certificate and its key, in memory and on disk."""

    cert: Path
    key: Path

    def pem(self) -> tuple[bytes, bytes]:
        """(certificate chain, private key) as PEM bytes."""
        return self.cert.read_bytes(), self.key.read_bytes()


class Authority:
    """A self-signed CA that issues server and client certificates."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self.name = name
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )
        self.path = directory / f"{name}.pem"
        self.path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, stem: str, sans: list[x509.GeneralName], *, server: bool) -> Issued:
        """A leaf certificate for `sans`, for a server or for a client."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, stem)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        issued = Issued(cert=self.directory / f"{stem}.crt", key=self.directory / f"{stem}.key")
        issued.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        issued.key.write_bytes(_pem_key(key))
        return issued


@dataclass(frozen=True, slots=True)
class Pki:
    """Everything a TLS test needs, as files in one directory."""

    ca: Authority
    """Signs the server's and the good client's certificates."""
    rogue_ca: Authority
    """Signs `rogue_client`; no server trusts it."""
    server: Issued
    """For 127.0.0.1 and localhost."""
    client: Issued
    """A client certificate with the URI SAN `SPIFFE_CLIENT`."""
    other_client: Issued
    """A client certificate with only the DNS SAN `other.flowmanager.test`."""
    rogue_client: Issued
    """A client certificate with `SPIFFE_CLIENT` signed by another CA."""

    def rogue_ca_pem(self) -> bytes:
        """The other CA's certificate, PEM."""
        return self.rogue_ca.path.read_bytes()

    @classmethod
    def create(cls, directory: Path) -> Pki:
        ca = Authority(directory, "ca")
        rogue = Authority(directory, "rogue-ca")
        localhost = [
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]
        spiffe = [x509.UniformResourceIdentifier(SPIFFE_CLIENT)]
        return cls(
            ca=ca,
            rogue_ca=rogue,
            server=ca.issue("server", localhost, server=True),
            client=ca.issue("client", spiffe, server=False),
            other_client=ca.issue(
                "other-client", [x509.DNSName("other.flowmanager.test")], server=False
            ),
            rogue_client=rogue.issue("rogue-client", spiffe, server=False),
        )


class TokenIssuer:
    """Signs JWTs with an Ed25519 key whose public half the server trusts."""

    def __init__(self, directory: Path, name: str = "issuer") -> None:
        self.key = ed25519.Ed25519PrivateKey.generate()
        self.public_key_path = directory / f"{name}.pub.pem"
        self.public_key_path.write_bytes(public_pem(self.key))

    def token(self, subject: str, *, expires_in: float = 300, **claims: Any) -> str:
        """A signed token for `subject`, expiring `expires_in` seconds from now."""
        now = int(time.time())
        body = {"sub": subject, "iat": now, "exp": now + int(expires_in), **claims}
        return jwt.encode(body, self.key, algorithm="EdDSA")


def sha256_line(name: str, token: str) -> str:
    """The static tokens file line for `token`."""
    return f"{name}:{hashlib.sha256(token.encode()).hexdigest()}\n"
