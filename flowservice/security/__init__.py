"""Who may call the server: TLS settings, bearer tokens, mTLS identities and the policy.

Nothing here imports gRPC: `flowservice.api.auth` applies these decisions to
calls, and `flowservice.server` turns the TLS settings into credentials.
"""

from flowservice.security.config import SecuritySettings, is_loopback
from flowservice.security.guard import AccessGuard
from flowservice.security.policy import Policy
from flowservice.security.tokens import JwtVerifier, StaticTokens

__all__ = [
    "AccessGuard",
    "JwtVerifier",
    "Policy",
    "SecuritySettings",
    "StaticTokens",
    "is_loopback",
]
