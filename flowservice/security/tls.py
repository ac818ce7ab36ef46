"""Certificate and key files, checked when the server starts and reread when they change.

grpc and the ssl module report a bad file late (at the first handshake) or
vaguely; these checks name the file and the problem before anything listens.
`TlsFilesWatch` notices new files (a renewed certificate, a rotated CA
bundle) at the next handshake, so rotation needs no restart; files that do
not load keep the old ones in service, with an error in the log.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from flowservice.errors import SecurityConfigError
from flowservice.security.config import read_file

__all__ = ["TlsFiles", "TlsFilesWatch"]

logger = logging.getLogger(__name__)

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


class TlsFilesWatch:
    """The TLS files of the server, loaded again when one of them changes on disk."""

    def __init__(self, cert: str, key: str, client_ca: str = "") -> None:
        self._paths = tuple(path for path in (cert, key, client_ca) if path)
        self._args = (cert, key, client_ca)
        self._stamp = self._stat()
        self.files = TlsFiles.load(*self._args)
        """The files in service."""

    def _stat(self) -> tuple[tuple[int, int, int], ...]:
        stamps = []
        for path in self._paths:
            try:
                info = os.stat(path)  # follows symlinks: a Kubernetes secret swaps them
            except OSError:
                return ()
            stamps.append((info.st_ino, info.st_size, info.st_mtime_ns))
        return tuple(stamps)

    def reload(self) -> TlsFiles | None:
        """The new files when they changed and load, else None (cheap: one stat a file)."""
        stamp = self._stat()
        if stamp == self._stamp or not stamp:
            return None
        try:
            files = TlsFiles.load(*self._args)
        except SecurityConfigError as exc:
            # Half-written files are normal mid-rotation: the next handshake tries again.
            logger.error("keeping the TLS files in service: %s", exc)
            return None
        self._stamp, self.files = stamp, files
        logger.info("TLS files reloaded: %s", ", ".join(self._paths))
        return files
