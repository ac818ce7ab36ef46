"""Who may call what: an allow-list of rules read from a YAML or JSON file.

    rules:
      - identities: ["mtls:spiffe://example.org/ns/prod/sa/scheduler", "jwt:*"]
        methods: ["flowmanager.v1.FlowService/*"]
      - identities: ["token:dashboard"]
        methods: ["flowmanager.v1.FlowService/Validate"]

An identity is `jwt:<sub>` (a verified JWT's subject), `token:<name>` (a
static token's name) or `mtls:<SAN>` (the client certificate's URI SAN, such
as a SPIFFE id, else its first DNS SAN); `*` in a pattern matches any run of
characters, and a lone `*` matches every authenticated caller. A method is a
full gRPC method name, `package.Service/Method`, or `package.Service/*`.
A call is allowed when one rule names both its identity and its method;
nothing else is. Patterns that cannot match (an unknown prefix, a method the
server does not serve) stop the server at start-up: a typo there would
otherwise deny or allow silently.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import yaml

from flowservice.errors import SecurityConfigError
from flowservice.security.config import read_file

__all__ = ["IDENTITY_KINDS", "Policy"]

IDENTITY_KINDS = ("jwt:", "mtls:", "token:")
"""The prefixes an identity starts with, by where it was proven."""


def _glob(pattern: str) -> re.Pattern[str]:
    """`pattern` with `*` matching any run of characters, everything else literal."""
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")))


class Policy:
    """The methods each identity may call, compiled once for the server's methods."""

    def __init__(
        self, rules: Sequence[tuple[Sequence[str], Sequence[str]]], methods: Iterable[str]
    ) -> None:
        """`rules` are (identity patterns, method patterns); `methods` every full method name
        the server serves (`/package.Service/Method`)."""
        known = sorted({method.lstrip("/") for method in methods})
        # Per method: the identity patterns that may call it.
        allowed: dict[str, list[str]] = {method: [] for method in known}
        for index, (identities, method_patterns) in enumerate(rules):
            for identity in identities:
                if identity != "*" and not identity.startswith(IDENTITY_KINDS):
                    raise SecurityConfigError(
                        f"rules[{index}]: identity {identity!r} must be * or start with "
                        f"{', '.join(IDENTITY_KINDS)}"
                    )
            for method_pattern in method_patterns:
                matcher = _glob(method_pattern.lstrip("/"))
                matched = [method for method in known if matcher.fullmatch(method)]
                if not matched:
                    raise SecurityConfigError(
                        f"rules[{index}]: method {method_pattern!r} matches no method this "
                        f"server serves ({', '.join(known)})"
                    )
                for method in matched:
                    allowed[method].extend(identities)
        self._allowed = {
            method: re.compile("|".join(f"(?:{_glob(p).pattern})" for p in patterns))
            for method, patterns in allowed.items()
            if patterns
        }

    @classmethod
    def from_file(cls, path: str, methods: Iterable[str]) -> Policy:
        """The policy in `path` (JSON when it ends in .json, YAML otherwise)."""
        text = read_file(path, "authorization policy").decode("utf-8", errors="replace")
        try:
            document = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as exc:
            raise SecurityConfigError(f"{path} is not valid JSON or YAML") from exc
        try:
            return cls(_rules(document), methods)
        except SecurityConfigError as exc:
            raise SecurityConfigError(f"{path}: {exc}") from None

    def allows(self, identity: str, method: str) -> bool:
        """Whether `identity` may call `method` (`/package.Service/Method`)."""
        matcher = self._allowed.get(method.lstrip("/"))
        return matcher is not None and matcher.fullmatch(identity) is not None


def _rules(document: Any) -> list[tuple[list[str], list[str]]]:
    if not isinstance(document, Mapping) or set(document) != {"rules"}:
        raise SecurityConfigError("the policy must be a mapping with one key, rules")
    if not isinstance(document["rules"], list):
        raise SecurityConfigError("rules must be a list")
    rules = []
    for index, rule in enumerate(document["rules"]):
        if not isinstance(rule, Mapping) or set(rule) != {"identities", "methods"}:
            raise SecurityConfigError(f"rules[{index}] must have identities and methods, only")
        lists = [rule["identities"], rule["methods"]]
        if not all(
            isinstance(items, list) and items and all(isinstance(i, str) and i for i in items)
            for items in lists
        ):
            raise SecurityConfigError(
                f"rules[{index}]: identities and methods must be non-empty lists of strings"
            )
        rules.append((lists[0], lists[1]))
    return rules
