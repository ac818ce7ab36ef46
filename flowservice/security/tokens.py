"""Bearer tokens: JWTs signed by configured public keys, and static tokens stored hashed.

Each verifier turns a token into an identity (`jwt:<sub>`, `token:<name>`)
or raises `AuthenticationError` with a reason and a message of our own; a
library's exception text never reaches a caller.

JWTs: the algorithm comes from the key, never from the token. Each key
allows exactly one algorithm (RSA: RS256, EC P-256: ES256, Ed25519: EdDSA),
so `alg: none`, HS256 signed with a public key as its secret, or any other
algorithm is refused before a signature is checked. `exp` and `sub` are
required. Verification costs one signature check and PyJWT's parsing per
call: about 100 µs for RS256, 160 µs for ES256, 200 µs for EdDSA
(docs/security.md).

Static tokens: the file holds SHA-256 digests, parsed once at start. A
presented token is hashed and compared with every digest in constant time,
so neither a match nor its position leaks through timing. There is no cache
keyed by the token itself: it would keep secrets in memory and its lookup
would not be constant-time; a check costs about 2 µs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from flowservice.errors import AuthenticationError, SecurityConfigError
from flowservice.security.config import read_file

__all__ = [
    "CLOCK_SKEW_SECONDS",
    "INVALID_TOKEN",
    "TOKEN_EXPIRED",
    "TOKEN_NOT_YET_VALID",
    "JwtVerifier",
    "StaticTokens",
]

CLOCK_SKEW_SECONDS = 30
"""Leeway on `exp` and `nbf`, for clocks that disagree a little."""

INVALID_TOKEN = "INVALID_TOKEN"
TOKEN_EXPIRED = "TOKEN_EXPIRED"
TOKEN_NOT_YET_VALID = "TOKEN_NOT_YET_VALID"

_PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")
_MIN_RSA_BITS = 2048


def _algorithm_for(key: object, where: str) -> str:
    """The one JWT algorithm `key` may verify; a SecurityConfigError for any other key."""
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < _MIN_RSA_BITS:
            raise SecurityConfigError(f"{where}: RSA keys must have at least {_MIN_RSA_BITS} bits")
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return "ES256"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "EdDSA"
    raise SecurityConfigError(
        f"{where}: only RSA, EC P-256 and Ed25519 public keys are accepted (RS256, ES256, EdDSA)"
    )


def _pem_public_key(path: str) -> _PublicKey:
    data = read_file(path, "JWT public key")
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            key: object = x509.load_pem_x509_certificate(data).public_key()
        else:
            key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise SecurityConfigError(
            f"{path} is not a PEM public key or certificate (a private key is refused)"
        ) from exc
    _algorithm_for(key, path)
    return key  # type: ignore[return-value]


def _jwks_keys(path: str) -> dict[str, _PublicKey]:
    """The JWKS file's keys by `kid` ("" for a key without one)."""
    try:
        document = json.loads(read_file(path, "JWKS file"))
        entries = document["keys"]
        if not isinstance(entries, list):
            raise TypeError
    except (ValueError, KeyError, TypeError) as exc:
        raise SecurityConfigError(f'{path} is not a JWKS document ({{"keys": [...]}})') from exc
    keys: dict[str, _PublicKey] = {}
    for index, entry in enumerate(entries):
        where = f"{path} key {index}"
        if not isinstance(entry, dict) or "d" in entry or entry.get("kty") == "oct":
            raise SecurityConfigError(f"{where}: only public keys belong in a JWKS file")
        try:
            key = jwt.PyJWK.from_dict(entry).key
        except jwt.PyJWTError as exc:
            raise SecurityConfigError(f"{where}: not a usable public key") from exc
        algorithm = _algorithm_for(key, where)
        if entry.get("alg", algorithm) != algorithm:
            raise SecurityConfigError(f"{where}: alg must be {algorithm} for this key")
        kid = str(entry.get("kid", ""))
        if kid in keys:
            raise SecurityConfigError(f"{where}: kid {kid!r} appears twice")
        keys[kid] = key
    if not keys:
        raise SecurityConfigError(f"{path} holds no keys")
    return keys


