"""The decision for one call: who is calling, and may they call this method.

The caller is the bearer token's identity when the call carries one
(`authorization: Bearer <token>`), otherwise the client certificate's
(mTLS). A token that is sent but invalid is refused even when a certificate
would do: a broken credential is a mistake to report, not to paper over.
Without a policy, any authenticated caller may call anything.
"""

from __future__ import annotations

from collections.abc import Iterable

from flowservice.errors import AuthenticationError, PermissionDeniedError
from flowservice.security.config import SecuritySettings
from flowservice.security.policy import Policy
from flowservice.security.tokens import INVALID_TOKEN, JwtVerifier, StaticTokens

__all__ = ["AccessGuard"]

UNAUTHENTICATED = "UNAUTHENTICATED"


class AccessGuard:
    """Authenticates a call from its token and peer, then authorizes it by the policy."""

    def __init__(
        self,
        *,
        jwt_verifier: JwtVerifier | None = None,
        static_tokens: StaticTokens | None = None,
        policy: Policy | None = None,
    ) -> None:
        self._jwt = jwt_verifier
        self._static = static_tokens
        self._policy = policy

    @classmethod
    def from_settings(cls, settings: SecuritySettings, methods: Iterable[str]) -> AccessGuard:
        """Reads every file `settings` names; `methods` are those the server serves."""
        jwt_verifier = None
        if settings.jwt_public_key or settings.jwt_jwks:
            jwt_verifier = JwtVerifier.from_files(
                settings.jwt_public_key,
                settings.jwt_jwks,
                issuer=settings.jwt_issuer,
                audience=settings.jwt_audience,
            )
        static_tokens = None
        if settings.static_tokens:
            static_tokens = StaticTokens.from_file(settings.static_tokens)
        policy = None
        if settings.auth_policy:
            policy = Policy.from_file(settings.auth_policy, methods)
        return cls(jwt_verifier=jwt_verifier, static_tokens=static_tokens, policy=policy)

    def check(self, method: str, token: str | None, peer: str | None) -> str:
        """The identity making the call, when it may call `method`.

        `token` is the bearer token sent (None for none), `peer` the client
        certificate's identity (`mtls:<SAN>`, None without one). Raises
        AuthenticationError or PermissionDeniedError.
        """
        identity = self._authenticate(method, token, peer)
        if self._policy is not None and not self._policy.allows(identity, method):
            raise PermissionDeniedError(identity, method)
        return identity

    def _authenticate(self, method: str, token: str | None, peer: str | None) -> str:
        if token is None:
            if peer is not None:
                return peer
            raise AuthenticationError(
                UNAUTHENTICATED,
                "this call needs credentials: a bearer token or a client certificate",
                method,
            )
        if self._static is not None and (identity := self._static.identify(token)):
            return identity
        if self._jwt is not None and token.count(".") == 2:
            try:
                return self._jwt.verify(token)
            except AuthenticationError as exc:
                raise AuthenticationError(exc.reason, str(exc), method) from None
        raise AuthenticationError(INVALID_TOKEN, "the bearer token is not valid", method)
