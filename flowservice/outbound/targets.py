"""Which services a flow may call: deny by default, allowed at start-up.

A flow is data sent by any caller, so the server must never become a proxy
to anywhere (SSRF). `OutboundPolicy` holds what the operator allowed:

- `--allow-target host:port`, `host:*` (any port of that host), or a URL
  prefix (`https://api.example.com/v1/`: URLs under it);
- `--target NAME=ADDRESS_OR_URL`: a named target, allowed by being named;
  a flow says `"target": "NAME"` instead of an address. `grpcs://host:port`
  names a gRPC target served over TLS.

Nothing is allowed by default. Two checks guard every call:

1. `address_allowed`/`url_allowed` on the text, at validation (a literal
   target) or just before the call (one from an input mapping);
2. `checked_addresses` at connect time: the host is resolved and every
   address checked, so that a hostname that resolves to a link-local or
   cloud-metadata address (169.254.0.0/16, fd00:ec2::254) is refused, unless
   that very address was listed. The caller connects to the addresses it
   returns, never resolving again, so DNS cannot change the answer between
   the check and the connection.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

__all__ = [
    "GRPC_TLS",
    "TARGET_NOT_ALLOWED",
    "OutboundPolicy",
    "TargetNotAllowed",
    "is_metadata_address",
    "split_address",
]

GRPC_TLS = "grpcs://"
"""The prefix of a named gRPC target served over TLS (`--target billing=grpcs://billing:443`)."""
TARGET_NOT_ALLOWED = "TARGET_NOT_ALLOWED"
"""The reason (validation) and error type (run time) of a call to a target not allowed."""

_METADATA_NETWORKS = (
    ipaddress.ip_network("169.254.0.0/16"),  # link-local; AWS, GCP, Azure metadata
    ipaddress.ip_network("fd00:ec2::254/128"),  # AWS metadata over IPv6
    ipaddress.ip_network("fe80::/10"),  # IPv6 link-local
)
_DEFAULT_PORTS = {"http": 80, "https": 443}


class TargetNotAllowed(Exception):
    """A call to a target the operator did not allow; the message says which, never why not."""


def is_metadata_address(address: str) -> bool:
    """Whether `address` (an IP literal) is link-local or a cloud metadata address."""
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in _METADATA_NETWORKS)


def split_address(address: str) -> tuple[str, str]:
    """`host:port` as (host, port), lower-cased host, brackets of IPv6 kept off; ValueError else."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port:
        raise ValueError(f"expected host:port, got {address!r}")
    host = host.strip("[]").lower()
    if port != "*" and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"expected a port number or *, got {port!r}")
    return host, port


def _url_host_port(url: str) -> tuple[str, str, str]:
    """(scheme, host, port) of an http(s) URL; ValueError for anything else."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"expected an http:// or https:// URL, got {url!r}")
    if parts.username or parts.password:
        raise ValueError("a URL must not carry credentials")
    port = parts.port or _DEFAULT_PORTS[scheme]
    return scheme, parts.hostname.lower(), str(port)


@dataclass(frozen=True, slots=True)
class OutboundPolicy:
    """The targets flows may call; empty (the default) allows none."""

    addresses: frozenset[tuple[str, str]] = frozenset()
    """Allowed (host, port) pairs; port `*` allows every port of the host."""
    url_prefixes: tuple[str, ...] = ()
    """Allowed URL prefixes, normalised (lower-case scheme and host)."""
    named: Mapping[str, str] = field(default_factory=dict)
    """Named targets: name -> `host:port` or URL."""

    @classmethod
    def parse(cls, allow: Iterable[str] = (), targets: Iterable[str] = ()) -> OutboundPolicy:
        """The policy of `--allow-target` and `--target NAME=...` values; ValueError if bad."""
        addresses: set[tuple[str, str]] = set()
        prefixes: list[str] = []
        for entry in allow:
            entry = entry.strip()
            if "://" in entry:
                _url_host_port(entry)
                prefixes.append(_normalised(entry))
            else:
                addresses.add(split_address(entry))
        named: dict[str, str] = {}
        for entry in targets:
            name, sep, value = entry.partition("=")
            name, value = name.strip(), value.strip()
            if not sep or not name or not value or ":" in name or "/" in name:
                raise ValueError(f"expected --target NAME=ADDRESS_OR_URL, got {entry!r}")
            if value.startswith(GRPC_TLS):
                if not split_address(value.removeprefix(GRPC_TLS))[1].isdigit():
                    raise ValueError(f"a named target needs a port number, got {value!r}")
            elif "://" in value:
                _url_host_port(value)
            elif not split_address(value)[1].isdigit():
                raise ValueError(f"a named target needs a port number, got {value!r}")
            named[name] = value
        return cls(frozenset(addresses), tuple(prefixes), named)

    def __bool__(self) -> bool:
        return bool(self.addresses or self.url_prefixes or self.named)

    def address_allowed(self, address: str) -> bool:
        """Whether `host:port` (or a target name) may be called; no DNS lookup."""
        if address in self.named:
            return True
        try:
            host, port = split_address(address)
        except ValueError:
            return False
        if not port.isdigit():  # `host:*` is a rule, not an address
            return False
        return (host, port) in self.addresses or (host, "*") in self.addresses

    def url_allowed(self, url: str) -> bool:
        """Whether `url` may be requested: under an allowed prefix or a named target's URL,
        or on an allowed host:port."""
        try:
            _, host, port = _url_host_port(url)
        except ValueError:
            return False
        if (host, port) in self.addresses or (host, "*") in self.addresses:
            return True
        normalised = _normalised(url)
        named = (_normalised(value) for value in self.named.values() if "://" in value)
        return any(_under(normalised, prefix) for prefix in (*self.url_prefixes, *named))

    def explicitly_listed(self, ip: str, port: int) -> bool:
        """Whether the operator listed this very IP (the only way to reach a metadata address)."""
        ip = ip.lower()
        if (ip, str(port)) in self.addresses or (ip, "*") in self.addresses:
            return True
        named_hosts = {_host_of(value) for value in self.named.values()}
        prefix_hosts = {_host_of(prefix) for prefix in self.url_prefixes}
        return ip in named_hosts or ip in prefix_hosts

    async def checked_addresses(self, host: str, port: int) -> list[str]:
        """The addresses `host` resolves to, each checked; TargetNotAllowed when one is refused.

        Connect to these, not to `host`: resolving again could give another answer.
        """
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise TargetNotAllowed(f"cannot resolve {host!r}: {exc.strerror or exc}") from None
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        for address in addresses:
            if is_metadata_address(address) and not self.explicitly_listed(address, port):
                raise TargetNotAllowed(
                    f"{host!r} resolves to the link-local or metadata address {address}, "
                    "which is refused unless listed explicitly"
                )
        if not addresses:
            raise TargetNotAllowed(f"{host!r} resolves to no address")
        return addresses


def _normalised(url: str) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.lower()
    query = f"?{parts.query}" if parts.query else ""
    return f"{parts.scheme.lower()}://{netloc}{parts.path}{query}"


def _under(url: str, prefix: str) -> bool:
    """`url` starts with `prefix` at a boundary: `/v1` allows `/v1/x` and `/v1?q`, not `/v10`."""
    if not url.startswith(prefix):
        return False
    rest = url[len(prefix) :]
    return prefix.endswith("/") or not rest or rest[0] in "/?#"


def _host_of(value: str) -> str:
    value = value.removeprefix(GRPC_TLS)
    if "://" in value:
        return (urlsplit(value).hostname or "").lower()
    return value.rpartition(":")[0].strip("[]").lower()
