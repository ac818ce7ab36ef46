"""The outbound allow-list: what each kind of entry allows, and what start-up refuses."""

from __future__ import annotations

import pytest

from flowservice.outbound import OutboundPolicy
from flowservice.outbound.targets import is_metadata_address
from flowservice.settings import Settings


def test_nothing_is_allowed_by_default() -> None:
    policy = OutboundPolicy()

    assert not policy
    assert not policy.address_allowed("127.0.0.1:80")
    assert not policy.url_allowed("http://127.0.0.1/")


def test_host_port_host_star_and_names() -> None:
    policy = OutboundPolicy.parse(["svc:50051", "any.internal:*"], ["billing=billing:443"])

    assert policy.address_allowed("svc:50051")
    assert not policy.address_allowed("svc:50052")
    assert policy.address_allowed("ANY.internal:9")
    assert policy.address_allowed("billing")
    assert not policy.address_allowed("other:50051")


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://api.example.com/v1", True),
        ("https://api.example.com/v1/orders?id=1", True),
        ("https://api.example.com/v10", False),
        ("https://api.example.com.evil.net/v1", False),
        ("https://api.example.com@evil.net/v1", False),
        ("http://api.example.com/v1", False),
    ],
)
def test_a_url_prefix_allows_urls_under_it_only(url: str, allowed: bool) -> None:
    policy = OutboundPolicy.parse(["https://api.example.com/v1"])

    assert policy.url_allowed(url) is allowed


@pytest.mark.parametrize(
    "address", ["169.254.169.254", "fd00:ec2::254", "::ffff:169.254.169.254", "fe80::1"]
)
def test_link_local_and_metadata_addresses(address: str) -> None:
    assert is_metadata_address(address)


def test_the_variable_is_a_comma_separated_list_added_to_the_flags() -> None:
    settings = Settings.from_args(
        ["--allow-target", "c:3"], {"FLOWMANAGER_ALLOW_TARGETS": "a:1, b:*"}
    )

    assert settings.allow_targets == ("a:1", "b:*", "c:3")


def test_a_bad_entry_stops_the_server_at_start() -> None:
    with pytest.raises(SystemExit):
        Settings.from_args(["--target", "no-equals-sign"], {})


def test_a_named_url_target_allows_the_urls_under_it() -> None:
    policy = OutboundPolicy.parse([], ["api=https://api.example.com/v2/"])

    assert policy.url_allowed("https://api.example.com/v2/orders")
    assert not policy.url_allowed("https://api.example.com/v1/orders")


def test_a_rule_is_not_an_address() -> None:
    policy = OutboundPolicy.parse(["svc:*"])

    assert not policy.address_allowed("svc:*")
    with pytest.raises(ValueError):
        OutboundPolicy.parse([], ["x=svc:*"])
