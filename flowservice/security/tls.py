"""Certificate and key files, checked when the server starts.

grpc and the ssl module report a bad file late (at the first handshake) or
vaguely; these checks name the file and the problem before anything listens.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from flowservice.errors import SecurityConfigError
from flowservice.security.config import read_file

__all__ = ["TlsFiles"]

_PUBLIC_INFO = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """A certificate chain, its private key and an optional client CA bundle, as PEM."""

    chain: bytes
    """The certificate first, then any intermediates."""
    key: bytes
    """The certificate's private key."""
    client_ca: bytes | None
    """CA certificates that sign client certificates; None when clients need none."""

    @classmethod
    def load(cls, cert: str, key: str, client_ca: str = "") -> TlsFiles:
        """Reads the files, checking that each parses and that the key fits the certificate."""
        chain = read_file(cert, "TLS certificate")
        key_pem = read_file(key, "TLS key")
        try:
            leaf = x509.load_pem_x509_certificates(chain)[0]
        except ValueError:
            raise SecurityConfigError(f"{cert} holds no PEM certificate") from None
        try:
            private_key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError):
            raise SecurityConfigError(f"{key} is not an unencrypted PEM private key") from None
        if private_key.public_key().public_bytes(*_PUBLIC_INFO) != leaf.public_key().public_bytes(
            *_PUBLIC_INFO
        ):
            raise SecurityConfigError(f"{key} is not the key of the certificate in {cert}")
        ca = None
        if client_ca:
            ca = read_file(client_ca, "client CA")
            try:
                x509.load_pem_x509_certificates(ca)
            except ValueError:
                raise SecurityConfigError(f"{client_ca} holds no PEM certificate") from None
        return cls(chain=chain, key=key_pem, client_ca=ca)
