"""The failed sign-in limit (web/throttle.py) as tables: the sliding window, the keys, the client address."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.web.throttle import LoginThrottle, client_address, keys

T0 = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
WINDOW = timedelta(minutes=3)


@pytest.mark.parametrize(
    ("failures_at", "asked_at", "retry_after"),
    [
        ([], 0, 0),
        ([0] * 9, 1, 0),  # under the limit
        ([0] * 10, 1, 179),  # at the limit: until the oldest failure is 3 minutes old
        ([0] * 10, 179, 1),
        ([0] * 10, 180, 0),  # the window slid past every failure
        ([0] * 5 + [100] * 5, 150, 30),  # blocked until the first five age out at 180
        ([0] * 5 + [100] * 5, 180, 0),
        ([0] * 20, 10, 170),  # more failures do not extend the block beyond the newest `limit`
        ([0] * 10 + [60] * 10, 100, 140),
    ],
)
def test_sliding_window(failures_at: list[int], asked_at: int, retry_after: int) -> None:
    throttle = LoginThrottle(limit=10, window=WINDOW)
    attempt = keys("192.0.2.1", "alice")
    for second in failures_at:
        throttle.failed(attempt, T0 + timedelta(seconds=second))
    assert throttle.retry_after(attempt, T0 + timedelta(seconds=asked_at)) == retry_after


def test_address_and_username_count_separately() -> None:
    throttle = LoginThrottle(limit=3, window=WINDOW)
    for i in range(3):
        throttle.failed(keys(f"192.0.2.{i}", "alice"), T0)
    assert throttle.retry_after(keys("198.51.100.1", "ALICE "), T0) > 0  # usernames are case-insensitive
    assert throttle.retry_after(keys("192.0.2.0", "bob"), T0) == 0  # one failure on that address only
    throttle.succeeded(keys("198.51.100.1", "alice")[1])
    assert throttle.retry_after(keys("198.51.100.1", "alice"), T0) == 0


def test_memory_is_bounded() -> None:
    throttle = LoginThrottle(limit=2, window=WINDOW, max_keys=100)
    for i in range(1000):
        throttle.failed(keys(f"10.0.{i // 256}.{i % 256}", f"user{i}"), T0)
    assert len(throttle._failures) == 100
    # The newest keys are kept: a spray of new names cannot evict a fresh attacker's count.
    assert throttle.retry_after(keys("10.0.3.231", "user999"), T0) == 0  # one failure each: under limit 2
    throttle.failed(keys("10.0.3.231", "user999"), T0)
    assert throttle.retry_after(keys("10.0.3.231", "user999"), T0) > 0


TRUSTED = ("10.0.0.1", "10.0.0.2")


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
        (None, None, "unknown"),
    ],
)
def test_client_address(remote: str | None, forwarded_for: str | None, expected: str) -> None:
    assert client_address(remote, forwarded_for, TRUSTED) == expected
