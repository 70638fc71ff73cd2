"""The client address (clients.py) as tables: trusted proxies as addresses and CIDR ranges, X-Forwarded-For read
from the right, one spelling per address."""

from __future__ import annotations

import pytest

from gateway.clients import AddressSet, client_address, normal
from gateway.errors import ConfigError

TRUSTED = AddressSet(["10.0.0.1", "10.0.0.2", "172.16.0.0/12", "fd00::/8"])


@pytest.mark.parametrize(
    ("remote", "forwarded_for", "expected"),
    [
        ("192.0.2.9", None, "192.0.2.9"),
        ("192.0.2.9", "203.0.113.5", "192.0.2.9"),  # an untrusted peer cannot choose its address
        ("10.0.0.1", "203.0.113.5", "203.0.113.5"),
        ("10.0.0.1", "198.51.100.7, 203.0.113.5", "203.0.113.5"),  # the client may prepend anything
        ("10.0.0.1", "203.0.113.5, 10.0.0.2", "203.0.113.5"),  # two trusted proxies in a row
        ("10.0.0.1", "garbage, 203.0.113.5", "203.0.113.5"),
        ("10.0.0.1", "203.0.113.5, garbage", "10.0.0.1"),  # a broken hop next to us: stay with the peer
        ("10.0.0.1", None, "10.0.0.1"),
        ("10.0.0.1", "2001:db8::1", "2001:db8::1"),
        ("10.0.0.1", "2001:DB8:0::1", "2001:db8::1"),  # one spelling per address
        (None, None, "unknown"),
        # CIDR ranges (GitLab's trusted_proxies takes them): a load balancer pool
        ("172.20.3.4", "203.0.113.5", "203.0.113.5"),
        ("172.32.0.1", "203.0.113.5", "172.32.0.1"),  # just outside 172.16.0.0/12
        ("172.20.3.4", "203.0.113.5, 172.31.255.254", "203.0.113.5"),
        ("fd12::1", "203.0.113.5", "203.0.113.5"),
        ("::ffff:10.0.0.1", "203.0.113.5", "203.0.113.5"),  # IPv4-mapped peer of a dual-stack socket
        ("::ffff:192.0.2.9", None, "192.0.2.9"),
    ],
)
def test_client_address(remote: str | None, forwarded_for: str | None, expected: str) -> None:
    assert client_address(remote, forwarded_for, TRUSTED) == expected


def test_a_plain_list_of_proxies_is_accepted() -> None:
    assert client_address("10.0.0.0", "203.0.113.5", ["10.0.0.0/31"]) == "203.0.113.5"


@pytest.mark.parametrize(
    ("address", "member"),
    [
        ("10.0.0.1", True),
        ("10.0.0.3", False),
        ("172.16.0.0", True),
        ("172.31.255.255", True),
        ("fd00::5", True),
        ("fe80::1", False),
        ("unknown", False),
        ("", False),
    ],
)
def test_address_set(address: str, member: bool) -> None:
    assert (address in TRUSTED) is member


@pytest.mark.parametrize("entry", ["10.0.0.300", "example.com", "10.0.0.0/33", ""])
def test_bad_entries_name_the_key(entry: str) -> None:
    with pytest.raises(ConfigError, match=r"bruteforce\.allowlist"):
        AddressSet([entry], key="bruteforce.allowlist")


@pytest.mark.parametrize(
    ("address", "expected"),
    [("192.0.2.1", "192.0.2.1"), ("2001:0db8::0001", "2001:db8::1"), ("::ffff:192.0.2.1", "192.0.2.1"), ("x:y", "x:y")],
)
def test_normal(address: str, expected: str) -> None:
    assert normal(address) == expected
