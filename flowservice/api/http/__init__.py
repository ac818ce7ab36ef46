"""The same API over HTTP: Connect (JSON and binary) and gRPC-Web, and the web console.

`HttpGateway` serves `--http-address`. It holds no behaviour of the API: every
call is forwarded to the server's own gRPC port (`bridge`), so that it meets
the same authentication, limits, status mapping and servicers as a gRPC
caller. docs/http.md explains the design and why connectrpc does the protocols.
"""

from flowservice.api.http.gateway import HttpGateway

__all__ = ["HttpGateway"]
