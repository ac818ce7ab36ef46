"""The gRPC port's TLS credentials, renewed without a restart.

grpc asks for a new certificate configuration at each TLS handshake;
`TlsFilesWatch` answers from one `stat` a file, and loads new files only
when one changed.
"""

from __future__ import annotations

import grpc

from flowservice.security import SecuritySettings
from flowservice.security.tls import TlsFiles, TlsFilesWatch

__all__ = ["server_credentials"]


def server_credentials(security: SecuritySettings) -> grpc.ServerCredentials | None:
    """TLS credentials for the gRPC port, None for plaintext; with a client CA, a
    client certificate that it signs is required (mTLS).

    Raises SecurityConfigError when the files cannot be used at start.
    """
    if not security.tls:
        return None
    watch = TlsFilesWatch(security.tls_cert, security.tls_key, security.tls_client_ca)

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        files = watch.reload()
        return _configuration(files) if files is not None else None

    # grpc documents None as "no change"; the stub's type leaves it out.
    return grpc.dynamic_ssl_server_credentials(
        _configuration(watch.files),
        fetch,  # type: ignore[arg-type]
        require_client_authentication=security.mtls,
    )


def _configuration(files: TlsFiles) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration(
        [(files.key, files.chain)], root_certificates=files.client_ca
    )
