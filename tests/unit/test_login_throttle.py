"""The failed sign-in limit per username (login_throttle.py) as tables: the sliding window, the key, the bound."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.login_throttle import LoginThrottle

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
    for second in failures_at:
        throttle.failed("alice", T0 + timedelta(seconds=second))
    assert throttle.retry_after("alice", T0 + timedelta(seconds=asked_at)) == retry_after


def test_usernames_count_separately_and_case_insensitively() -> None:
    throttle = LoginThrottle(limit=3, window=WINDOW)
    for _ in range(3):
        throttle.failed("alice", T0)
    assert throttle.retry_after(" ALICE ", T0) > 0  # usernames are case-insensitive, like sign-in
    assert throttle.retry_after("bob", T0) == 0
    throttle.succeeded("Alice")
    assert throttle.retry_after("alice", T0) == 0


def test_memory_is_bounded() -> None:
    throttle = LoginThrottle(limit=2, window=WINDOW, max_keys=100)
    for i in range(1000):
        throttle.failed(f"user{i}", T0)
    assert len(throttle._failures) == 100
    # The newest keys are kept: a spray of new names cannot evict a fresh attacker's count.
    assert throttle.retry_after("user999", T0) == 0  # one failure each: under limit 2
    throttle.failed("user999", T0)
    assert throttle.retry_after("user999", T0) > 0
