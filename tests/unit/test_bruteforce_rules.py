"""The pure parts of the failed authentication ban (bruteforce.py): what is counted, and the refusal's wording."""

from __future__ import annotations

import pytest

from gateway.bruteforce import MESSAGE, Banned, ban_key


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),  # one host's usual allocation: its 2^64 addresses are one client
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("::1", "::/64"),
        ("unknown", "unknown"),
    ],
)
def test_ban_key(address: str, key: str) -> None:
    assert ban_key(address) == key


@pytest.mark.parametrize(
    ("retry_after", "wording"),
    [(1, "1 minute."), (60, "1 minute."), (61, "2 minutes."), (3600, "60 minutes.")],
)
def test_banned_says_why_and_how_long(retry_after: int, wording: str) -> None:
    banned = Banned(403, retry_after)
    assert (banned.status, banned.retry_after) == (403, retry_after)
    assert banned.message == f"{MESSAGE}. Try again in {wording}"