class JwtVerifier:
    """Verifies bearer JWTs against a PEM public key and/or the keys of a JWKS file."""

    def __init__(
        self,
        keys: Mapping[str, _PublicKey],
        fallback: _PublicKey | None = None,
        *,
        issuer: str = "",
        audience: str = "",
    ) -> None:
        # The algorithm of each key is fixed here, once: see the module docstring.
        self._keys = {kid: (key, _algorithm_for(key, kid)) for kid, key in keys.items()}
        self._fallback = (fallback, _algorithm_for(fallback, "key")) if fallback else None
        self._issuer = issuer or None
        self._audience = audience or None

    @classmethod
    def from_files(
        cls, public_key: str = "", jwks: str = "", *, issuer: str = "", audience: str = ""
    ) -> JwtVerifier:
        """A verifier for the PEM key file and/or JWKS file named (paths; "" for none)."""
        return cls(
            _jwks_keys(jwks) if jwks else {},
            _pem_public_key(public_key) if public_key else None,
            issuer=issuer,
            audience=audience,
        )

    def verify(self, token: str) -> str:
        """The identity (`jwt:<sub>`) of a valid token; AuthenticationError otherwise."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthenticationError(INVALID_TOKEN, "the bearer token is malformed") from None
        key, algorithm = self._key_for(header)
        if header.get("alg") != algorithm:
            raise AuthenticationError(
                INVALID_TOKEN, f"the bearer token must be signed with {algorithm}"
            )
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                issuer=self._issuer,
                audience=self._audience,
                leeway=CLOCK_SKEW_SECONDS,
                options={"require": ["exp", "sub"], "verify_aud": self._audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise AuthenticationError(TOKEN_EXPIRED, "the bearer token has expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthenticationError(
                TOKEN_NOT_YET_VALID, "the bearer token is not valid yet (nbf)"
            ) from None
        except jwt.PyJWTError:
            raise AuthenticationError(
                INVALID_TOKEN, _claims_problem(self._issuer, self._audience)
            ) from None
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise AuthenticationError(INVALID_TOKEN, "the bearer token's sub must be a string")
        return f"jwt:{subject}"

    def _key_for(self, header: dict[str, Any]) -> tuple[_PublicKey, str]:
        kid = header.get("kid")
        if isinstance(kid, str) and kid in self._keys:
            return self._keys[kid]
        if kid is None and self._fallback is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        if self._fallback is not None:
            return self._fallback
        raise AuthenticationError(INVALID_TOKEN, "the bearer token's kid names no known key")


def _claims_problem(issuer: str | None, audience: str | None) -> str:
    checks = ["signature", "exp", "sub"]
    if issuer:
        checks.append("iss")
    if audience:
        checks.append("aud")
    return f"the bearer token is not valid (checked: {', '.join(checks)})"


class StaticTokens:
    """Bearer tokens known by their SHA-256, each with a name."""

    def __init__(self, digests: Mapping[str, bytes]) -> None:
        self._entries = tuple(digests.items())

    @classmethod
    def from_file(cls, path: str) -> StaticTokens:
        """Reads `name:sha256hex` lines; blank lines and `#` comments are skipped."""
        digests: dict[str, bytes] = {}
        text = read_file(path, "static tokens file").decode("utf-8", errors="replace")
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            name, _, digest = line.rpartition(":")
            digest = digest.strip().lower()
            name = name.strip()
            if not name or not _HEX_DIGEST.fullmatch(digest):
                raise SecurityConfigError(
                    f"{path} line {number}: expected name:sha256hex (64 hex digits)"
                )
            if name in digests:
                raise SecurityConfigError(f"{path} line {number}: name {name!r} appears twice")
            digests[name] = bytes.fromhex(digest)
        if not digests:
            raise SecurityConfigError(f"{path} holds no tokens")
        return cls(digests)

    def identify(self, token: str) -> str | None:
        """`token:<name>` for a known token, None otherwise; constant time in the token."""
        digest = hashlib.sha256(token.encode("utf-8", errors="surrogateescape")).digest()
        found = None
        for name, known in self._entries:  # no early exit: every entry is compared
            if hmac.compare_digest(digest, known):
                found = name
        return f"token:{found}" if found is not None else None
